//! What a deduplicating write costs in a cluster. Six nodes run in one
//! process (4+2) over a transport that adds a round trip to every message
//! between two nodes. An object is written, then the same bytes again under
//! other keys, so every chunk is found and reused:
//!
//! - **verified**: the manifests as their writer stored them;
//! - **unverified**: every manifest flagged as come from another node, as
//!   on every replica after an upgrade to the build that brought manifests
//!   into anti-entropy, or on a replica anti-entropy filled. A reuse then
//!   first asks each slice home whether it holds its slice (one
//!   `HoldsSlices` each) and has the replicas take the manifest back as
//!   their own (`PutChunk`);
//! - **after the check**: the same write once more; the check is paid once.
//!
//! Run: `cargo bench -p ouroboros-core --bench dedup` (`DEDUP_MIB`, default
//! 256; `DEDUP_RTT_MS`, the round trips to time, default `0,1`). Prints
//! markdown for docs/BENCHMARKS.md. tokio's timer counts in milliseconds, so
//! a round trip shorter than 1 ms cannot be set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use ouroboros_core::cluster::{Call, Request, Transport};
use ouroboros_core::memory::{MemoryCluster, MemoryView};
use ouroboros_core::store::{Durability, LocalStore};
use ouroboros_core::{DataKeyPair, Engine, EngineConfig, Hash, NodeKeys, PutRequest};
use rand::{RngCore, SeedableRng};

/// One node's way to the others: every message to another node waits one
/// round trip first, and is counted.
#[derive(Clone)]
struct Delayed {
    cluster: MemoryCluster,
    from: Hash,
    rtt: Duration,
    sent: Arc<AtomicUsize>,
}

impl Transport for Delayed {
    fn call(&self, node: Hash, request: Request) -> Call // A
    {
        if node == self.from {
            return self.cluster.call(node, request);
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        let (cluster, rtt) = (self.cluster.clone(), self.rtt);
        async move {
            if !rtt.is_zero() {
                tokio::time::sleep(rtt).await;
            }
            cluster.call(node, request).await
        }
        .boxed()
    }

    fn local_store(&self, node: Hash) -> Option<Arc<LocalStore>> // A
    {
        (node == self.from).then(|| self.cluster.local_store(node)).flatten()
    }
}

/// One timed write: MB/s and messages sent between nodes.
struct Measured {
    rate: f64,
    messages: usize,
}

/// Six engines over one in-process cluster; the first one writes.
struct Bench {
    _dirs: Vec<tempfile::TempDir>,
    cluster: MemoryCluster,
    nodes: Vec<Hash>,
    writer: Engine<Delayed, MemoryView>,
    sent: Arc<AtomicUsize>,
}

impl Bench {
    fn new(rtt: Duration) -> Self // A
    {
        let cluster = MemoryCluster::new();
        let (mut dirs, mut nodes) = (Vec::new(), Vec::new());
        for i in 0..6 {
            let dir = tempfile::tempdir().expect("temporary directory");
            let store = LocalStore::open(dir.path(), Durability::Flush).expect("store");
            let id = Hash::of(format!("bench node {i}").as_bytes());
            cluster.add_node(id, Arc::new(store));
            dirs.push(dir);
            nodes.push(id);
        }
        let pair = DataKeyPair::generate();
        let keys = NodeKeys { dedup_key: rand::random(), recipients: vec![pair.public()], data_pair: pair };
        let sent = Arc::new(AtomicUsize::new(0));
        let transport = Delayed { cluster: cluster.clone(), from: nodes[0], rtt, sent: sent.clone() };
        let view = Arc::new(cluster.view(nodes[0]));
        let writer = Engine::new(Arc::new(transport), view, keys, EngineConfig::default()).expect("engine");
        Bench { _dirs: dirs, cluster, nodes, writer, sent }
    }

    async fn put(&self, key: &str, data: &Bytes) -> Measured // A
    {
        let pieces: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
            .step_by(256 << 10)
            .map(|at| Ok(data.slice(at..(at + (256 << 10)).min(data.len()))))
            .collect();
        let sent_before = self.sent.load(Ordering::Relaxed);
        let started = Instant::now();
        self.writer
            .put_object(PutRequest::new("bench", key), futures::stream::iter(pieces))
            .await
            .expect("the write succeeds");
        let rate = data.len() as f64 / started.elapsed().as_secs_f64() / 1e6;
        Measured { rate, messages: self.sent.load(Ordering::Relaxed) - sent_before }
    }

    /// Every manifest on every node flagged as come from another node.
    fn unverify_manifests(&self) -> usize // A
    {
        let mut flagged = 0;
        for node in &self.nodes {
            let store = self.cluster.store(node).expect("store");
            for id in store.unclaimed_chunks(u64::MAX, None, usize::MAX).expect("manifests") {
                let manifest = store.get_chunk(&id).expect("manifest").expect("listed");
                store.drop_moved_chunk(&id).expect("drop");
                flagged += usize::from(store.offer_chunk(&manifest).expect("offer"));
            }
        }
        flagged
    }
}

/// A comma-separated list of milliseconds from the environment.
fn rtts() -> Vec<u64> // A
{
    let text = std::env::var("DEDUP_RTT_MS").unwrap_or_else(|_| "0,1".into());
    text.split(',').filter_map(|ms| ms.trim().parse().ok()).collect()
}

fn main() // A
{
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib: usize = std::env::var("DEDUP_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256).max(1);
    let mut bytes = vec![0u8; mib << 20];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut bytes);
    let data = Bytes::from(bytes);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(cores).enable_all().build().expect("runtime");
    println!("cores: {cores}; six nodes in one process, 4+2, {mib} MiB of incompressible bytes\n");
    println!("| round trip | first write | again, verified | again, unverified | after the check |");
    println!("|---|---|---|---|---|");
    for rtt in rtts() {
        let bench = Bench::new(Duration::from_millis(rtt));
        let cell = |m: &Measured| format!("{:.0} MB/s, {} messages", m.rate, m.messages);
        let (first, verified, flagged, unverified, after) = runtime.block_on(async {
            let first = bench.put("first", &data).await;
            let verified = bench.put("verified", &data).await;
            let flagged = bench.unverify_manifests();
            let unverified = bench.put("unverified", &data).await;
            let after = bench.put("after", &data).await;
            (first, verified, flagged, unverified, after)
        });
        println!(
            "| {rtt} ms | {} | {} | {} ({flagged} manifests flagged) | {} |",
            cell(&first),
            cell(&verified),
            cell(&unverified),
            cell(&after)
        );
    }
}
