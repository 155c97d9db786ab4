//! The items example: a small web app that serves items from PostgreSQL through a
//! [`CoherentCache`], meant to run as several instances behind a load balancer, each with its
//! own coherence sidecar, all sharing one Redis. An edit through one instance bumps the
//! item's version; every other instance then stops serving its cached copy.
//!
//! See `examples/items-app/README.md` for how to run two instances locally.

pub mod db;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use coherence_client::{Client, CoherentCache, MirrorOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use db::{Db, Item, ItemInput};
pub use routes::{item_key, router, AppState};

/// How one instance is started.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// HTTP listen address (port 0 for any).
    pub listen: SocketAddr,
    /// This instance's sidecar, e.g. `http://127.0.0.1:50051`.
    pub sidecar: String,
    /// PostgreSQL connection string.
    pub database_url: String,
    /// Most items cached per instance.
    pub max_items: u64,
}

/// Why an instance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// PostgreSQL could not be reached or the schema not created.
    #[error("PostgreSQL at {url}: {detail}")]
    Database {
        /// The connection string.
        url: String,
        /// What went wrong, with the server's message.
        detail: String,
    },
    /// The sidecar address is not valid.
    #[error("sidecar: {0}")]
    Sidecar(#[from] coherence_client::Error),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running instance.
pub struct RunningApp {
    /// Where it serves HTTP.
    pub addr: SocketAddr,
    /// Its item cache (for inspection).
    pub items: CoherentCache<i64, Option<Item>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningApp {
    /// Starts serving. The sidecar is connected lazily: the app starts (and serves from
    /// PostgreSQL without caching) even while its sidecar is not up yet.
    pub async fn start(config: AppConfig) -> Result<RunningApp, StartError> {
        let db = Db::connect(&config.database_url)
            .await
            .map_err(|err| StartError::Database {
                url: config.database_url.clone(),
                detail: db::describe(&err),
            })?;
        let mirrored = Client::connect_lazy(&config.sidecar)?.with_mirror(MirrorOptions::default());
        let items = CoherentCache::builder(mirrored, item_key)
            .max_capacity(config.max_items)
            .build();
        let state = AppState {
            db: Arc::new(db),
            items: items.clone(),
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router(state))
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "HTTP server failed");
            }
        });
        tracing::info!(%addr, sidecar = %config.sidecar, "items app serving");
        Ok(RunningApp {
            addr,
            items,
            stop,
            task,
        })
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    /// Runs until the server task ends (e.g. on Ctrl-C via [`RunningApp::stop`]).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
