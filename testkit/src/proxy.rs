//! A TCP proxy between one Redis client (a sidecar) and Redis that injects *asymmetric* faults:
//! the replies and pushes of one kind of connection delayed, stalled or lost while everything
//! else keeps running.
//!
//! Killing or pausing Redis stops every client at once, and a killed connection is loud. The
//! faults a staleness bound exists for are quieter: invalidations that arrive late, or not at
//! all, on a subscription that looks healthy while bumps keep succeeding. [`RedisProxy`]
//! forwards bytes unchanged, classifies each connection by what its client sends (a connection
//! that sent `SUBSCRIBE`, `SSUBSCRIBE` or `PSUBSCRIBE` is a [`Link::Subscription`], any other a
//! [`Link::Command`]) and applies a [`Flow`] to the server→client bytes of each kind, whole RESP
//! values at a time. It can also drop invalidation pushes (pub/sub messages whose payload starts
//! with `i|`) silently, passing fences (`f|…`) and everything else, so the connection never
//! notices. Client→server bytes always pass at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::resp;

/// What happens to the server→client bytes of one kind of connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Forwarded at once.
    Pass,
    /// Each value is forwarded this long after it arrived from Redis, in order.
    Delay(Duration),
    /// Held, in order, until the flow changes again.
    Stall,
    /// Discarded.
    Blackhole,
}

/// The two kinds of connection a sidecar makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A connection that subscribed to channels (invalidations, fences, notifications).
    Subscription,
    /// Every other connection (scripts, reads, `PUBLISH`).
    Command,
}

#[derive(Debug, Clone, Copy)]
struct Control {
    subscription: Flow,
    command: Flow,
    drop_invalidations: bool,
    accepting: bool,
}

/// What the proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted and connected to Redis.
    pub connections: u64,
    /// Connections refused while not accepting.
    pub refused: u64,
    /// Connections that became subscriptions.
    pub subscriptions: u64,
    /// Invalidation pushes that arrived from Redis on subscriptions (dropped or not).
    pub invalidations_seen: u64,
    /// Invalidation pushes dropped.
    pub invalidations_dropped: u64,
    /// Fence pushes (`f|…`) forwarded on subscriptions.
    pub fences_passed: u64,
    /// Values discarded by [`Flow::Blackhole`].
    pub blackholed: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    subscriptions: AtomicU64,
    invalidations_seen: AtomicU64,
    invalidations_dropped: AtomicU64,
    fences_passed: AtomicU64,
    blackholed: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    control: watch::Sender<Control>,
    counters: Counters,
    /// The tasks of open connections, so that [`RedisProxy::cut`] and drop can end them.
    connections: Mutex<Vec<AbortHandle>>,
}

/// Values one connection may hold back (delayed or stalled) before it stops reading from Redis;
/// Redis then buffers, as it would for a slow client.
const HELD_VALUES: usize = 65_536;

/// A running proxy on a free loopback port. Dropping it closes every connection.
pub struct RedisProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl RedisProxy {
    /// Starts a proxy to the Redis on `127.0.0.1:<upstream_port>`, every flow [`Flow::Pass`].
    pub async fn start(upstream_port: u16) -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on a free port");
        let addr = listener.local_addr().expect("proxy address");
        let (control, _) = watch::channel(Control {
            subscription: Flow::Pass,
            command: Flow::Pass,
            drop_invalidations: false,
            accepting: true,
        });
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            control,
            counters: Counters::default(),
            connections: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        RedisProxy {
            addr,
            shared,
            accept,
        }
    }

    /// `redis://127.0.0.1:<proxy port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `flow` to the server→client bytes of every `link` connection, open or future.
    /// Values already held are re-judged at once (a stall released delivers them).
    pub fn set_flow(&self, link: Link, flow: Flow) {
        self.shared.control.send_modify(|c| match link {
            Link::Subscription => c.subscription = flow,
            Link::Command => c.command = flow,
        });
    }

    /// Drops (or stops dropping) the invalidation pushes that arrive on subscriptions from now
    /// on, without a disconnect. Pushes already held (delayed or stalled) keep their fate.
    pub fn drop_invalidations(&self, drop: bool) {
        self.shared
            .control
            .send_modify(|c| c.drop_invalidations = drop);
    }

    /// While not accepting, new connections are closed at once (Redis unreachable).
    pub fn set_accepting(&self, accepting: bool) {
        self.shared.control.send_modify(|c| c.accepting = accepting);
    }

    /// Closes every open connection (both sides), as a network failure would.
    pub fn cut(&self) {
        let handles = std::mem::take(&mut *lock(&self.shared.connections));
        for handle in handles {
            handle.abort();
        }
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            connections: c.connections.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            invalidations_seen: c.invalidations_seen.load(Ordering::Relaxed),
            invalidations_dropped: c.invalidations_dropped.load(Ordering::Relaxed),
            fences_passed: c.fences_passed.load(Ordering::Relaxed),
            blackholed: c.blackholed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors, most likely: let some close.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if !shared.control.borrow().accepting {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(client);
            continue;
        }
        let task = tokio::spawn(proxy_connection(client, Arc::clone(&shared)));
        let mut connections = lock(&shared.connections);
        connections.retain(|h| !h.is_finished());
        connections.push(task.abort_handle());
    }
}

/// One value from Redis, when it arrived, and whether it is an invalidation to drop (decided
/// on arrival, so that a test can choose exactly which pushes are lost).
struct Held {
    arrived: Instant,
    bytes: Vec<u8>,
    drop: bool,
}

async fn proxy_connection(client: TcpStream, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let subscribed = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(HELD_VALUES);
    let upstream = forward_commands(
        client_read,
        server_write,
        Arc::clone(&subscribed),
        Arc::clone(&shared),
    );
    let downstream = async {
        tokio::join!(
            read_replies(server_read, tx, &subscribed, &shared),
            write_replies(rx, client_write, &subscribed, &shared)
        )
    };
    // The client closing ends everything; Redis closing ends it once what it sent before is
    // delivered (or discarded) under the flows in force.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}

/// Client→server: forwarded at once, and read to notice a subscription.
async fn forward_commands(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    subscribed: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let mut pending = Vec::new();
    let mut sniffing = true;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Classified before forwarding, so that the confirmation already counts as a
        // subscription's.
        if sniffing && !subscribed.load(Ordering::Relaxed) {
            pending.extend_from_slice(&buf[..n]);
            sniffing = sniff(&mut pending, &subscribed, &shared);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Reads the complete commands in `pending`; returns whether to go on looking.
fn sniff(pending: &mut Vec<u8>, subscribed: &AtomicBool, shared: &Shared) -> bool {
    loop {
        match resp::value_len(pending) {
            Ok(Some(len)) => {
                let name = resp::command_name(&pending[..len]);
                pending.drain(..len);
                if matches!(
                    name.as_deref(),
                    Some("SUBSCRIBE" | "SSUBSCRIBE" | "PSUBSCRIBE")
                ) {
                    subscribed.store(true, Ordering::Relaxed);
                    shared
                        .counters
                        .subscriptions
                        .fetch_add(1, Ordering::Relaxed);
                    *pending = Vec::new();
                    return false;
                }
            }
            Ok(None) => return true,
            // Inline commands or garbage: forwarded, no longer classified.
            Err(resp::NotResp) => {
                *pending = Vec::new();
                return false;
            }
        }
    }
}

/// Server→client: cut into whole values, stamped with their arrival; invalidation pushes on a
/// subscription are marked for dropping while dropping is on.
async fn read_replies(
    mut from: OwnedReadHalf,
    tx: mpsc::Sender<Held>,
    subscribed: &AtomicBool,
    shared: &Shared,
) {
    let mut pending = Vec::new();
    let mut framing = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let arrived = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        while !pending.is_empty() {
            let len = if framing {
                match resp::value_len(&pending) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(resp::NotResp) => {
                        framing = false;
                        pending.len()
                    }
                }
            } else {
                pending.len()
            };
            let bytes: Vec<u8> = pending.drain(..len).collect();
            let invalidation = framing
                && subscribed.load(Ordering::Relaxed)
                && resp::message_payload(&bytes).is_some_and(|p| p.starts_with(b"i|"));
            if invalidation {
                shared
                    .counters
                    .invalidations_seen
                    .fetch_add(1, Ordering::Relaxed);
            }
            let drop = invalidation && shared.control.borrow().drop_invalidations;
            if tx
                .send(Held {
                    arrived,
                    bytes,
                    drop,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Server→client: each value forwarded, held or discarded under the flow in force when it is
/// its turn.
async fn write_replies(
    mut rx: mpsc::Receiver<Held>,
    to: OwnedWriteHalf,
    subscribed: &AtomicBool,
    shared: &Shared,
) {
    let mut to = BufWriter::new(to);
    let mut control = shared.control.subscribe();
    while let Some(held) = rx.recv().await {
        loop {
            let now = *control.borrow_and_update();
            let on_subscription = subscribed.load(Ordering::Relaxed);
            let flow = if on_subscription {
                now.subscription
            } else {
                now.command
            };
            let deliver_at = match flow {
                Flow::Pass => held.arrived,
                Flow::Delay(d) => held.arrived + d,
                Flow::Blackhole => {
                    shared.counters.blackholed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Flow::Stall => {
                    if control.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            if Instant::now() < deliver_at {
                tokio::select! {
                    _ = tokio::time::sleep_until(deliver_at) => {}
                    changed = control.changed() => if changed.is_err() { return },
                }
                continue;
            }
            if held.drop {
                shared
                    .counters
                    .invalidations_dropped
                    .fetch_add(1, Ordering::Relaxed);
                break;
            }
            let fence = on_subscription
                && resp::message_payload(&held.bytes).is_some_and(|p| p.starts_with(b"f|"));
            if fence {
                shared
                    .counters
                    .fences_passed
                    .fetch_add(1, Ordering::Relaxed);
            }
            if to.write_all(&held.bytes).await.is_err() {
                return;
            }
            break;
        }
        if rx.is_empty() && to.flush().await.is_err() {
            return;
        }
    }
    let _ = to.flush().await;
}
