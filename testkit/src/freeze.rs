//! A TCP proxy in front of any server (a sidecar's gRPC port) whose open connections can be
//! made to go *silent* without closing: the fault a client's idle timeout exists for.
//!
//! A stopped or killed server is loud or stops every connection at once, and
//! [`crate::RedisProxy`] applies its flows to every connection of a kind, future ones
//! included. A silent stream is quieter: one connection stays open and delivers nothing more,
//! while a new connection to the same server works. [`FreezingProxy::freeze`] does that to
//! every connection open at that moment (what the server sends on them is read and discarded,
//! so the server never blocks; what the client sends still reaches the server) and leaves
//! connections opened later alone. It can also refuse new connections and cut open ones.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FreezeStats {
    /// Connections accepted and connected upstream.
    pub connections: u64,
    /// Connections refused while not accepting.
    pub refused: u64,
    /// Connections frozen by [`FreezingProxy::freeze`].
    pub frozen: u64,
}

/// One open connection: whether it is frozen, and its task (for [`FreezingProxy::cut`]).
struct Open {
    frozen: Arc<AtomicBool>,
    task: AbortHandle,
}

#[derive(Default)]
struct Shared {
    open: Mutex<Vec<Open>>,
    refusing: AtomicBool,
    connections: AtomicU64,
    refused: AtomicU64,
    frozen: AtomicU64,
}

/// A running proxy on a free loopback port. Dropping it closes every connection.
pub struct FreezingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FreezingProxy {
    /// Starts a proxy to `upstream`, forwarding everything.
    pub async fn start(upstream: SocketAddr) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on a free port");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        FreezingProxy {
            addr,
            shared,
            accept,
        }
    }

    /// The proxy's `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes every connection open now silent for good: nothing the server sends on it reaches
    /// the client any more, and neither side sees it close. Later connections are not affected.
    pub fn freeze(&self) {
        for open in lock(&self.shared.open).iter() {
            if !open.frozen.swap(true, Ordering::SeqCst) {
                self.shared.frozen.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// While not accepting, new connections are closed at once (the server is unreachable).
    pub fn set_accepting(&self, accepting: bool) {
        self.shared.refusing.store(!accepting, Ordering::SeqCst);
    }

    /// Closes every open connection (both sides), as a network failure would.
    pub fn cut(&self) {
        for open in std::mem::take(&mut *lock(&self.shared.open)) {
            open.task.abort();
        }
    }

    pub fn stats(&self) -> FreezeStats {
        FreezeStats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            frozen: self.shared.frozen.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, most likely: let some close.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.refusing.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let frozen = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(forward(
            client,
            upstream,
            Arc::clone(&frozen),
            Arc::clone(&shared),
        ));
        let mut open = lock(&shared.open);
        open.retain(|o| !o.task.is_finished());
        open.push(Open {
            frozen,
            task: task.abort_handle(),
        });
    }
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    frozen: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.load(Ordering::SeqCst) {
                continue;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either side closing ends the connection — unless it is frozen, when the client must not
    // notice anything: then only a cut (or the client) ends it.
    tokio::select! {
        _ = up => {}
        _ = down => {
            if frozen.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        }
    }
}
