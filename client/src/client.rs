//! The thin typed client: one gRPC call per method, each with a deadline.
//!
//! Everything else in the crate (the in-process mirror, the coherent cache) is built on these
//! calls; apps that want every answer straight from the sidecar use [`Client`] directly.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coherence_proto::v1 as pb;
use coherence_proto::v1::cache_versions_client::CacheVersionsClient;
use futures::Stream;

use crate::call::{poll_events, Target};
use crate::error::Error;
use crate::jobs::Jobs;
use crate::notifications::Notifications;
use crate::observer::Observer;
use crate::servers::Servers;
use crate::transport::{transport, unix_path, AuthToken, Transport};
use tonic::transport::{Channel, Endpoint};

/// An opaque version token. Compare for equality only (versions have no order: a newer one
/// is not "greater"); hand it back to the sidecar unchanged.
///
/// ```
/// use coherence_client::Version;
/// let stamp = Version::from_token("3.17.9f2c");
/// // Store the token next to the cached value, rebuild it later:
/// assert_eq!(Version::from_token(stamp.token()), stamp);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(pub(crate) String);

impl Version {
    /// Wraps a token received earlier (e.g. stored next to a cached value).
    pub fn from_token(token: impl Into<String>) -> Version {
        Version(token.into())
    }

    /// The token, for storing next to a cached value.
    pub fn token(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where in its shard's history a version is known to be its key's current one, as the
/// sidecar reports with every version it answers or announces. Within one epoch a higher
/// sequence is newer knowledge; positions of different epochs are not ordered (an epoch
/// change always comes with a `Resync`). A mirror orders what it learns about a key by it
/// (docs/client-protocol.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The shard's epoch.
    pub epoch: String,
    /// The shard sequence the version is known current as of.
    pub sequence: u64,
}

impl Position {
    /// The position of a version on the wire; `None` from sidecars that do not send one.
    pub(crate) fn of(version: &pb::Version) -> Option<Position> {
        (!version.epoch.is_empty()).then(|| Position {
            epoch: version.epoch.clone(),
            sequence: version.as_of_sequence,
        })
    }
}

/// How fresh a check must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Reflects every bump completed more than the sidecar's `max_staleness` ago (fast).
    #[default]
    Bounded,
    /// Reflects every bump completed before the call began (one Redis round trip, shared).
    Strong,
}

impl Consistency {
    fn to_proto(self) -> i32 {
        match self {
            Consistency::Bounded => pb::Consistency::Unspecified as i32,
            Consistency::Strong => pb::Consistency::Strong as i32,
        }
    }
}

/// Where the sidecar's answer to a check came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckSource {
    /// The sidecar's in-memory mirror, proven fresh by its heartbeat fence.
    Mirror,
    /// A read of Redis made for this check.
    Redis,
    /// Nothing could vouch for the version in time: answered `current = false`.
    FailClosed,
    /// A source this client does not know (a newer sidecar).
    Unknown,
}

/// The answer for one checked entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// Whether the checked version is current. `false` also when the sidecar could not vouch
    /// for it (fail closed): then read the source of truth and do not cache.
    pub current: bool,
    /// The current version, when the sidecar knows it.
    pub version: Option<Version>,
    /// Where the answer came from.
    pub source: CheckSource,
    /// The key has no version at all (never issued, or expired after the sidecar's
    /// `version_ttl`): no token is current; [`Client::get`] issues one.
    pub no_version: bool,
    /// Where `version` is known current (see [`Position`]).
    pub as_of: Option<Position>,
}

/// One event of a [`Client::watch`] stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// `key` moved to `version`.
    Invalidated {
        /// The key that was bumped.
        key: String,
        /// Its new version.
        version: Version,
        /// The per-shard sequence number assigned atomically with the bump.
        sequence: u64,
        /// The shard's epoch (sequences are ordered within one epoch only; empty from
        /// sidecars that do not send it).
        epoch: String,
        /// The key's logical shard.
        shard: u32,
        /// Wall-clock time of the bump on the Redis server (for display; never compare clocks).
        bumped_at_unix_ms: u64,
    },
    /// Invalidations may have been lost: drop everything cached under the watched prefixes.
    Resync {
        /// Why (gap in sequences, reconnect, changed epoch, a watcher that fell behind).
        reason: String,
    },
    /// The stream is alive; the sidecar's mirror was fresh as of `fence_age` ago (`None` when
    /// the sidecar cannot currently vouch for its mirror).
    Heartbeat {
        /// Age of the sidecar's oldest fence when the heartbeat was read from the stream: its
        /// age when sent plus the time since the sidecar sent it (by the wall clock, which a
        /// sidecar on the same host shares; a send time ahead of this clock counts as zero).
        fence_age: Option<Duration>,
        /// The sidecar's own staleness bound (`None` from sidecars that do not send it): a
        /// mirror trusts itself no longer than the smaller of this and its own bound.
        max_staleness: Option<Duration>,
    },
}

/// A connection to one sidecar. Cheap to clone; clones share the channel.
#[derive(Debug, Clone)]
pub struct Client {
    grpc: CacheVersionsClient<Transport>,
    channel: Channel,
    auth: AuthToken,
    target: Target,
}

/// Default per-call deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

impl Client {
    /// Connects to a sidecar at `addr` (`http://127.0.0.1:50051`, `127.0.0.1:50051`, or a Unix
    /// socket: `unix:///run/coherence/grpc.sock`).
    ///
    /// A malformed address is [`Error::InvalidAddress`]; a sidecar that does not answer is
    /// [`Error::Connect`], whose [`source`](std::error::Error::source) says why.
    pub async fn connect(addr: impl AsRef<str>) -> Result<Client, Error> {
        let addr = addr.as_ref();
        if let Some(path) = unix_path(addr) {
            let channel = crate::transport::connect_unix(path).await?;
            return Ok(Client::from_channel(channel).named(addr));
        }
        let channel = endpoint(addr)?
            .connect()
            .await
            .map_err(|e| Error::Connect {
                address: addr.to_string(),
                source: std::sync::Arc::new(e),
            })?;
        Ok(Client::from_channel(channel).named(addr))
    }

    /// A client that connects on first use (and reconnects after the sidecar restarts).
    pub fn connect_lazy(addr: impl AsRef<str>) -> Result<Client, Error> {
        let addr = addr.as_ref();
        if let Some(path) = unix_path(addr) {
            let channel = crate::transport::connect_unix_lazy(path)?;
            return Ok(Client::from_channel(channel).named(addr));
        }
        Ok(Client::from_channel(endpoint(addr)?.connect_lazy()).named(addr))
    }

    /// Wraps an existing tonic channel (errors name the sidecar "the given channel"; see
    /// [`Client::named`]).
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            grpc: CacheVersionsClient::new(transport(channel.clone(), AuthToken::default())),
            channel,
            auth: AuthToken::default(),
            target: Target::new("the given channel", DEFAULT_TIMEOUT),
        }
    }

    /// Sends `token` with every call (of this client and the jobs, servers and notifications
    /// handles made from it): for a sidecar that requires one (its `auth_token_file`).
    pub fn with_auth_token(mut self, token: AuthToken) -> Client {
        self.grpc = CacheVersionsClient::new(transport(self.channel.clone(), token.clone()));
        self.auth = token;
        self
    }

    fn transport(&self) -> Transport {
        transport(self.channel.clone(), self.auth.clone())
    }

    /// Names the sidecar in errors (the address given to [`Client::connect`] by default).
    pub fn named(mut self, address: impl AsRef<str>) -> Client {
        self.target = Target::new(address.as_ref(), self.target.timeout());
        self
    }

    /// Sets the per-call deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.target = self.target.with_timeout(timeout);
        self
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.target.timeout()
    }

    /// The sidecar's address, as errors name it.
    pub fn address(&self) -> &str {
        self.target.address()
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.target.request(message)
    }

    async fn call<T, F>(&self, fut: F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.target.call(fut).await
    }

    /// Distributed jobs on the same sidecar: leases with fencing tokens, recurring runs.
    pub fn jobs(&self) -> Jobs {
        Jobs::new(self.transport(), self.target.clone())
    }

    /// This server's role and the live servers, from the same sidecar.
    pub fn servers(&self) -> Servers {
        Servers::new(self.transport(), self.target.clone())
    }

    /// The consistency observer of the same sidecar: submit sampled mirror answers, read its
    /// SLO counts.
    pub fn observer(&self) -> Observer {
        Observer::new(self.transport(), self.target.clone())
    }

    /// The notifications backplane of the same sidecar: publish to every server, subscribe.
    pub fn notifications(&self) -> Notifications {
        Notifications::new(self.transport(), self.target.clone())
    }

    /// Current versions of `keys`, in order. A key never bumped still has one.
    ///
    /// ```no_run
    /// # async fn demo(client: coherence_client::Client) -> Result<(), coherence_client::Error> {
    /// let versions = client.get(&["content", "media"]).await?;
    /// assert_eq!(versions.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, keys: &[&str]) -> Result<Vec<Version>, Error> {
        self.get_with(keys, Consistency::Bounded).await
    }

    /// [`Client::get`] with an explicit consistency.
    pub async fn get_with(
        &self,
        keys: &[&str],
        consistency: Consistency,
    ) -> Result<Vec<Version>, Error> {
        Ok(without_positions(
            self.get_positioned(keys, consistency).await?,
        ))
    }

    /// [`Client::get_with`], each version with the position it is known current as of.
    pub async fn get_positioned(
        &self,
        keys: &[&str],
        consistency: Consistency,
    ) -> Result<Vec<(Version, Option<Position>)>, Error> {
        let mut grpc = self.grpc.clone();
        let request = self.request(pb::GetRequest {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            consistency: consistency.to_proto(),
        });
        let response = self.call(grpc.get(request)).await?;
        if response.versions.len() != keys.len() {
            return Err(Error::Malformed(
                "Get answered a different number of versions",
            ));
        }
        Ok(with_positions(response.versions))
    }

    /// The current version of one key.
    pub async fn get_one(&self, key: &str) -> Result<Version, Error> {
        self.get(&[key])
            .await?
            .pop()
            .ok_or(Error::Malformed("Get answered no version"))
    }

    /// Whether each `(key, version)` is current, in order.
    ///
    /// ```no_run
    /// # async fn demo(client: coherence_client::Client, stamp: coherence_client::Version) -> Result<(), coherence_client::Error> {
    /// use coherence_client::Consistency;
    /// let results = client.check(&[("content", &stamp)], Consistency::Strong).await?;
    /// if !results[0].current { /* reload */ }
    /// # Ok(()) }
    /// ```
    pub async fn check(
        &self,
        entries: &[(&str, &Version)],
        consistency: Consistency,
    ) -> Result<Vec<CheckResult>, Error> {
        let mut grpc = self.grpc.clone();
        let request = self.request(pb::CheckRequest {
            entries: entries
                .iter()
                .map(|(key, version)| pb::KeyVersion {
                    key: key.to_string(),
                    version: Some(pb::Version {
                        token: version.0.clone(),
                        ..Default::default()
                    }),
                })
                .collect(),
            consistency: consistency.to_proto(),
        });
        let response = self.call(grpc.check(request)).await?;
        if response.results.len() != entries.len() {
            return Err(Error::Malformed(
                "Check answered a different number of results",
            ));
        }
        Ok(response
            .results
            .into_iter()
            .map(|r| CheckResult {
                current: r.current,
                as_of: r.version.as_ref().and_then(Position::of),
                version: r.version.map(|v| Version(v.token)),
                source: match pb::CheckSource::try_from(r.source) {
                    Ok(pb::CheckSource::Mirror) => CheckSource::Mirror,
                    Ok(pb::CheckSource::Redis) => CheckSource::Redis,
                    Ok(pb::CheckSource::FailClosed) => CheckSource::FailClosed,
                    _ => CheckSource::Unknown,
                },
                no_version: r.no_version,
            })
            .collect())
    }

    /// Whether one key's version is current.
    pub async fn is_current(
        &self,
        key: &str,
        version: &Version,
        consistency: Consistency,
    ) -> Result<bool, Error> {
        Ok(self
            .check(&[(key, version)], consistency)
            .await?
            .first()
            .is_some_and(|r| r.current))
    }

    /// Moves `keys` to new versions (call after your write committed); returns them in order.
    ///
    /// ```no_run
    /// # async fn demo(client: coherence_client::Client) -> Result<(), coherence_client::Error> {
    /// let new_versions = client.bump(&["content"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn bump(&self, keys: &[&str]) -> Result<Vec<Version>, Error> {
        Ok(without_positions(self.bump_positioned(keys).await?))
    }

    /// [`Client::bump`], each new version with the position it is known current as of.
    pub async fn bump_positioned(
        &self,
        keys: &[&str],
    ) -> Result<Vec<(Version, Option<Position>)>, Error> {
        let mut grpc = self.grpc.clone();
        let request = self.request(pb::BumpRequest {
            keys: keys.iter().map(|k| k.to_string()).collect(),
        });
        let response = self.call(grpc.bump(request)).await?;
        if response.versions.len() != keys.len() {
            return Err(Error::Malformed(
                "Bump answered a different number of versions",
            ));
        }
        Ok(with_positions(response.versions))
    }

    /// Streams invalidations of keys under `prefixes` (every key when empty).
    ///
    /// ```no_run
    /// # async fn demo(client: coherence_client::Client) -> Result<(), coherence_client::Error> {
    /// use futures::StreamExt;
    /// let mut events = client.watch(&["content"]).await?;
    /// while let Some(event) = events.next().await {
    ///     println!("{:?}", event?);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch(&self, prefixes: &[&str]) -> Result<WatchStream, Error> {
        self.watch_with_lease(prefixes, "").await
    }

    /// [`Client::watch`], opened with a `lease_id` so that the stream's mirror may hold read
    /// leases ([`Client::mirror_lease`]); every event then has a position
    /// ([`WatchStream::position`]). An empty `lease_id` is a plain [`Client::watch`].
    pub async fn watch_with_lease(
        &self,
        prefixes: &[&str],
        lease_id: &str,
    ) -> Result<WatchStream, Error> {
        let mut grpc = self.grpc.clone();
        // No gRPC deadline: the local one covers opening the stream, not its lifetime.
        let request = tonic::Request::new(pb::WatchRequest {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            lease_id: lease_id.to_string(),
        });
        let stream = self.call(grpc.watch(request)).await?;
        Ok(WatchStream {
            inner: stream,
            target: self.target.clone(),
            position: 0,
        })
    }

    /// Acknowledges that the mirror of the stream opened with `lease_id` applied every event up
    /// to `applied_position`, and with `renew` asks for a read lease (docs/client-protocol.md,
    /// rules 16–19). Read the monotonic clock before calling: a grant counts from then.
    pub async fn mirror_lease(
        &self,
        lease_id: &str,
        applied_position: u64,
        renew: bool,
    ) -> Result<MirrorLeaseAnswer, Error> {
        let mut grpc = self.grpc.clone();
        let request = self.request(pb::MirrorLeaseRequest {
            lease_id: lease_id.to_string(),
            applied_position,
            renew,
        });
        let response = self.call(grpc.mirror_lease(request)).await?;
        Ok(match response.granted_ms {
            0 => MirrorLeaseAnswer::Refused(response.refused),
            ms => MirrorLeaseAnswer::Granted {
                granted: Duration::from_millis(ms),
                min_position: response.min_position,
            },
        })
    }
}

/// What [`Client::mirror_lease`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorLeaseAnswer {
    /// A lease of `granted` from the instant the request was sent, usable once the mirror
    /// applied its stream up to `min_position`.
    Granted {
        /// How long the lease lasts (before taking off the clock-rate allowance).
        granted: Duration,
        /// The position the mirror must have applied before answering under it.
        min_position: u64,
    },
    /// Nothing granted (an acknowledgement only, or the sidecar's reason; empty when the call
    /// asked for no lease).
    Refused(String),
}

fn with_positions(versions: Vec<pb::Version>) -> Vec<(Version, Option<Position>)> {
    versions
        .into_iter()
        .map(|v| (Position::of(&v), Version(v.token)))
        .map(|(position, version)| (version, position))
        .collect()
}

fn without_positions(versions: Vec<(Version, Option<Position>)>) -> Vec<Version> {
    versions.into_iter().map(|(version, _)| version).collect()
}

/// The endpoint for a sidecar address (`host:port` or `http://host:port`); anything else is
/// [`Error::InvalidAddress`] saying why, before any connection is tried.
pub(crate) fn endpoint(addr: &str) -> Result<Endpoint, Error> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let parsed: tonic::codegen::http::Uri = uri.parse().map_err(|e| Error::InvalidAddress {
        address: addr.to_string(),
        source: std::sync::Arc::new(e),
    })?;
    let invalid = |why: &str| Error::invalid_address(addr, why);
    match parsed.scheme_str() {
        Some("http") => {}
        Some(scheme) => {
            return Err(invalid(&format!(
                "scheme {scheme:?} is not supported (use http://host:port)"
            )))
        }
        None => return Err(invalid("no scheme")),
    }
    let Some(authority) = parsed.authority() else {
        return Err(invalid("no host"));
    };
    if authority.host().is_empty() {
        return Err(invalid("no host"));
    }
    if authority.port_u16().is_none() {
        return Err(invalid("no port (the sidecar has no default port)"));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(invalid("a sidecar address has no path"));
    }
    Endpoint::from_shared(uri)
        // HTTP/2 pings: a connection that stops answering is replaced (rule 5 of docs/client-protocol.md).
        .map(|e| {
            e.connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2))
        })
        .map_err(|e| Error::InvalidAddress {
            address: addr.to_string(),
            source: std::sync::Arc::new(e),
        })
}

/// The events of one Watch stream. Ends when the sidecar ends it (e.g. on shutdown, with an
/// `Unavailable` error first).
pub struct WatchStream {
    inner: tonic::Streaming<pb::WatchEvent>,
    target: Target,
    /// The position of the last event yielded (0 on streams opened without a lease id).
    position: u64,
}

impl WatchStream {
    /// The position of the last event this stream yielded (streams opened with
    /// [`Client::watch_with_lease`]; 0 otherwise): acknowledge it once that event is applied.
    pub fn position(&self) -> u64 {
        self.position
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("sidecar", &self.target.address())
            .finish_non_exhaustive()
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use pb::watch_event::Event;
        let this = &mut *self;
        let position = &mut this.position;
        poll_events(&mut this.inner, cx, &this.target, |next| {
            *position = (*position).max(next.position);
            Some(match next.event? {
                Event::Invalidated(inv) => WatchEvent::Invalidated {
                    key: inv.key,
                    epoch: inv
                        .version
                        .as_ref()
                        .map(|v| v.epoch.clone())
                        .unwrap_or_default(),
                    version: Version(inv.version.map(|v| v.token).unwrap_or_default()),
                    sequence: inv.sequence,
                    shard: inv.shard,
                    bumped_at_unix_ms: inv.bumped_at_unix_ms,
                },
                Event::Resync(r) => WatchEvent::Resync { reason: r.reason },
                Event::Heartbeat(h) => WatchEvent::Heartbeat {
                    fence_age: fence_age_on_receipt(&h, SystemTime::now()),
                    max_staleness: Some(Duration::from_millis(h.max_staleness_ms))
                        .filter(|d| !d.is_zero()),
                },
            })
        })
    }
}

/// A heartbeat's fence age as of `now`: as sent, plus the time since it was sent.
fn fence_age_on_receipt(heartbeat: &pb::Heartbeat, now: SystemTime) -> Option<Duration> {
    if heartbeat.fence_age_ms == u64::MAX {
        return None;
    }
    let transit = match heartbeat.sent_at_unix_us {
        0 => Duration::ZERO,
        sent => now
            .duration_since(UNIX_EPOCH + Duration::from_micros(sent))
            .unwrap_or(Duration::ZERO),
    };
    Some(Duration::from_millis(heartbeat.fence_age_ms).saturating_add(transit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(fence_age_ms: u64, sent_at: SystemTime) -> pb::Heartbeat {
        pb::Heartbeat {
            fence_age_ms,
            sent_at_unix_us: sent_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            ..Default::default()
        }
    }

    /// A wall-clock instant with whole microseconds, as heartbeats carry.
    fn whole_micros() -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(1_800_000_000_000_000)
    }

    #[test]
    fn time_in_transit_counts_against_the_fence() {
        let now = whole_micros();
        let sent = now - Duration::from_millis(300);
        assert_eq!(
            fence_age_on_receipt(&heartbeat(200, sent), now),
            Some(Duration::from_millis(500)),
            "a heartbeat that waited 300 ms vouches for a fence 500 ms old"
        );
        assert_eq!(
            fence_age_on_receipt(&heartbeat(200, now), now),
            Some(Duration::from_millis(200))
        );
    }

    #[test]
    fn unknown_or_future_send_times_add_nothing_and_no_fence_stays_none() {
        let now = whole_micros();
        let unknown = pb::Heartbeat {
            fence_age_ms: 200,
            sent_at_unix_us: 0,
            ..Default::default()
        };
        assert_eq!(
            fence_age_on_receipt(&unknown, now),
            Some(Duration::from_millis(200))
        );
        let ahead = heartbeat(200, now + Duration::from_secs(5));
        assert_eq!(
            fence_age_on_receipt(&ahead, now),
            Some(Duration::from_millis(200))
        );
        assert_eq!(fence_age_on_receipt(&heartbeat(u64::MAX, now), now), None);
    }

    use coherence_testkit::fuzz;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(fuzz::config())]

        /// The client's one parser of text (the sidecar address; version tokens it compares as
        /// opaque strings): no panic, and an address accepted only with an http scheme, a
        /// host and a port.
        #[test]
        fn fuzz_sidecar_address(
            addr in prop_oneof![
                "\\PC{0,40}",
                "((http|https|unix|)://)?[a-z0-9.\\[\\]:@%-]{0,20}(:[0-9]{0,6})?(/[a-z?=]{0,4})?",
            ],
        ) {
            if endpoint(&addr).is_ok() {
                let uri = if addr.contains("://") { addr.clone() } else { format!("http://{addr}") };
                let parsed: tonic::codegen::http::Uri = uri.parse().unwrap();
                prop_assert_eq!(parsed.scheme_str(), Some("http"));
                prop_assert!(parsed.port_u16().is_some());
                prop_assert!(parsed.host().is_some_and(|h| !h.is_empty()));
            }
        }
    }
}
