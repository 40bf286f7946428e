//! Cluster membership and the node transport. Gossip (SWIM via foca, sealed
//! UDP packets) says who is alive; the member table says who is in the
//! cluster; the Noise transport carries node requests. All three share one
//! port number: gossip on UDP, requests on TCP. `Cluster::start` runs them
//! for a node and hands the engine its `Transport` and `ClusterView`.

pub mod gossip;
pub mod members;
pub mod noise;
pub mod transport;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ouroboros_core::keys::Cipher;
use ouroboros_core::store::LocalStore;
use ouroboros_core::{ClusterSecret, NodeId};
use tokio::net::{TcpListener, UdpSocket};

pub use gossip::{Gossip, GossipCounters, GossipTiming, Seeds};
pub use members::{short_id, Liveness, Member, Members, MembersView, Peer, Role};
pub use noise::NoiseKeys;
pub use transport::{NetTransport, TransportCounters, TransportTiming};

/// How a node takes part in the cluster.
pub struct ClusterConfig {
    pub data_dir: PathBuf,
    /// Where gossip (UDP) and requests (TCP) are taken.
    pub listen: SocketAddr,
    /// What other nodes dial; the listen address when unset.
    pub advertise: Option<SocketAddr>,
    /// Addresses of any live members (`HOST:PORT`), resolved at each try.
    pub join: Vec<String>,
    pub role: Role,
    pub secret: ClusterSecret,
    /// This node's X25519 static secret: its public key is the node id.
    pub node_secret: [u8; 32],
    pub gossip: GossipTiming,
    pub transport: TransportTiming,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster address {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cluster state in {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
    #[error("cluster address {0} cannot be advertised: other nodes could not reach it (set --cluster-advertise)")]
    Unadvertisable(SocketAddr),
}

/// A node's running membership and transport.
pub struct Cluster {
    pub members: Arc<Members>,
    pub store: Arc<LocalStore>,
    pub transport: NetTransport,
    pub gossip: Gossip,
    server: tokio::task::JoinHandle<()>,
}

const GENERATION_FILE: &str = "cluster-generation";

/// This start's generation: one more than the last start's, saved before
/// use, so a restarted node always outranks its stale self in gossip.
pub fn next_generation(data_dir: &Path) -> std::io::Result<u64> // PA
{
    let path = data_dir.join(GENERATION_FILE);
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not a number", path.display()))
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(error),
    };
    let next = last + 1;
    members::replace_file(&path, format!("{next}\n").as_bytes())?;
    Ok(next)
}

/// The X25519 public key of a static secret, and the node id it names.
pub fn node_id_of_secret(secret: &[u8; 32]) -> NodeId // PA
{
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret));
    noise::node_id_of(public.as_bytes())
}

impl Cluster {
    /// Bind the cluster port, load the member table and start gossip and the
    /// request server for the node whose store is `store`.
    pub async fn start(config: ClusterConfig, store: Arc<LocalStore>) -> Result<Cluster, ClusterError> // PA
    {
        let advertise = config.advertise.unwrap_or(config.listen);
        if advertise.ip().is_unspecified() {
            return Err(ClusterError::Unadvertisable(advertise));
        }
        let state = |source| ClusterError::State { path: config.data_dir.clone(), source };
        let generation = next_generation(&config.data_dir).map_err(state)?;
        let id = node_id_of_secret(&config.node_secret);
        let local = Peer { id, addr: advertise, generation, role: config.role };
        let members = Members::load(local, &config.data_dir).map_err(state)?;

        let bind = |source| ClusterError::Bind { addr: config.listen, source };
        let udp = UdpSocket::bind(config.listen).await.map_err(bind)?;
        let tcp = TcpListener::bind(config.listen).await.map_err(bind)?;

        let keys = NoiseKeys { static_secret: config.node_secret, psk: config.secret.transport_psk() };
        let transport = NetTransport::new(store.clone(), members.clone(), keys, config.transport);
        let server = transport.serve(tcp);
        let cipher = Cipher::new(&config.secret.gossip_key());
        let seeds = Seeds { seeds: config.join, timing: config.gossip };
        let gossip = Gossip::start(udp, members.clone(), cipher, seeds);
        tracing::info!(node = %short_id(&id), %advertise, generation, "cluster membership started");
        Ok(Cluster { members, store, transport, gossip, server })
    }

    pub fn view(&self) -> MembersView // A
    {
        MembersView { members: self.members.clone(), store: self.store.clone() }
    }

    /// Leave the cluster: the others mark this node down at once.
    pub async fn leave(&self) // A
    {
        self.gossip.leave().await;
        self.server.abort();
    }
}

/// Dropping a cluster stops it as a crash would: no goodbye, every
/// connection cut.
impl Drop for Cluster {
    fn drop(&mut self) // A
    {
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use ouroboros_core::cluster::{GetSlice, PutSlice, Stored, Transport, TransportError, Unreachable};
    use ouroboros_core::store::Durability;
    use ouroboros_core::{Hash, SealedSlice};
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn fast() -> (GossipTiming, TransportTiming) // A
    {
        let gossip = GossipTiming {
            probe_period: Duration::from_millis(200),
            probe_rtt: Duration::from_millis(100),
            suspect_to_down_after: Duration::from_secs(1),
            rejoin_every: Duration::from_millis(300),
        };
        let transport = TransportTiming { call_timeout: Duration::from_secs(5), ..TransportTiming::default() };
        (gossip, transport)
    }

    struct TestNode {
        dir: tempfile::TempDir,
        addr: SocketAddr,
        secret: [u8; 32],
        cluster: Option<Cluster>,
    }

    impl TestNode {
        fn cluster(&self) -> &Cluster // A
        {
            self.cluster.as_ref().expect("node is running")
        }

        fn id(&self) -> NodeId // A
        {
            self.cluster().members.local().id
        }
    }

    async fn start(dir: &Path, addr: SocketAddr, secret: [u8; 32], join: &[SocketAddr]) -> Cluster // A
    {
        let store = Arc::new(LocalStore::open(&dir.join("store"), Durability::Flush).expect("store"));
        let node_secret = match std::fs::read(dir.join("node-secret")) {
            Ok(bytes) => bytes.try_into().expect("32 bytes"),
            Err(_) => {
                let bytes: [u8; 32] = rand::random();
                std::fs::write(dir.join("node-secret"), bytes).expect("save");
                bytes
            }
        };
        let (gossip, transport) = fast();
        let config = ClusterConfig {
            data_dir: dir.to_path_buf(),
            listen: addr,
            advertise: None,
            join: join.iter().map(|a| a.to_string()).collect(),
            role: Role::Gateway,
            secret: ClusterSecret::from_bytes(secret),
            node_secret,
            gossip,
            transport,
        };
        Cluster::start(config, store).await.expect("cluster starts")
    }

    /// A port free for both UDP and TCP on 127.0.0.1.
    fn free_addr() -> SocketAddr // A
    {
        loop {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = tcp.local_addr().expect("addr");
            if std::net::UdpSocket::bind(addr).is_ok() {
                return addr;
            }
        }
    }

    async fn node(secret: [u8; 32], join: &[SocketAddr]) -> TestNode // A
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = free_addr();
        let cluster = Some(start(dir.path(), addr, secret, join).await);
        TestNode { dir, addr, secret, cluster }
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) // A
    {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting until {what}");
    }

    fn liveness(of: &TestNode, seen_by: &TestNode) -> Option<Liveness> // A
    {
        seen_by.cluster().members.get(&of.id()).map(|m| m.liveness)
    }

    fn slice(n: u8) -> (Hash, SealedSlice) // A
    {
        (Hash::of(&[n]), SealedSlice::new([n; 12], vec![n; 64]))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_join_call_each_other_and_a_crashed_node_keeps_its_place_and_rejoins() // A
    {
        let secret = rand::random();
        let a = node(secret, &[]).await;
        let b = node(secret, &[a.addr]).await;
        let mut c = node(secret, &[a.addr]).await;
        for n in [&a, &b, &c] {
            until("every node sees three alive", || n.cluster().members.alive() == 3).await;
        }

        // A slice put on C through A reads back on C through B.
        let (chunk, put) = slice(1);
        let stored = a.cluster().transport.ask(c.id(), PutSlice { chunk, slice: put.clone() }).await;
        assert!(matches!(stored, Ok(Stored)), "{stored:?}");
        let got = b.cluster().transport.ask(c.id(), GetSlice { hash: put.hash }).await;
        assert!(matches!(&got, Ok(Some(s)) if *s == put), "{got:?}");

        // C crashes: the others see it down, keep it as a member, and a call
        // to it fails fast instead of hanging.
        let c_id = c.id();
        drop(c.cluster.take());
        until("A sees C down", || a.cluster().members.get(&c_id).map(|m| m.liveness) == Some(Liveness::Down)).await;
        assert_eq!(a.cluster().members.snapshot().len(), 3, "a down node lost its place");
        let call = a.cluster().transport.ask(c_id, GetSlice { hash: put.hash }).await;
        let seen_down = Unreachable::SeenDown;
        assert!(
            matches!(call, Err(TransportError::Unreachable { node, cause }) if node == c_id && cause == seen_down),
            "{call:?}"
        );

        // C restarts from its data directory: same id, newer generation,
        // alive again everywhere, and its slice is still there.
        c.cluster = Some(start(c.dir.path(), c.addr, c.secret, &[a.addr]).await);
        assert_eq!(c.id(), c_id, "a restart changed the node id");
        until("A sees C alive", || liveness(&c, &a) == Some(Liveness::Alive)).await;
        until("B sees C alive", || liveness(&c, &b) == Some(Liveness::Alive)).await;
        let generation = a.cluster().members.get(&c_id).map(|m| m.peer.generation);
        assert_eq!(generation, Some(2));
        let got = b.cluster().transport.ask(c_id, GetSlice { hash: put.hash }).await;
        assert!(matches!(&got, Ok(Some(s)) if *s == put), "{got:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_that_started_before_their_seed_merge_with_it_once_it_is_up() // A
    {
        // The seed's address is taken, but nothing listens on it yet: B and
        // C, both told to join through it, find only each other (C also
        // knows B), as compose nodes do when node 1 starts last.
        let secret = rand::random();
        let seed_addr = free_addr();
        let b = node(secret, &[seed_addr]).await;
        let c = node(secret, &[seed_addr, b.addr]).await;
        until("B and C see each other", || b.cluster().members.alive() == 2 && c.cluster().members.alive() == 2).await;

        // The seed starts with no --join of its own. Nobody else announces
        // to it unless B and C keep trying the seed they do not see.
        let dir = tempfile::tempdir().expect("tempdir");
        let seed =
            TestNode { cluster: Some(start(dir.path(), seed_addr, secret, &[]).await), dir, addr: seed_addr, secret };
        for n in [&seed, &b, &c] {
            until("every node sees three alive", || n.cluster().members.alive() == 3).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outsider_cannot_join_or_call_and_garbage_is_dropped() // A
    {
        let a = node(rand::random(), &[]).await;
        let b = node(a.secret, &[a.addr]).await;
        until("A and B see each other", || a.cluster().members.alive() == 2).await;

        // Same software, another secret: its gossip never opens at A.
        let outsider = node(rand::random(), &[a.addr]).await;
        until("A refuses the outsider's packets", || {
            a.cluster().gossip.counters.refused_packets.load(Ordering::Relaxed) > 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(outsider.cluster().members.alive(), 1, "the outsider joined");
        assert_eq!(a.cluster().members.snapshot().len(), 2, "A took in the outsider");

        // It cannot finish a handshake with A's transport either.
        let stream = tokio::net::TcpStream::connect(a.addr).await.expect("connect");
        let keys = NoiseKeys { static_secret: rand::random(), psk: rand::random() };
        let handshake = noise::NoiseStream::initiate(stream, &keys, None).await;
        assert!(handshake.is_err(), "a handshake without the cluster secret succeeded");
        until("A counts the refused handshake", || {
            a.cluster().transport.counters().refused_handshakes.load(Ordering::Relaxed) > 0
        })
        .await;

        // Garbage to both ports.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        for garbage in [&b"\x01hello"[..], &[0u8; 1400][..], &[1u8; 3][..]] {
            udp.send_to(garbage, a.addr).expect("send");
        }
        let mut tcp = tokio::net::TcpStream::connect(a.addr).await.expect("connect");
        tcp.write_all(&[0xff; 4096]).await.expect("write");
        drop(tcp);

        // A still serves its own cluster.
        let (chunk, put) = slice(2);
        let stored = b.cluster().transport.ask(a.id(), PutSlice { chunk, slice: put }).await;
        assert!(matches!(stored, Ok(Stored)), "{stored:?}");
        assert_eq!(liveness(&b, &a), Some(Liveness::Alive));
    }
}
