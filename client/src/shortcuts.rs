//! The rest of the kit, reachable from every layer: `jobs()`, `servers()` and
//! `notifications()` on [`MirroredClient`] and [`CoherentCache`] as on [`Client`].
//!
//! An app that holds a cache should not have to write `items.client().client().jobs()` (two
//! different `client()` methods) to reach the same sidecar's other services.

use crate::cache::CoherentCache;
use crate::jobs::Jobs;
use crate::mirror::MirroredClient;
use crate::notifications::Notifications;
use crate::servers::Servers;

impl MirroredClient {
    /// The same sidecar's jobs: leases with fencing tokens, recurring runs
    /// ([`Client::jobs`](crate::Client::jobs)).
    pub fn jobs(&self) -> Jobs {
        self.client().jobs()
    }

    /// The same sidecar's view of servers and roles
    /// ([`Client::servers`](crate::Client::servers)).
    pub fn servers(&self) -> Servers {
        self.client().servers()
    }

    /// The same sidecar's notifications backplane
    /// ([`Client::notifications`](crate::Client::notifications)).
    pub fn notifications(&self) -> Notifications {
        self.client().notifications()
    }
}

impl<K, V> CoherentCache<K, V> {
    /// The same sidecar's jobs: leases with fencing tokens, recurring runs
    /// ([`Client::jobs`](crate::Client::jobs)).
    ///
    /// ```no_run
    /// # async fn demo(items: coherence_client::CoherentCache<i64, String>) -> Result<(), coherence_client::Error> {
    /// let role = items.servers().role().await?;
    /// let jobs = items.jobs();
    /// items.notifications().publish("items-changed", b"42").await?;
    /// # Ok(()) }
    /// ```
    pub fn jobs(&self) -> Jobs {
        self.mirrored().jobs()
    }

    /// The same sidecar's view of servers and roles
    /// ([`Client::servers`](crate::Client::servers)).
    pub fn servers(&self) -> Servers {
        self.mirrored().servers()
    }

    /// The same sidecar's notifications backplane
    /// ([`Client::notifications`](crate::Client::notifications)).
    pub fn notifications(&self) -> Notifications {
        self.mirrored().notifications()
    }
}
