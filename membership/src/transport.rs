//! Node-to-node requests over TCP inside Noise sessions. A call encodes the
//! request in the record envelope, sends it on a pooled connection to the
//! node's cluster address, and waits for the reply under a deadline. The
//! server side answers each request from the local store. Requests to this
//! node never touch the network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use ouroboros_core::cluster::{handle_request, Call, Reply, Request, Response, Transport, TransportError, Unreachable};
use ouroboros_core::codec;
use ouroboros_core::store::LocalStore;
use ouroboros_core::NodeId;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::members::{Liveness, Members};
use crate::noise::{NoiseError, NoiseKeys, NoiseStream};

/// The transport's clocks and limits.
#[derive(Debug, Clone, Copy)]
pub struct TransportTiming {
    pub connect_timeout: Duration,
    /// The whole handshake, on either side.
    pub handshake_timeout: Duration,
    /// One request, from taking a connection to the whole reply.
    pub call_timeout: Duration,
    /// An inbound connection with no request for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for TransportTiming {
    fn default() -> Self // A
    {
        TransportTiming {
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// What the transport refused, for status and tests.
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// Inbound connections that did not finish a handshake (no or wrong
    /// cluster secret, garbage, too slow).
    pub refused_handshakes: AtomicU64,
    /// Requests that arrived sealed but did not decode.
    pub malformed_requests: AtomicU64,
    /// Message bytes this node sent to other nodes (requests and replies).
    pub bytes_sent: AtomicU64,
    /// Message bytes this node received from other nodes.
    pub bytes_received: AtomicU64,
}

impl TransportCounters {
    fn count(&self, sent: usize, received: usize) // A
    {
        self.bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
        self.bytes_received.fetch_add(received as u64, Ordering::Relaxed);
    }
}

/// Idle connections kept per peer; more in flight at once are closed after use.
const POOLED_PER_PEER: usize = 16;
/// How often a call under way checks whether its node was seen down.
const DOWN_POLL: Duration = Duration::from_millis(200);
/// Inbound connections served at once.
const MAX_INBOUND: usize = 1024;

type Connection = NoiseStream<TcpStream>;

struct Inner {
    local: NodeId,
    store: Arc<LocalStore>,
    members: Arc<Members>,
    keys: NoiseKeys,
    timing: TransportTiming,
    pool: Mutex<HashMap<NodeId, Vec<Connection>>>,
    counters: Arc<TransportCounters>,
}

/// The network `Transport`: cheap to clone.
#[derive(Clone)]
pub struct NetTransport {
    inner: Arc<Inner>,
}

impl NetTransport {
    pub fn new(store: Arc<LocalStore>, members: Arc<Members>, keys: NoiseKeys, timing: TransportTiming) -> Self // PA
    {
        let local = members.local().id;
        let counters = Arc::new(TransportCounters::default());
        let inner = Inner { local, store, members, keys, timing, pool: Mutex::new(HashMap::new()), counters };
        NetTransport { inner: Arc::new(inner) }
    }

    pub fn counters(&self) -> Arc<TransportCounters> // A
    {
        self.inner.counters.clone()
    }

    /// Answer requests arriving on `listener` until the returned task is
    /// aborted; aborting it also ends every connection it accepted.
    pub fn serve(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> // PA
    {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(MAX_INBOUND));
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, from)) => {
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                tracing::warn!(%from, "too many cluster connections; closing this one");
                                continue;
                            };
                            let inner = inner.clone();
                            connections.spawn(async move {
                                inner.answer(stream, from).await;
                                drop(permit);
                            });
                        }
                        Err(error) => {
                            tracing::warn!(%error, "cluster listener accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    Some(_) = connections.join_next() => {}
                }
            }
        })
    }
}

impl Inner {
    async fn answer(&self, stream: TcpStream, from: SocketAddr) // PA
    {
        let _ = stream.set_nodelay(true);
        let handshake = tokio::time::timeout(self.timing.handshake_timeout, NoiseStream::respond(stream, &self.keys));
        let mut connection = match handshake.await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return self.refuse(from, &error),
            Err(_) => return self.refuse(from, &NoiseError::Timeout(self.timing.handshake_timeout)),
        };
        let peer = connection.peer();
        loop {
            let message = match tokio::time::timeout(self.timing.idle_timeout, connection.receive()).await {
                Ok(Ok(message)) => message,
                Ok(Err(NoiseError::Closed)) | Err(_) => return,
                Ok(Err(error)) => {
                    tracing::debug!(%from, %error, "cluster connection failed");
                    return;
                }
            };
            let reply = match codec::decode::<Request>(&message) {
                Ok(request) => {
                    let store = self.store.clone();
                    match tokio::task::spawn_blocking(move || handle_request(&store, request)).await {
                        Ok(result) => Reply::of(result),
                        Err(error) => {
                            Reply::Failed { storage_full: false, message: format!("request failed: {error}") }
                        }
                    }
                }
                Err(error) => {
                    self.counters.malformed_requests.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%from, peer = %peer, %error, "malformed request");
                    Reply::Failed { storage_full: false, message: format!("malformed request: {error}") }
                }
            };
            let reply = codec::encode(&reply);
            self.counters.count(reply.len(), message.len());
            if let Err(error) = connection.send(&reply).await {
                tracing::debug!(%from, %error, "could not send a reply");
                return;
            }
        }
    }

    fn is_down(&self, node: NodeId) -> bool // A
    {
        self.members.get(&node).is_some_and(|m| m.liveness == Liveness::Down)
    }

    async fn until_down(&self, node: NodeId) // A
    {
        loop {
            tokio::time::sleep(DOWN_POLL).await;
            if self.is_down(node) {
                return;
            }
        }
    }

    fn refuse(&self, from: SocketAddr, error: &NoiseError) // PA
    {
        self.counters.refused_handshakes.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%from, %error, "cluster connection refused");
    }

    fn pooled(&self, node: NodeId) -> Option<Connection> // A
    {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&node).and_then(Vec::pop)
    }

    fn give_back(&self, node: NodeId, connection: Connection) // A
    {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let idle = pool.entry(node).or_default();
        if idle.len() < POOLED_PER_PEER {
            idle.push(connection);
        }
    }

    async fn dial(&self, node: NodeId) -> Result<Connection, NoiseError> // PA
    {
        let addr = self.members.get(&node).map(|m| m.peer.addr).ok_or(NoiseError::UnknownNode)?;
        let stream = tokio::time::timeout(self.timing.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| NoiseError::Timeout(self.timing.connect_timeout))??;
        let _ = stream.set_nodelay(true);
        tokio::time::timeout(self.timing.handshake_timeout, NoiseStream::initiate(stream, &self.keys, Some(node)))
            .await
            .map_err(|_| NoiseError::Timeout(self.timing.handshake_timeout))?
    }

    async fn exchange(&self, connection: &mut Connection, request: &[u8]) -> Result<Vec<u8>, NoiseError> // PA
    {
        connection.send(request).await?;
        let reply = connection.receive().await?;
        self.counters.count(request.len(), reply.len());
        Ok(reply)
    }

    /// One request to another node: a pooled connection if there is one
    /// (retried once on a fresh one if the pooled one turns out dead), else
    /// a new one.
    async fn remote(&self, node: NodeId, request: Vec<u8>) -> Result<Vec<u8>, NoiseError> // PA
    {
        if let Some(mut connection) = self.pooled(node) {
            match self.exchange(&mut connection, &request).await {
                Ok(reply) => {
                    self.give_back(node, connection);
                    return Ok(reply);
                }
                // The peer closed it while idle (a restart): try a new one.
                Err(NoiseError::Closed | NoiseError::Io(_)) => {}
                Err(error) => return Err(error),
            }
        }
        let mut connection = self.dial(node).await?;
        let reply = self.exchange(&mut connection, &request).await?;
        self.give_back(node, connection);
        Ok(reply)
    }

    async fn call(self: Arc<Self>, node: NodeId, request: Request) -> Result<Response, TransportError> // PA
    {
        if node == self.local {
            let store = self.store.clone();
            return tokio::task::spawn_blocking(move || handle_request(&store, request))
                .await
                .map_err(|error| TransportError::Remote { node, message: error.to_string() })?
                .map_err(|error| TransportError::from_store(node, &error));
        }
        // A node the failure detector sees down is not dialled, and a call
        // under way ends when it is seen down: nobody waits out the deadline
        // on a node that is known to be away.
        let unreachable = |cause| TransportError::Unreachable { node, cause };
        if self.is_down(node) {
            return Err(unreachable(Unreachable::SeenDown));
        }
        let bytes = codec::encode(&request);
        // The exchange runs as its own task: a caller that stops waiting
        // (a read quorum already met, a client gone) leaves it to finish
        // within the deadline and give its connection back to the pool,
        // instead of dropping a connection in mid-exchange.
        let inner = self.clone();
        let timeout = self.timing.call_timeout;
        let exchange = tokio::spawn(async move { tokio::time::timeout(timeout, inner.remote(node, bytes)).await });
        let abort = exchange.abort_handle();
        let reply = tokio::select! {
            result = exchange => match result {
                Ok(Ok(Ok(reply))) => reply,
                Ok(Ok(Err(error))) => {
                    tracing::debug!(node = %node, %error, "node request failed");
                    return Err(unreachable(cause_of(&error)));
                }
                Ok(Err(_)) => {
                    tracing::debug!(node = %node, ?timeout, "node request timed out");
                    return Err(unreachable(Unreachable::TimedOut));
                }
                Err(error) => return Err(TransportError::Remote { node, message: format!("request task: {error}") }),
            },
            () = self.until_down(node) => {
                abort.abort();
                tracing::debug!(node = %node, "node seen down during a request");
                return Err(unreachable(Unreachable::SeenDown));
            }
        };
        match codec::decode::<Reply>(&reply) {
            Ok(reply) => reply.into_result(node),
            Err(error) => Err(TransportError::Remote { node, message: format!("malformed reply: {error}") }),
        }
    }
}

/// What a failed exchange says about the node's reachability.
fn cause_of(error: &NoiseError) -> Unreachable // A
{
    match error {
        NoiseError::Timeout(_) => Unreachable::TimedOut,
        NoiseError::Handshake(_) | NoiseError::HandshakeClosed | NoiseError::WrongPeer { .. } => Unreachable::Refused,
        NoiseError::UnknownNode => Unreachable::Unknown,
        NoiseError::Io(_) | NoiseError::Closed | NoiseError::Frame(_) | NoiseError::TooLarge(_) => {
            Unreachable::Connection
        }
    }
}

impl Transport for NetTransport {
    fn call(&self, node: NodeId, request: Request) -> Call // PA
    {
        self.inner.clone().call(node, request).boxed()
    }

    fn local_store(&self, node: NodeId) -> Option<Arc<LocalStore>> // PA
    {
        (node == self.inner.local).then(|| self.inner.store.clone())
    }
}
