//! The engine end to end over in-process nodes: round trips, ranges, dedup,
//! encryption at rest, erasure tolerance, damaged slices and crash safety.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use ouroboros_core::anti_entropy::AntiEntropy;
use ouroboros_core::chunker::ChunkerConfig;
use ouroboros_core::cluster::{Call, ClusterView, Request, Transport, TransportError, Unreachable};
use ouroboros_core::engine::RepairReport;
use ouroboros_core::handoff::HandoffReport;
use ouroboros_core::hints::{HandedOffSlice, HeldSlice, Hinted};
use ouroboros_core::layout::{Layout, NodeState, Place};
use ouroboros_core::memory::{MemoryCluster, MemoryView};
use ouroboros_core::placement;
use ouroboros_core::scrub::scrub_slices;
use ouroboros_core::seal::{self, SealParams};
use ouroboros_core::steward::{Steward, StewardSettings};
use ouroboros_core::store::{Durability, LocalStore};
use ouroboros_core::{DataKeyPair, Engine, EngineConfig, EngineError, Erasure, Hash, NodeKeys, PutRequest, StoredBlob};
use rand::{RngCore, SeedableRng};

type TestEngine = Engine<MemoryCluster, MemoryView>;

struct Cluster {
    _dirs: Vec<tempfile::TempDir>,
    nodes: Vec<Hash>,
    transport: MemoryCluster,
    engines: Vec<TestEngine>,
}

fn test_keys() -> NodeKeys // A
{
    let pair = DataKeyPair::from_secret_bytes([7; 32]);
    NodeKeys { dedup_key: [3; 32], recipients: vec![pair.public()], data_pair: pair }
}

fn small_chunks() -> EngineConfig // A
{
    EngineConfig { chunking: ChunkerConfig { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 }, ..Default::default() }
}

impl Cluster {
    fn new(size: usize, config: EngineConfig) -> Self // A
    {
        let transport = MemoryCluster::new();
        let mut dirs = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..size {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStore::open(dir.path(), Durability::Flush).unwrap();
            let id = Hash::of(format!("node {i}").as_bytes());
            transport.add_node(id, Arc::new(store));
            dirs.push(dir);
            nodes.push(id);
        }
        let engines = nodes
            .iter()
            .map(|id| {
                let view = Arc::new(transport.view(*id));
                Engine::new(Arc::new(transport.clone()), view, test_keys(), config.clone()).unwrap()
            })
            .collect();
        Cluster { _dirs: dirs, nodes, transport, engines }
    }

    /// A node started with an empty store, reachable and in nobody's layout
    /// yet (its steward enters it, joining).
    fn add_newcomer(&mut self) -> Hash // A
    {
        let dir = tempfile::tempdir().unwrap();
        let newcomer = Hash::of(format!("node {}", self.nodes.len()).as_bytes());
        self.transport.add_unplaced_node(newcomer, Arc::new(LocalStore::open(dir.path(), Durability::Flush).unwrap()));
        self._dirs.push(dir);
        self.nodes.push(newcomer);
        let view = Arc::new(self.transport.view(newcomer));
        self.engines.push(Engine::new(Arc::new(self.transport.clone()), view, test_keys(), small_chunks()).unwrap());
        newcomer
    }

    fn slice_bytes(&self) -> u64 // A
    {
        self.nodes.iter().map(|id| self.transport.store(id).unwrap().slice_usage().unwrap().0).sum()
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> // A
{
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

fn text_bytes(len: usize) -> Vec<u8> // A
{
    let words = ["object ", "store ", "chunk ", "version ", "ouroboros ", "merkle ", "gossip ", "slice\n"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(len as u64);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(words[(rng.next_u32() % 8) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

/// The body as a stream of uneven pieces, as a network would deliver it.
fn body(data: &[u8]) -> impl ouroboros_core::BodyStream // A
{
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        data.chunks(100_003).map(|piece| Ok(Bytes::copy_from_slice(piece))).collect();
    futures::stream::iter(pieces)
}

async fn put<T: Transport, V: ClusterView>(engine: &Engine<T, V>, key: &str, data: &[u8]) -> StoredBlob // A
{
    engine.put_object(PutRequest::new("bucket", key), body(data)).await.unwrap()
}

/// `object-0`..`object-{count-1}` of random bytes, the i-th `first + i * step`
/// long from seed `seed + i`, written through the nodes in turn.
async fn put_objects(cluster: &Cluster, count: u64, first: usize, step: usize, seed: u64) -> Vec<(String, Vec<u8>)> // A
{
    let mut objects = Vec::new();
    for i in 0..count {
        let (key, data) = (format!("object-{i}"), random_bytes(first + i as usize * step, seed + i));
        put(&cluster.engines[i as usize % cluster.engines.len()], &key, &data).await;
        objects.push((key, data));
    }
    objects
}

async fn read_all<T: Transport, V: ClusterView>(engine: &Engine<T, V>, key: &str) -> Result<Vec<u8>, EngineError> // A
{
    let latest = engine.latest("bucket", key).await?.expect("object exists");
    read_range(engine, &latest, 0..u64::MAX).await
}

/// The bytes read, or why not.
type Read = Result<Vec<u8>, EngineError>;

async fn read_range<T: Transport, V: ClusterView>(engine: &Engine<T, V>, blob: &StoredBlob, range: Range<u64>) -> Read // A
{
    let pieces: Vec<Bytes> = engine.read(&blob.blob, range).try_collect().await?;
    Ok(pieces.concat())
}

fn md5_hex(data: &[u8]) -> String // A
{
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_at_edge_sizes() // A
{
    let cluster = Cluster::new(1, EngineConfig::default());
    let engine = &cluster.engines[0];
    let chunking = ChunkerConfig::default();
    let sizes = [0, 1, chunking.min as usize - 1, chunking.min as usize, chunking.min as usize + 1]
        .into_iter()
        .chain([chunking.max as usize - 1, chunking.max as usize, chunking.max as usize + 1]);
    for (i, size) in sizes.enumerate() {
        let data = random_bytes(size, i as u64);
        let stored = put(engine, &format!("size-{size}"), &data).await;
        assert_eq!(stored.blob.size, size as u64);
        assert_eq!(stored.blob.etag, md5_hex(&data), "ETag is the MD5 of the body");
        assert_eq!(read_all(engine, &format!("size-{size}")).await.unwrap(), data, "size {size}");
    }
}

/// The PUT queues count bytes: a piece larger than any queue must still pass,
/// and thousands of tiny pieces must not be held to a few at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_one_huge_piece_then_tiny_ones_round_trips() // A
{
    let cluster = Cluster::new(1, EngineConfig::default());
    let engine = &cluster.engines[0];
    let data = random_bytes((20 << 20) + 5000, 7);
    let mut pieces: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::copy_from_slice(&data[..20 << 20]))];
    pieces.extend(data[20 << 20..].chunks(1).map(|byte| Ok(Bytes::copy_from_slice(byte))));
    let stored = engine.put_object(PutRequest::new("bucket", "huge-then-tiny"), futures::stream::iter(pieces)).await;
    let stored = stored.unwrap();
    assert_eq!(stored.blob.size, data.len() as u64);
    assert_eq!(stored.blob.etag, md5_hex(&data), "ETag is the MD5 of the body");
    assert!(read_all(engine, "huge-then-tiny").await.unwrap() == data, "the body differs after the round trip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_object_round_trips_and_ranges_touch_only_their_chunks() // A
{
    let cluster = Cluster::new(1, EngineConfig::default());
    let engine = &cluster.engines[0];
    let mut data = text_bytes(50 << 20);
    data.extend(random_bytes(50 << 20, 100));
    let stored = put(engine, "big", &data).await;
    assert!(stored.blob.chunks.len() > 20, "{} chunks", stored.blob.chunks.len());
    let back = read_all(engine, "big").await.unwrap();
    assert!(back == data, "100 MiB object differs after the round trip");
    for (start, end) in [(0, 1), (12_345_678, 12_345_679 + 3_000_000), ((100 << 20) - 10, 100 << 20), (5, 5)] {
        assert_eq!(read_range(engine, &stored, start..end).await.unwrap(), &data[start as usize..end as usize]);
    }
    // A range past the end is clamped to the object.
    assert_eq!(read_range(engine, &stored, (100 << 20) - 3..u64::MAX).await.unwrap(), &data[(100 << 20) - 3..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_nodes_with_4_2_coding_survive_any_two_losses() // A
{
    let cluster = Cluster::new(6, EngineConfig { erasure: Some(Erasure::new(4, 2)), ..small_chunks() });
    let mut objects = Vec::new();
    for i in 0..6 {
        let data = if i % 2 == 0 { random_bytes(700_000 + i * 1000, i as u64) } else { text_bytes(900_000 + i) };
        let key = format!("obj-{i}");
        put(&cluster.engines[i], &key, &data).await;
        objects.push((key, data));
    }
    objects.push(("empty".into(), Vec::new()));
    put(&cluster.engines[0], "empty", &[]).await;

    for a in 0..6 {
        for b in a + 1..6 {
            cluster.transport.set_down(cluster.nodes[a], true);
            cluster.transport.set_down(cluster.nodes[b], true);
            let reader = &cluster.engines[(0..6).find(|i| *i != a && *i != b).unwrap()];
            for (key, data) in &objects {
                let back = read_all(reader, key).await.unwrap_or_else(|e| panic!("{key} with {a},{b} down: {e}"));
                assert!(back == *data, "{key} differs with nodes {a} and {b} down");
            }
            cluster.transport.set_down(cluster.nodes[a], false);
            cluster.transport.set_down(cluster.nodes[b], false);
        }
    }

    // Three nodes down is past what 4+2 can cover: a clear error, never wrong bytes.
    let (key, _) = &objects[0];
    let blob = cluster.engines[0].latest("bucket", key).await.unwrap().unwrap();
    let chunk = blob.blob.chunks[0].id;
    let ranked: Vec<Hash> =
        placement::rank(&chunk, &placement::alike(&cluster.nodes)).into_iter().map(|member| member.node).collect();
    for node in &ranked[..3] {
        cluster.transport.set_down(*node, true);
    }
    let reader = cluster.engines.iter().find(|e| ranked[3..].contains(&e.local_node())).unwrap();
    let error = read_range(reader, &blob, 0..u64::MAX).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&chunk.to_hex()) || matches!(error, EngineError::ChunkNotFound(_)),
        "error must name the chunk: {message}"
    );
}

/// The transport of one node of a cluster whose slice stores to `slow`
/// time out, as to a node too busy to answer, and whose calls fail once
/// the node it serves has crashed, as a dead process sends nothing more.
#[derive(Clone)]
struct Unsteady {
    cluster: MemoryCluster,
    local: Hash,
    slow: Hash,
    crashed: Arc<std::sync::Mutex<BTreeSet<Hash>>>,
}

impl Transport for Unsteady {
    fn call(&self, node: Hash, request: Request) -> Call // A
    {
        let crashed = self.crashed.lock().unwrap().contains(&self.local);
        let slice = matches!(request, Request::PutSlice(_) | Request::PutHandedOffSlice(_));
        if crashed || (slice && node == self.slow) {
            let wait = if crashed { Duration::ZERO } else { Duration::from_millis(300) };
            return Box::pin(async move {
                tokio::time::sleep(wait).await;
                Err(TransportError::Unreachable { node, cause: Unreachable::TimedOut })
            });
        }
        self.cluster.call(node, request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_acknowledged_only_once_every_slice_is_stored() // A
{
    // Seven nodes at 4+2; every slice sent to node 5 times out, so a
    // chunk homed there is written only once its slice is handed off.
    let plain = Cluster::new(7, EngineConfig { erasure: Some(Erasure::new(4, 2)), ..small_chunks() });
    let crashed = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let engines: Vec<Engine<Unsteady, MemoryView>> = plain
        .nodes
        .iter()
        .map(|id| {
            let transport = Unsteady {
                cluster: plain.transport.clone(),
                local: *id,
                slow: plain.nodes[5],
                crashed: crashed.clone(),
            };
            let view = Arc::new(plain.transport.view(*id));
            let config = EngineConfig { erasure: Some(Erasure::new(4, 2)), ..small_chunks() };
            Engine::new(Arc::new(transport), view, test_keys(), config).unwrap()
        })
        .collect();
    let objects: Vec<(String, Vec<u8>)> =
        (0..3).map(|i| (format!("object-{i}"), random_bytes(1_500_000 + i * 1000, 900 + i as u64))).collect();
    for (key, data) in &objects {
        put(&engines[0], key, data).await;
    }

    // The writer dies the moment its last write is answered, and node 1
    // with it: two losses, within the parity. Whatever the writer still
    // had on its way dies with it.
    crashed.lock().unwrap().insert(plain.nodes[0]);
    plain.transport.set_down(plain.nodes[0], true);
    plain.transport.set_down(plain.nodes[1], true);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (key, data) in &objects {
        let back = read_all(&engines[2], key).await.unwrap_or_else(|e| panic!("{key} after two losses: {e}"));
        assert!(back == *data, "{key} read back differs");
    }
}

/// Two writers racing on the same bytes leave replicas holding different
/// sealings of one chunk, each with its own slices. A slice lost from the
/// sealing a later replica holds is rebuilt by that replica, although an
/// earlier one holds a manifest of the chunk (of the other sealing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sealing_of_a_chunk_is_repaired_by_a_replica_that_holds_it() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let data = random_bytes(300_000, 77);
    let stored = put(&cluster.engines[0], "raced", &data).await;
    let store_of = |node: &Hash| cluster.transport.store(node).unwrap();
    let layout = store_of(&cluster.nodes[0]).layout();
    let (chunk, first) = stored
        .blob
        .chunks
        .iter()
        .find_map(|chunk| {
            let replicas = layout.hash_replicas(&chunk.id).holding;
            store_of(&replicas[0]).get_chunk(&chunk.id).unwrap().map(|manifest| (*chunk, manifest))
        })
        .expect("a chunk stored apart");
    let replicas = layout.hash_replicas(&chunk.id).holding;
    assert_eq!(replicas.len(), 3);

    // Another writer's sealing of the same bytes, held by the last replica,
    // its first slice lost.
    let plain = data[chunk.offset as usize..chunk.offset as usize + chunk.len as usize].to_vec();
    let params = SealParams { erasure: first.erasure, zstd_level: 1 };
    let other = seal::seal_chunk(chunk.id, plain, params, &test_keys().recipients).unwrap();
    assert_ne!(other.manifest.slices, first.slices);
    let homes = placement::slice_homes(&chunk.id, other.slices.len(), &layout.placing_members());
    for (index, slice) in other.slices.iter().enumerate().skip(1) {
        store_of(&homes[index]).put_slice(slice, &chunk.id).unwrap();
    }
    store_of(&replicas[2]).put_chunk(&other.manifest).unwrap();

    for engine in &cluster.engines {
        engine.repair_chunks().await.unwrap();
    }
    for (sealing, slices) in [("the earlier replicas'", &first.slices), ("the last replica's", &other.manifest.slices)]
    {
        for (index, slice) in slices.iter().enumerate() {
            let held = store_of(&homes[index]).holds_slices(&[*slice]).unwrap();
            assert_eq!(held, vec![true], "slice {index} of {sealing} sealing is not at its home");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storing_the_same_64_mib_twice_adds_almost_nothing() // A
{
    let cluster = Cluster::new(1, EngineConfig::default());
    let engine = &cluster.engines[0];
    let data = random_bytes(64 << 20, 64);
    put(engine, "first", &data).await;
    let after_first = cluster.slice_bytes();
    assert!(after_first >= 64 << 20, "incompressible data is stored whole: {after_first}");
    put(engine, "second", &data).await;
    assert_eq!(cluster.slice_bytes(), after_first, "a second copy must not store any slice");
    assert_eq!(read_all(engine, "second").await.unwrap(), data);

    let mut edited = data[..32 << 20].to_vec();
    edited.extend(random_bytes(4096, 4096));
    edited.extend_from_slice(&data[32 << 20..]);
    put(engine, "edited", &edited).await;
    let added = cluster.slice_bytes() - after_first;
    assert!(added < (edited.len() as u64) / 10, "a 4 KiB insert added {added} bytes");
    assert_eq!(read_all(engine, "edited").await.unwrap(), edited);
}

/// Every file under `dir`, concatenated per file.
fn files_under(dir: &Path) -> Vec<Vec<u8>> // A
{
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(std::fs::read(&path).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_window_reaches_the_disk() // A
{
    let cluster = Cluster::new(1, EngineConfig::default());
    let data = random_bytes(2 << 20, 5);
    put(&cluster.engines[0], "secret", &data).await;
    cluster.transport.store(&cluster.nodes[0]).unwrap().sync().unwrap();

    let mut windows: HashMap<u64, Vec<usize>> = HashMap::new();
    for start in 0..=data.len() - 32 {
        let prefix = u64::from_le_bytes(data[start..start + 8].try_into().unwrap());
        windows.entry(prefix).or_default().push(start);
    }
    let files = files_under(cluster._dirs[0].path());
    let total: usize = files.iter().map(Vec::len).sum();
    assert!(total > data.len(), "the store holds the object somewhere ({total} bytes on disk)");
    for file in files {
        for at in 0..file.len().saturating_sub(31) {
            let prefix = u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
            if let Some(starts) = windows.get(&prefix) {
                for start in starts {
                    assert_ne!(&file[at..at + 32], &data[*start..*start + 32], "plaintext at file offset {at}");
                }
            }
        }
    }
}

/// Damage slice `index` of `chunk` as bit rot would, keeping its hash;
/// returns that hash.
fn flip_a_bit(store: &LocalStore, chunk: &Hash, index: usize) -> Hash // A
{
    let manifest = store.get_chunk(chunk).unwrap().unwrap();
    let hash = manifest.slices[index];
    let mut slice = store.get_slice(&hash).unwrap().unwrap();
    slice.payload[7] ^= 0x40;
    store.remove_slice(&hash).unwrap();
    store.put_slice(&slice, chunk).unwrap();
    hash
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_missing_slices_give_errors_that_name_them() // A
{
    let cluster = Cluster::new(1, small_chunks());
    let engine = &cluster.engines[0];
    let data = random_bytes(100_000, 9);
    let stored = put(engine, "fragile", &data).await;
    let store = cluster.transport.store(&cluster.nodes[0]).unwrap();
    let chunk = stored.blob.chunks[0].id;

    // Bytes flipped on disk: the slice no longer matches its hash.
    let slice_hash = flip_a_bit(&store, &chunk, 0);
    let error = read_all(engine, "fragile").await.unwrap_err().to_string();
    assert!(error.contains(&slice_hash.to_hex()) || error.contains(&chunk.to_hex()), "{error}");

    // The slice gone entirely.
    store.remove_slice(&slice_hash).unwrap();
    let error = read_all(engine, "fragile").await.unwrap_err().to_string();
    assert!(error.contains(&chunk.to_hex()), "{error}");

    // A reader holding another data key cannot open anything.
    let stranger_keys = NodeKeys { data_pair: DataKeyPair::from_secret_bytes([8; 32]), ..test_keys() };
    let other = Cluster::new(1, small_chunks());
    let writer = &other.engines[0];
    put(writer, "sealed", &data).await;
    let view = Arc::new(other.transport.view(other.nodes[0]));
    let stranger = Engine::new(Arc::new(other.transport.clone()), view, stranger_keys, small_chunks()).unwrap();
    let error = read_all(&stranger, "sealed").await.unwrap_err().to_string();
    assert!(error.contains("no wrapped key"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_with_parity_reads_past_a_damaged_slice() // A
{
    let cluster = Cluster::new(1, EngineConfig { erasure: Some(Erasure::new(4, 2)), ..small_chunks() });
    let engine = &cluster.engines[0];
    let data = random_bytes(100_000, 10);
    let stored = put(engine, "rotted", &data).await;
    assert_eq!(read_all(engine, "rotted").await.unwrap(), data, "all four data slices read into one buffer");
    let store = cluster.transport.store(&cluster.nodes[0]).unwrap();
    let chunk = stored.blob.chunks[0].id;
    for index in [1, 3] {
        flip_a_bit(&store, &chunk, index);
    }
    assert_eq!(read_all(engine, "rotted").await.unwrap(), data, "two damaged data slices, two parity slices");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_from_one_head_become_two_heads() // A
{
    let cluster = Cluster::new(1, small_chunks());
    let engine = &cluster.engines[0];
    let first = put(engine, "doc", b"v1").await;
    let mut left = PutRequest::new("bucket", "doc");
    left.parents = Some(vec![first.hash]);
    let mut right = left.clone();
    right.user_metadata.insert("writer".into(), "right".into());
    let (a, b) =
        tokio::join!(engine.put_object(left, body(b"left edit")), engine.put_object(right, body(b"right edit")));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut heads: Vec<Hash> = engine.heads("bucket", "doc").await.unwrap().iter().map(|h| h.version).collect();
    heads.sort();
    let mut expected = vec![a.hash, b.hash];
    expected.sort();
    assert_eq!(heads, expected, "both edits stay visible as heads");
    let latest = engine.latest("bucket", "doc").await.unwrap().unwrap();
    let newest = if (a.blob.created, a.hash) > (b.blob.created, b.hash) { a } else { b };
    assert_eq!(latest.hash, newest.hash);
}

mod property {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn any_content_of_any_size_round_trips(seed in any::<u64>(), len in 0usize..1_500_000, text in any::<bool>()) { // A
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let back = runtime.block_on(async {
                let cluster = Cluster::new(3, small_chunks());
                let data = if text { text_bytes(len) } else { random_bytes(len, seed) };
                let stored = put(&cluster.engines[(seed % 3) as usize], "p", &data).await;
                prop_assert_eq!(stored.blob.size, len as u64);
                let back = read_all(&cluster.engines[((seed + 1) % 3) as usize], "p").await.unwrap();
                Ok((back, data))
            })?;
            prop_assert!(back.0 == back.1);
        }

        /// However a body is split into parts, the completed object's
        /// chunks are the ones one PUT of the same bytes makes, whether its
        /// junctions were cut ahead on the completing node (bit set in
        /// `ahead`), on another node, or not at all, and whether a part was
        /// written on the node that wrote the part before it (bit set in
        /// `led`: chunked from that part's last chunk) or on another.
        #[test]
        fn parts_completed_cut_like_one_stream(seed in any::<u64>(), len in 1usize..1_200_000, cuts in proptest::collection::vec(1usize..400_000, 0..8), text in any::<bool>(), ahead in any::<u8>(), led in any::<u8>()) { // A
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let outcome = runtime.block_on(async {
                let cluster = Cluster::new(3, small_chunks());
                let data = if text { text_bytes(len) } else { random_bytes(len, seed) };
                let whole = put(&cluster.engines[0], "whole", &data).await;
                let mut bounds: Vec<usize> = cuts.iter().map(|c| c % len).filter(|c| *c > 0).collect();
                bounds.sort_unstable();
                bounds.dedup();
                bounds.push(len);
                let mut parts = Vec::new();
                let mut from = 0;
                for (number, to) in bounds.into_iter().enumerate() {
                    let writer = if led & (1 << number) != 0 { 0 } else { number % 3 };
                    let part = ouroboros_core::PartOf { upload: "upload".into(), number: number as u16 + 1 };
                    let kind = ouroboros_core::BodyKind::Part(part);
                    let (written, ()) = cluster.engines[writer].write_body(body(&data[from..to]), kind, ()).await.unwrap();
                    parts.push(written.into_part(number as u16 + 1, 0, Default::default()));
                    from = to;
                }
                let count = parts.len();
                for (junction, pair) in parts.windows(2).enumerate() {
                    let cutting = if ahead & (1 << junction) != 0 { 1 } else { junction % 3 };
                    cluster.engines[cutting].prepare_junction(&pair[0], &pair[1]).await;
                }
                let stitched = cluster.engines[1].commit_parts(PutRequest::new("bucket", "parts"), parts).await.unwrap();
                let back = read_all(&cluster.engines[2], "parts").await.unwrap();
                Ok::<_, TestCaseError>((whole.blob.chunks, stitched.blob.chunks, back == data, count))
            })?;
            let (whole, stitched, same_bytes, count) = outcome;
            prop_assert!(same_bytes, "the completed object's bytes differ");
            prop_assert_eq!(stitched, whole, "{} parts", count);
        }
    }
}

/// Write `data` split at `bounds` as parts of one upload on `engine`, all
/// at once (each part waits for the one before it to end, and is chunked
/// from that part's last chunk); the part records.
async fn write_parts_at_once(engine: &TestEngine, data: &[u8], bounds: &[usize]) -> Vec<ouroboros_core::PartRecord> // A
{
    use ouroboros_core::{BodyKind, PartOf};
    let mut starts = vec![0];
    starts.extend_from_slice(bounds);
    let ends = bounds.iter().copied().chain([data.len()]);
    let writes = starts.into_iter().zip(ends).enumerate().map(|(index, (from, to))| async move {
        let part = PartOf { upload: "at once".into(), number: index as u16 + 1 };
        let (written, ()) = engine.write_body(body(&data[from..to]), BodyKind::Part(part), ()).await.unwrap();
        written.into_part(index as u16 + 1, 0, Default::default())
    });
    futures::future::join_all(writes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_sent_at_once_are_chunked_as_one_stream_and_need_no_cut() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let engine = &cluster.engines[0];
    let data = random_bytes(1_500_000, 21);
    let whole = put(engine, "whole", &data).await;
    let parts = write_parts_at_once(engine, &data, &[300_000, 700_000, 1_100_000]).await;
    // Every part after the first was led in from the one before.
    assert!(
        parts[1..].iter().all(|part| part.lead.is_some()),
        "{:?}",
        parts.iter().map(|p| p.lead).collect::<Vec<_>>()
    );
    let stitched = engine.commit_parts(PutRequest::new("bucket", "parts"), parts.clone()).await.unwrap();
    assert_eq!(stitched.blob.chunks, whole.blob.chunks);
    assert!(read_all(&cluster.engines[2], "parts").await.unwrap() == data);

    // Completed without part 2, part 3 no longer follows the part it was
    // led in from: its own bytes are cut again, as one PUT of what the
    // object holds would cut them.
    let skipping: Vec<_> = [&parts[0], &parts[2], &parts[3]].into_iter().cloned().collect();
    let without = engine.commit_parts(PutRequest::new("bucket", "without-2"), skipping).await.unwrap();
    let expected: Vec<u8> = [&data[..300_000], &data[700_000..]].concat();
    assert_eq!(without.blob.chunks, put(engine, "without-2-whole", &expected).await.blob.chunks);
    assert!(read_all(&cluster.engines[1], "without-2").await.unwrap() == expected);
    // And an object that starts with a part led in from one it lacks.
    let from_second = engine.commit_parts(PutRequest::new("bucket", "from-2"), parts[1..].to_vec()).await.unwrap();
    let expected = &data[300_000..];
    assert_eq!(from_second.blob.chunks, put(engine, "from-2-whole", expected).await.blob.chunks);
    assert!(read_all(&cluster.engines[2], "from-2").await.unwrap() == expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_tib_object_of_ten_thousand_parts_is_representable() // A
{
    use ouroboros_core::{ChunkRef, PartRecord};
    let cluster = Cluster::new(1, EngineConfig::default());
    let engine = &cluster.engines[0];
    // Zeros are cut at the 4 MiB maximum: every chunk is the same chunk, so
    // terabytes of references cost no storage.
    let (zeros, ()) =
        engine.write_body(body(&vec![0u8; 16 << 20]), ouroboros_core::BodyKind::Object, ()).await.unwrap();
    let chunk = zeros.chunks[0];
    assert!(zeros.chunks.iter().all(|c| c.id == chunk.id && c.len == chunk.len), "{:?}", zeros.chunks);
    let chunk_len = chunk.len as u64;
    const TIB: u64 = 1 << 40;
    let parts = 10_000u64;
    let per_part = 5 * TIB / parts / chunk_len;
    let part_size = per_part * chunk_len;
    let records: Vec<PartRecord> = (1..=parts)
        .map(|number| PartRecord {
            number: number as u16,
            etag: "0123456789abcdef0123456789abcdef".into(),
            size: part_size,
            created: 0,
            chunks: (0..per_part).map(|i| ChunkRef { id: chunk.id, offset: i * chunk_len, len: chunk.len }).collect(),
            checksums: Default::default(),
            lead: None,
        })
        .collect();
    let stored = engine.commit_parts(PutRequest::new("bucket", "huge"), records).await.unwrap();
    let size = parts * part_size;
    assert!(size > 5 * TIB - 5 * TIB / 100 && size <= 5 * TIB, "{size}");
    assert_eq!(stored.blob.size, size);
    assert!(stored.blob.etag.ends_with("-10000"), "{}", stored.blob.etag);
    assert!(stored.blob.chunks.is_empty() && stored.blob.chunk_lists.len() > 1);
    let store = cluster.transport.store(&cluster.nodes[0]).unwrap();
    let record = store.get_blob_bytes(&stored.hash).unwrap().unwrap();
    assert!(record.len() < 64 << 10, "the blob record is {} bytes", record.len());

    // Bytes anywhere read back: the start, the end, across a part boundary
    // and across the boundary of two chunk lists.
    let latest = engine.latest("bucket", "huge").await.unwrap().unwrap();
    let list_edge = stored.blob.chunk_lists[1].offset;
    for range in [0..10, size - 10..size, part_size - 5..part_size + 5, list_edge - 7..list_edge + 9] {
        let back = read_range(engine, &latest, range.clone()).await.unwrap();
        assert_eq!(back, vec![0u8; (range.end - range.start) as usize], "{range:?}");
    }
    assert_eq!(store.chunk_referrers(&chunk.id).unwrap(), vec![stored.hash]);
    engine.forget_version("bucket", "huge", &stored.hash).await.unwrap();
    assert!(store.chunk_referrers(&chunk.id).unwrap().is_empty(), "forgetting it drops every reference");
}

/// Run a garbage-collection pass on every node; the total freed.
async fn collect_everywhere(cluster: &Cluster, claimed_before: u64) -> usize // A
{
    let mut freed = 0;
    for engine in &cluster.engines {
        freed += engine.collect_garbage(claimed_before).await.unwrap().chunks_freed;
    }
    freed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_frees_exactly_the_unreferenced_chunks() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let engine = &cluster.engines[0];
    let shared = random_bytes(1 << 20, 11);
    let unique = random_bytes(1 << 20, 12);
    let first = put(engine, "shared-a", &shared).await;
    put(engine, "shared-b", &shared).await;
    let gone = put(engine, "unique", &unique).await;
    let before = cluster.slice_bytes();

    // Nothing is garbage yet.
    assert_eq!(collect_everywhere(&cluster, ouroboros_core::now_nanos()).await, 0);
    engine.forget_version("bucket", "shared-a", &first.hash).await.unwrap();
    engine.forget_version("bucket", "unique", &gone.hash).await.unwrap();
    // A sweep that began before the chunks were last stored spares them.
    assert_eq!(collect_everywhere(&cluster, first.blob.created - 1).await, 0);
    let freed = collect_everywhere(&cluster, ouroboros_core::now_nanos()).await;
    assert_eq!(freed, gone.blob.chunks.len(), "exactly the chunks only the forgotten object used");
    let after = cluster.slice_bytes();
    assert!(before - after >= unique.len() as u64, "{before} → {after}: the unique object's slices are gone");
    assert_eq!(read_all(engine, "shared-b").await.unwrap(), shared, "a chunk still referenced stays readable");

    // Chunks referenced only by a table row (an upload part) are kept until
    // the row goes.
    let (written, ()) =
        engine.write_body(body(&random_bytes(300_000, 13)), ouroboros_core::BodyKind::Object, ()).await.unwrap();
    let home = ouroboros_core::Home { bucket: "bucket", key: "upload" };
    let chunks = written.chunks.iter().map(|c| c.id).collect();
    let row = ouroboros_core::TableRow { table: 9, key: b"part".to_vec(), value: b"x".to_vec(), chunks };
    engine.put_row(home, row).await.unwrap();
    assert_eq!(collect_everywhere(&cluster, ouroboros_core::now_nanos()).await, 0);
    engine.delete_row(home, 9, b"part".to_vec()).await.unwrap();
    // A row delete returns at its write quorum; until the third replica
    // has it too, that replica still names the chunks and they are spared.
    let mut freed = 0;
    for _ in 0..100 {
        freed += collect_everywhere(&cluster, ouroboros_core::now_nanos()).await;
        if freed >= written.chunks.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(freed, written.chunks.len(), "exactly the chunks only the deleted row named");
    assert_eq!(read_all(engine, "shared-b").await.unwrap(), shared);

    // A slice whose manifest never got written (a write cut short) goes too.
    let store = cluster.transport.store(&cluster.nodes[1]).unwrap();
    let orphan = ouroboros_core::SealedSlice::new([1; 12], vec![7; 100_000]);
    store.put_slice(&orphan, &Hash::of(b"a chunk whose manifest never came")).unwrap();
    let report = cluster.engines[1].collect_garbage(ouroboros_core::now_nanos()).await.unwrap();
    assert_eq!(report.orphan_slices_removed, 1);
    assert!(store.get_slice(&orphan.hash).unwrap().is_none());
    assert_eq!(read_all(engine, "shared-b").await.unwrap(), shared, "slices that manifests list stay");
}

/// Garbage collection goes on while a node is down: once the nodes that
/// answer have had a round of anti-entropy, the chunks only a forgotten
/// object used are freed. The node that was away keeps the forgotten
/// version's manifests, whose slices are gone; writing the same bytes
/// again never reuses them (the chunk is stored again), and reads pass
/// over them, through every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_goes_on_while_a_node_is_down_and_stale_manifests_are_never_used() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let engine = &cluster.engines[0];
    let shared = random_bytes(600_000, 21);
    let unique = random_bytes(900_000, 22);
    put(engine, "shared-a", &shared).await;
    let shared_b = put(engine, "shared-b", &shared).await;
    let gone = put(engine, "unique", &unique).await;
    let away = cluster.nodes[2];
    cluster.transport.set_down(away, true);
    engine.forget_version("bucket", "unique", &gone.hash).await.unwrap();
    engine.forget_version("bucket", "shared-b", &shared_b.hash).await.unwrap();
    let live = [0, 1];
    let engines = &cluster.engines;
    let collect = |cutoff: u64| async move {
        let mut freed = 0;
        for node in live {
            freed += engines[node].collect_garbage(cutoff).await.unwrap().chunks_freed;
        }
        freed
    };

    // Before the nodes that answer know their partitions in step, nothing goes.
    assert_eq!(collect(ouroboros_core::now_nanos()).await, 0);
    for node in live {
        let view = Arc::new(cluster.transport.view(cluster.nodes[node]));
        AntiEntropy::new(Arc::new(cluster.transport.clone()), view).round().await;
    }
    let freed = collect(ouroboros_core::now_nanos()).await;
    assert_eq!(freed, gone.blob.chunks.len(), "exactly the chunks only the forgotten object used");
    assert_eq!(read_all(engine, "shared-a").await.unwrap(), shared, "a chunk still referenced stays readable");

    // Node 2 comes back holding the freed chunks' manifests, whose slices
    // are gone. Writing the same bytes must not reuse them: the chunks are
    // stored again, and node 2's manifests replaced.
    let stale = cluster.transport.store(&away).unwrap();
    let chunk = gone.blob.chunks[0].id;
    let stale_manifest = stale.get_chunk(&chunk).unwrap().expect("node 2 kept the freed chunk's manifest");
    cluster.transport.set_down(away, false);
    let again = put(engine, "again", &unique).await;
    assert_ne!(stale.get_chunk(&chunk).unwrap(), Some(stale_manifest), "the chunk was reused, not stored again");
    for (node, reader) in cluster.engines.iter().enumerate() {
        assert_eq!(read_all(reader, "again").await.unwrap(), unique, "read through node {node}");
    }

    // Once more with node 2 away until after the bytes are stored again: it
    // keeps manifests whose slices are gone, and readers that ask it first
    // pass over them.
    cluster.transport.set_down(away, true);
    engine.forget_version("bucket", "again", &again.hash).await.unwrap();
    for node in live {
        let view = Arc::new(cluster.transport.view(cluster.nodes[node]));
        AntiEntropy::new(Arc::new(cluster.transport.clone()), view).round().await;
    }
    assert_eq!(collect(ouroboros_core::now_nanos()).await, gone.blob.chunks.len());
    put(engine, "third", &unique).await;
    cluster.transport.set_down(away, false);
    let first_replica = |id: &Hash| placement::partition_replicas(id.0[0], &placement::alike(&cluster.nodes))[0];
    assert!(
        gone.blob.chunks.iter().any(|c| first_replica(&c.id) == away),
        "some chunk's manifest is asked of node 2 first, so a reader meets a stale manifest"
    );
    for (node, reader) in cluster.engines.iter().enumerate() {
        assert_eq!(read_all(reader, "third").await.unwrap(), unique, "read through node {node}");
    }
}

/// One anti-entropy round on each of `nodes`, in turn.
async fn sync_round(cluster: &Cluster, nodes: &[Hash]) // A
{
    for node in nodes {
        let view = Arc::new(cluster.transport.view(*node));
        AntiEntropy::new(Arc::new(cluster.transport.clone()), view).round().await;
    }
}

/// A free reaches a write quorum of a chunk's manifest replicas: node 2,
/// away, keeps the freed manifest, whose slices are gone. Back, it gets the
/// freed sealing's tombstone by anti-entropy and drops the manifest,
/// instead of handing it back to the replicas that freed it (where a write
/// of the same bytes would then reuse a chunk that cannot be read). The
/// bytes written again are stored again, and read through every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_manifest_never_comes_back_through_anti_entropy() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let engine = &cluster.engines[0];
    let unique = random_bytes(900_000, 31);
    let doomed = put(engine, "doomed", &unique).await;
    let away = cluster.nodes[2];
    cluster.transport.set_down(away, true);
    engine.forget_version("bucket", "doomed", &doomed.hash).await.unwrap();
    sync_round(&cluster, &cluster.nodes[..2]).await;
    let mut freed = 0;
    for engine in &cluster.engines[..2] {
        freed += engine.collect_garbage(ouroboros_core::now_nanos()).await.unwrap().chunks_freed;
    }
    assert_eq!(freed, doomed.blob.chunks.len(), "the forgotten object's chunks were freed");
    let stale = cluster.transport.store(&away).unwrap();
    assert!(
        doomed.blob.chunks.iter().all(|chunk| stale.get_chunk(&chunk.id).unwrap().is_some()),
        "node 2 was away and kept the freed manifests"
    );

    cluster.transport.set_down(away, false);
    sync_round(&cluster, &cluster.nodes).await;
    sync_round(&cluster, &cluster.nodes).await;
    for (index, node) in cluster.nodes.iter().enumerate() {
        let store = cluster.transport.store(node).unwrap();
        let held = doomed.blob.chunks.iter().filter(|chunk| store.get_chunk(&chunk.id).unwrap().is_some()).count();
        assert_eq!(held, 0, "node {index} holds {held} freed manifests after anti-entropy");
    }
    put(engine, "again", &unique).await;
    for (node, reader) in cluster.engines.iter().enumerate() {
        assert_eq!(read_all(reader, "again").await.unwrap(), unique, "read through node {node}");
    }
}

/// A free that a replica refuses leaves no tombstone behind: the sweeper
/// of each chunk got its manifest back by anti-entropy (never claimed
/// there) while the others hold the writer's claims, as when a write is
/// still on its way to its blob. Each sweeper drops its copy and the free
/// stops at the others' claims; once it is withdrawn, no tombstone
/// spreads, every replica holds every manifest again, and a later pass,
/// past the claims, frees them all. Passes in between, whose cutoff is
/// still before the claims, leave the chunks alone: trying again would
/// drop each sweeper's copy for anti-entropy to bring back, pass after
/// pass, and the replicas would never be seen in step (a compose cluster
/// whose cut-off node failed a write, and so kept an unreferenced claimed
/// chunk, never healed that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_refused_by_a_claim_leaves_no_tombstone_to_spread() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let engine = &cluster.engines[0];
    let store = |node: &Hash| cluster.transport.store(node).unwrap();
    let cutoff = ouroboros_core::now_nanos();
    let doomed = put(engine, "doomed", &random_bytes(700_000, 51)).await;
    engine.forget_version("bucket", "doomed", &doomed.hash).await.unwrap();
    let layout = store(&cluster.nodes[0]).layout();
    for chunk in &doomed.blob.chunks {
        let sweeper = layout.hash_replicas(&chunk.id).holding[0];
        store(&sweeper).drop_moved_chunk(&chunk.id).unwrap();
    }
    sync_round(&cluster, &cluster.nodes).await;
    let mut freed = 0;
    for engine in &cluster.engines {
        freed += engine.collect_garbage(cutoff).await.unwrap().chunks_freed;
    }
    assert_eq!(freed, 0, "chunks claimed after the cutoff were freed");
    sync_round(&cluster, &cluster.nodes).await;
    sync_round(&cluster, &cluster.nodes).await;
    for (index, node) in cluster.nodes.iter().enumerate() {
        let held = doomed.blob.chunks.iter().filter(|c| store(node).get_chunk(&c.id).unwrap().is_some()).count();
        assert_eq!(held, doomed.blob.chunks.len(), "node {index} lost manifests to a free that was refused");
    }
    for _ in 0..3 {
        assert_eq!(collect_everywhere(&cluster, cutoff).await, 0, "chunks claimed after the cutoff were freed");
        for (index, node) in cluster.nodes.iter().enumerate() {
            let held = doomed.blob.chunks.iter().filter(|c| store(node).get_chunk(&c.id).unwrap().is_some()).count();
            assert_eq!(held, doomed.blob.chunks.len(), "node {index}: a refused free was tried again and dropped");
        }
    }
    let mut freed = 0;
    for engine in &cluster.engines {
        freed += engine.collect_garbage(ouroboros_core::now_nanos()).await.unwrap().chunks_freed;
    }
    assert_eq!(freed, doomed.blob.chunks.len(), "the chunks, past their claims, are freed");
}

/// A free by a build before freed sealings had tombstones left node 2
/// holding the manifests it missed, whose slices are gone, and nothing
/// stops anti-entropy from bringing them back to the replicas that
/// dropped them. A write of the same bytes then finds them on every
/// replica, but as manifests from another node: it checks their slices,
/// finds them gone, and stores the chunks again, which read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_freed_without_a_tombstone_is_checked_before_a_write_reuses_it() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let engine = &cluster.engines[0];
    let store = |node: &Hash| cluster.transport.store(node).unwrap();
    let data = random_bytes(900_000, 41);
    let first = put(engine, "first", &data).await;
    settle_slice_writes(&cluster).await;
    engine.forget_version("bucket", "first", &first.hash).await.unwrap();
    // What the older build's free did on nodes 0 and 1, with node 2 away:
    // the manifest dropped with no tombstone, and every slice removed.
    for chunk in &first.blob.chunks {
        let manifest = store(&cluster.nodes[2]).get_chunk(&chunk.id).unwrap().expect("node 2's manifest");
        for node in &cluster.nodes[..2] {
            store(node).drop_moved_chunk(&chunk.id).unwrap();
        }
        for node in &cluster.nodes {
            for slice in &manifest.slices {
                if store(node).holds_slices(&[*slice]).unwrap() == [true] {
                    store(node).remove_slice(slice).unwrap();
                }
            }
        }
    }
    sync_round(&cluster, &cluster.nodes).await;
    for (index, node) in cluster.nodes.iter().enumerate() {
        let held = first.blob.chunks.iter().filter(|c| store(node).get_chunk(&c.id).unwrap().is_some()).count();
        assert_eq!(held, first.blob.chunks.len(), "node {index} was brought the stale manifests");
    }

    put(engine, "again", &data).await;
    for (node, reader) in cluster.engines.iter().enumerate() {
        let read = read_all(reader, "again").await;
        assert!(read.as_deref().ok() == Some(data.as_slice()), "read through node {node}: {:?}", read.err());
    }
}

/// One step of a random history of a few keys.
#[derive(Debug, Clone)]
enum Step {
    Put {
        key: usize,
        null: bool,
    },
    /// A write whose parent is the second-newest version: a branch.
    Sibling {
        key: usize,
        null: bool,
    },
    /// A write naming every head: a merge.
    Merge {
        key: usize,
    },
    Delete {
        key: usize,
        null: bool,
    },
    Forget {
        key: usize,
        pick: usize,
    },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> // A
{
    use proptest::prelude::*;
    prop_oneof![
        3 => (0..3usize, any::<bool>()).prop_map(|(key, null)| Step::Put { key, null }),
        1 => (0..3usize, any::<bool>()).prop_map(|(key, null)| Step::Sibling { key, null }),
        1 => (0..3usize).prop_map(|key| Step::Merge { key }),
        1 => (0..3usize, any::<bool>()).prop_map(|(key, null)| Step::Delete { key, null }),
        1 => (0..3usize, any::<usize>()).prop_map(|(key, pick)| Step::Forget { key, pick }),
    ]
}

/// Apply a history, then check the DAG and its indexes on every node.
async fn check_history(steps: Vec<Step>) -> Result<(), String> // A
{
    let cluster = Cluster::new(3, small_chunks());
    let engine = &cluster.engines[0];
    let mut contents: HashMap<Hash, Vec<u8>> = HashMap::new();
    for (n, step) in steps.iter().enumerate() {
        let data = format!("step {n}: {step:?}").into_bytes();
        let (key, mut request) = match *step {
            Step::Put { key, null } | Step::Sibling { key, null } | Step::Delete { key, null } => {
                let mut request = PutRequest::new("b", format!("k{key}"));
                request.null_version = null;
                (key, request)
            }
            Step::Merge { key } => (key, PutRequest::new("b", format!("k{key}"))),
            Step::Forget { key, pick } => {
                let versions = engine.key_versions("b", &format!("k{key}")).await.map_err(|e| e.to_string())?;
                if let Some(version) = versions.get(pick % versions.len().max(1)) {
                    engine
                        .forget_version("b", &format!("k{key}"), &version.version)
                        .await
                        .map_err(|e| e.to_string())?;
                    contents.remove(&version.version);
                }
                continue;
            }
        };
        let name = format!("k{key}");
        match step {
            Step::Sibling { .. } => {
                let versions = engine.key_versions("b", &name).await.map_err(|e| e.to_string())?;
                let Some(older) = versions.get(1) else { continue };
                request.parents = Some(vec![older.version]);
            }
            Step::Merge { .. } => {
                let heads = engine.heads("b", &name).await.map_err(|e| e.to_string())?;
                request.parents = Some(heads.iter().map(|h| h.version).collect());
            }
            Step::Delete { .. } => request.kind = ouroboros_core::BlobKind::DeleteMarker,
            _ => {}
        }
        let body = if request.kind == ouroboros_core::BlobKind::DeleteMarker { Vec::new() } else { data };
        let stored = engine.put_object(request, futures::stream::iter(vec![Ok(Bytes::from(body.clone()))])).await;
        let stored = stored.map_err(|e| e.to_string())?;
        contents.insert(stored.hash, body);
    }
    // Writes and forgets return at their write quorum and reach the last
    // replica in the background (or by anti-entropy): every node's store is
    // looked at below, so let the replicas agree first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..4 {
        let mut differing = 0;
        for node in &cluster.nodes {
            let view = Arc::new(cluster.transport.view(*node));
            differing += AntiEntropy::new(Arc::new(cluster.transport.clone()), view).round().await.partitions_differing;
        }
        if differing == 0 {
            break;
        }
    }
    for key in 0..3 {
        let name = format!("k{key}");
        let heads = engine.heads("b", &name).await.map_err(|e| e.to_string())?;
        let versions = engine.key_versions("b", &name).await.map_err(|e| e.to_string())?;
        for head in &heads {
            if !versions.iter().any(|v| v.version == head.version) {
                return Err(format!("{name}: head {} is not a listed version", head.version));
            }
            for node in &cluster.nodes {
                let store = cluster.transport.store(node).unwrap();
                if !store.children(&head.version).map_err(|e| e.to_string())?.is_empty() {
                    return Err(format!("{name}: head {} has children", head.version));
                }
            }
        }
        if let Some(newest) = versions.first() {
            if !heads.iter().any(|h| h.version == newest.version) {
                return Err(format!("{name}: the newest version {} is not a head", newest.version));
            }
            let latest = engine.latest("b", &name).await.map_err(|e| e.to_string())?;
            if latest.map(|l| l.hash) != Some(newest.version) {
                return Err(format!("{name}: reads do not see the newest version"));
            }
        } else if !heads.is_empty() {
            return Err(format!("{name}: heads without versions"));
        }
        let newest_null = versions.iter().find(|v| v.entry.null_version).map(|v| v.version);
        for version in &versions {
            let is_head = heads.iter().any(|h| h.version == version.version);
            if version.entry.null_version && Some(version.version) != newest_null && !is_head {
                return Err(format!("{name}: replaced null version {} is still listed", version.version));
            }
            let Some(expected) = contents.get(&version.version) else {
                return Err(format!("{name}: version {} was forgotten or never written", version.version));
            };
            let blob = engine.get_blob("b", &name, &version.version).await.map_err(|e| e.to_string())?;
            let blob = blob.ok_or_else(|| format!("{name}: listed version {} has no blob", version.version))?;
            let back: Vec<Bytes> = engine.read(&blob, 0..u64::MAX).try_collect().await.map_err(|e| e.to_string())?;
            if back.concat() != *expected {
                return Err(format!("{name}: version {} reads back wrong", version.version));
            }
        }
    }
    Ok(())
}

mod history {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        #[test]
        fn any_history_of_puts_deletes_merges_and_forgets_keeps_the_dag_consistent(steps in proptest::collection::vec(step(), 1..40)) { // A
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let outcome = runtime.block_on(check_history(steps));
            prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
        }
    }
}

/// A replica that was down for two writes answers a read with the old head
/// next to one that has the new: the read shows only the new head, and the
/// replica behind is sent both versions it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_settles_stale_heads_and_repairs_the_replica_behind() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let engine = &cluster.engines[0];
    let (behind, away) = (cluster.nodes[2], cluster.nodes[1]);
    let first = put(engine, "doc", b"one").await;
    cluster.transport.set_down(behind, true);
    let second = put(engine, "doc", b"two").await;
    let third = put(engine, "doc", b"three").await;
    cluster.transport.set_down(behind, false);
    let stale = cluster.transport.store(&behind).unwrap();
    assert_eq!(stale.heads("bucket", "doc").unwrap()[0].version, first.hash, "the replica missed both writes");

    // The read quorum is now this node and the one behind.
    cluster.transport.set_down(away, true);
    let heads = engine.heads("bucket", "doc").await.unwrap();
    assert_eq!(heads.iter().map(|h| h.version).collect::<Vec<_>>(), vec![third.hash]);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let repaired = stale.heads("bucket", "doc").unwrap().iter().map(|h| h.version).collect::<Vec<_>>();
        if repaired == vec![third.hash] && stale.get_blob(&second.hash).unwrap().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the replica behind was not repaired: heads {repaired:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // With the up-to-date replica gone too, no read quorum is left.
    cluster.transport.set_down(behind, true);
    let error = engine.heads("bucket", "doc").await.unwrap_err();
    assert_eq!(error.class(), ouroboros_core::FailureClass::Unavailable, "{error}");
    let listing = engine.list_objects("bucket", "", ouroboros_core::ListStart::Beginning, 10).await.unwrap_err();
    assert_eq!(listing.class(), ouroboros_core::FailureClass::Unavailable, "{listing}");
    cluster.transport.set_down(behind, false);
    cluster.transport.set_down(away, false);
    assert_eq!(read_all(engine, "doc").await.unwrap(), b"three");
}

/// Rows are last-writer-wins registers with tombstones: written and
/// deleted at quorum while a replica is away, read at a read quorum, and
/// the replica that missed a delete cannot bring the row back into a read
/// or a scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_stays_deleted_when_the_replica_that_missed_it_answers() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let engine = &cluster.engines[0];
    let home = ouroboros_core::Home { bucket: "bucket", key: "upload" };
    let row = |key: &str, value: &str| ouroboros_core::TableRow {
        table: 9,
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        chunks: Vec::new(),
    };
    engine.put_row(home, row("a", "one")).await.unwrap();
    engine.put_row(home, row("b", "kept")).await.unwrap();
    let (behind, away) = (cluster.nodes[2], cluster.nodes[1]);

    // Node 2 misses an overwrite and a delete.
    cluster.transport.set_down(behind, true);
    engine.put_row(home, row("a", "two")).await.unwrap();
    engine.delete_row(home, 9, b"b".to_vec()).await.unwrap();
    cluster.transport.set_down(behind, false);
    let stale = cluster.transport.store(&behind).unwrap();
    assert_eq!(stale.get_row(9, b"b").unwrap().and_then(|v| v.value), Some(b"kept".to_vec()));

    // The read quorum is now node 0 and the replica behind.
    cluster.transport.set_down(away, true);
    assert_eq!(engine.get_row(home, 9, b"a".to_vec()).await.unwrap(), Some(b"two".to_vec()));
    assert_eq!(engine.get_row(home, 9, b"b".to_vec()).await.unwrap(), None, "a deleted row came back");
    let scanned = engine.scan_rows(9, b"", b"", 10).await.unwrap();
    assert_eq!(scanned, vec![(b"a".to_vec(), b"two".to_vec())]);
    // A late copy of the old version changes nothing where the tombstone is.
    let old = ouroboros_core::RowVersion::live(1, b"kept".to_vec(), Vec::new());
    let fresh = cluster.transport.store(&cluster.nodes[0]).unwrap();
    assert!(!fresh.put_row(9, b"b", &old, None).unwrap());
    assert_eq!(engine.get_row(home, 9, b"b".to_vec()).await.unwrap(), None);

    // Without a read quorum, a row read is refused rather than guessed.
    cluster.transport.set_down(behind, true);
    let error = engine.get_row(home, 9, b"a".to_vec()).await.unwrap_err();
    assert_eq!(error.class(), ouroboros_core::FailureClass::Unavailable, "{error}");
}

/// Anti-entropy: a replica that was down while versions were written and
/// forgotten and rows changed catches up in one round, forgotten versions
/// stay forgotten on every replica, and a round between replicas that
/// agree exchanges nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_brings_a_returning_replica_level_and_deletes_stay_deleted() // A
{
    let (cluster, doomed, written) = writes_while_node_2_is_away(40, |i| format!("value {i}").into_bytes()).await;
    let (engine, behind) = (&cluster.engines[0], cluster.nodes[2]);
    forget_and_write_a_row(&cluster, &doomed, 0).await;
    cluster.transport.set_down(behind, false);

    let stale = cluster.transport.store(&behind).unwrap();
    assert!(stale.get_blob(&doomed.hash).unwrap().is_some(), "node 2 missed the forget");
    let syncer = |node: usize| {
        let view = Arc::new(cluster.transport.view(cluster.nodes[node]));
        AntiEntropy::new(Arc::new(cluster.transport.clone()), view)
    };
    let report = syncer(2).round().await;
    assert!(report.items_received >= 42, "{report:?}");
    assert_eq!(report.unreachable, 0);

    for version in &written {
        assert!(stale.get_blob(&version.hash).unwrap().is_some(), "{} not caught up", version.blob.key);
    }
    assert!(stale.get_blob(&doomed.hash).unwrap().is_none(), "the forgotten version is back on node 2");
    assert!(stale.is_forgotten(&doomed.hash).unwrap());
    assert_eq!(stale.get_row(9, b"r").unwrap().and_then(|v| v.value), Some(b"v".to_vec()));
    // A late copy of the forgotten version changes nothing anywhere.
    let (_, bytes) = doomed.blob.encode_with_hash();
    stale.put_blob(&bytes).unwrap();
    assert!(stale.get_blob(&doomed.hash).unwrap().is_none());
    assert!(engine.heads("bucket", "doomed").await.unwrap().is_empty());

    // Every replica of every partition now holds the same tree, and a
    // round finds nothing to do.
    let all: Vec<u8> = (0..=u8::MAX).collect();
    let roots: Vec<_> =
        cluster.nodes.iter().map(|n| cluster.transport.store(n).unwrap().sync_roots(&all).unwrap()).collect();
    assert!(roots.windows(2).all(|pair| pair[0] == pair[1]), "replicas differ after a round");
    for node in 0..3 {
        let report = syncer(node).round().await;
        assert_eq!((report.partitions_differing, report.items_received, report.items_sent), (0, 0, 0), "{report:?}");
        assert_eq!(cluster.transport.store(&cluster.nodes[node]).unwrap().partitions_unsynced(), Some(0));
    }
}

/// Hinted handoff: the writes a replica missed while down are kept by the
/// node that wrote them and handed over once it is back, with no
/// anti-entropy round (but for the chunk manifests, which are never
/// hinted); forgets and deletes among them stay forgotten; the
/// slices it should have taken, doubled up on other nodes meanwhile, are
/// taken home by the nodes that took them, each from the hint it keeps
/// with the copy, even while the writer is down, so that any one node can
/// then be lost; and hints for a node that leaves the layout are dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_replica_missed_while_down_are_handed_over_when_it_is_back() // A
{
    let (cluster, doomed, written) = writes_while_node_2_is_away(20, |i| random_bytes(3000 + i * 10, i as u64)).await;
    let (engine, behind) = (&cluster.engines[0], cluster.nodes[2]);
    forget_and_write_a_row(&cluster, &doomed, 1).await;

    // Write hints are kept off the write's path: wait for them (a blob per
    // version, the forget's tombstone, the row, never a chunk manifest).
    // Node 2's slice of every chunk was handed to node 0 or node 1, which
    // stored a hint with it before the write went on.
    let hints = |node: usize| {
        let kept =
            cluster.transport.store(&cluster.nodes[node]).unwrap().hints().for_node(&behind, None, 10_000).unwrap();
        let slices = kept.iter().filter(|(_, hint)| matches!(hint, Hinted::Held(_))).count();
        assert!(!kept.iter().any(|(_, hint)| matches!(hint, Hinted::Slice(_))), "a hint names another holder");
        (kept.len() - slices, slices)
    };
    for _ in 0..100 {
        if hints(0).0 >= 21 && hints(1).0 >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (writes, slices) = (hints(0).0, hints(0).1 + hints(1).1);
    assert_eq!((writes, hints(1).0), (21, 1), "write hints kept");
    assert!(slices >= 20, "a slice of each version's chunks handed off: {slices}");
    for (node, hint) in slice_hints(&cluster) {
        assert_eq!(node, behind, "a slice hint for another node than node 2");
        let held = cluster.transport.store(&hint.holder).unwrap().holds_slices(&[hint.slices[hint.index as usize]]);
        assert!(held.unwrap()[0], "chunk {}: the hint's holder lacks the slice", hint.chunk);
    }
    for node in 0..2 {
        let waiting = cluster.engines[node].hand_off_hints().await.unwrap();
        let kept = (hints(node).0 + hints(node).1) as u64;
        assert_eq!((waiting.handed, waiting.left), (0, kept), "node {node}: hints handed to a node seen down");
    }

    cluster.transport.set_down(behind, false);
    let stale = cluster.transport.store(&behind).unwrap();
    assert!(stale.get_blob(&written[0].hash).unwrap().is_none(), "node 2 had the writes before the hand-off");
    assert!(misplaced_slices(&cluster, &cluster.nodes) >= slices, "node 2 had its slices before the hand-off");
    assert_eq!(slices_away_from_home(&cluster), slices, "each handed-off slice is on one other node");
    // The writer, node 0, is down (it might have crashed right after its
    // writes): node 1 takes home the slices it holds all the same.
    cluster.transport.set_down(cluster.nodes[0], true);
    let on_1 = hints(1).1;
    assert!(on_1 > 0, "node 1 took none of node 2's slices");
    let report = cluster.engines[1].hand_off_hints().await.unwrap();
    assert_eq!((report.handed, report.left, report.dropped), (on_1 as u64 + 1, 0, 0), "node 1: {report:?}");
    assert_eq!(hints(1), (0, 0));
    assert_eq!(slices_away_from_home(&cluster), slices - on_1, "node 1 kept a copy it took home");
    cluster.transport.set_down(cluster.nodes[0], false);
    let report = engine.hand_off_hints().await.unwrap();
    assert!(report.handed > 0 && report.left == 0 && report.dropped == 0, "node 0: {report:?}");
    assert_eq!(hints(0), (0, 0));
    // Every slice is at its home, and at its home alone.
    assert_eq!(misplaced_slices(&cluster, &cluster.nodes), 0, "slices not taken home");
    assert_eq!(slices_away_from_home(&cluster), 0, "handed-off copies left behind");
    // So losing any one node leaves each chunk k = 2 slices: everything reads.
    for (lost, reader) in [(0, 1), (1, 2), (2, 0)] {
        cluster.transport.set_down(cluster.nodes[lost], true);
        for i in 0..20 {
            let back = read_all(&cluster.engines[reader], &format!("key-{i}")).await;
            let back = back.unwrap_or_else(|error| panic!("key-{i} with node {lost} down: {error}"));
            assert!(back == random_bytes(3000 + i * 10, i as u64), "key-{i} with node {lost} down");
        }
        cluster.transport.set_down(cluster.nodes[lost], false);
    }
    for version in &written {
        assert!(stale.get_blob(&version.hash).unwrap().is_some(), "{} not handed over", version.blob.key);
    }
    assert!(stale.get_blob(&doomed.hash).unwrap().is_none(), "the forgotten version is still on node 2");
    assert!(stale.is_forgotten(&doomed.hash).unwrap());
    assert_eq!(stale.get_row(9, b"r").unwrap().and_then(|v| v.value), Some(b"v".to_vec()));
    // Manifests are never hinted: node 2 gets those it missed from one
    // anti-entropy round, and every replica then holds the same tree.
    let view = Arc::new(cluster.transport.view(behind));
    AntiEntropy::new(Arc::new(cluster.transport.clone()), view).round().await;
    let all: Vec<u8> = (0..=u8::MAX).collect();
    let roots: Vec<_> =
        cluster.nodes.iter().map(|n| cluster.transport.store(n).unwrap().sync_roots(&all).unwrap()).collect();
    assert!(roots.windows(2).all(|pair| pair[0] == pair[1]), "replicas differ after the hand-off");

    // A node that is then removed from the layout: the writes it missed
    // are dropped, and the slice held for it goes to its new home.
    cluster.transport.set_down(behind, true);
    put(engine, "late", b"written while node 2 is down again").await;
    // Its blob, and node 2's slice of its chunk.
    let kept = || (hints(0).0, hints(0).1 + hints(1).1);
    for _ in 0..100 {
        if kept() == (1, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kept(), (1, 1), "the blob and a slice of its chunk");
    let (_, late) = slice_hints(&cluster).pop().expect("the late slice's hint");
    steward_of(&cluster, cluster.nodes[0], Duration::from_secs(3600)).set_state(behind, NodeState::Gone).await;
    let survivors = &cluster.nodes[..2];
    let placing = cluster.transport.store(&survivors[0]).unwrap().layout().placing_members();
    let home = placement::slice_homes(&late.chunk, late.slices.len(), &placing)[late.index as usize];
    let first = hand_off_everywhere(&cluster).await;
    // Where the new home is the holder, the slice is home already.
    let retargeted = u64::from(home != late.holder);
    assert_eq!((first.handed, first.dropped, first.retargeted), (0, 2 - retargeted, retargeted), "{first:?}");
    assert_eq!(kept(), (0, 0));
    let second = hand_off_everywhere(&cluster).await;
    assert_eq!((second.handed, second.left), (retargeted, 0), "{second:?}");
    assert!(slice_hints(&cluster).is_empty(), "a slice hint left");
    let slice = late.slices[late.index as usize];
    let holders: Vec<&Hash> =
        survivors.iter().filter(|n| cluster.transport.store(n).unwrap().holds_slices(&[slice]).unwrap()[0]).collect();
    assert_eq!(holders, [&home], "the late slice is at its new home alone");
}

/// Repair takes a handed-off slice home, but leaves the copy where it was
/// while the home would be the only holder of two of the chunk's slices:
/// losing the home would then cost the chunk two, one more than its parity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_keeps_a_handed_off_copy_while_the_home_would_hold_two_slices_alone() // A
{
    let data = |i: usize| random_bytes(3000 + i * 10, i as u64);
    let (cluster, _, _) = writes_while_node_2_is_away(20, data).await;
    let [n0, n1, n2] = [cluster.nodes[0], cluster.nodes[1], cluster.nodes[2]];
    let store = |node: &Hash| cluster.transport.store(node).expect("store");
    let held_on = |node: &Hash, slice: &Hash| store(node).holds_slices(&[*slice]).expect("holds")[0];
    let placing = store(&n0).layout().placing_members();
    let chunks = || {
        let ids = store(&n0).unclaimed_chunks(u64::MAX, None, usize::MAX).expect("chunks");
        let manifests = ids.iter().map(|id| store(&n0).get_chunk(id).expect("manifest").expect("listed"));
        manifests.map(|m| (placement::slice_homes(&m.id, m.slices.len(), &placing), m)).collect::<Vec<_>>()
    };
    // A write's last slice is stored off its path: wait for every one.
    for _ in 0..100 {
        if chunks().iter().all(|(_, m)| m.slices.iter().all(|s| held_on(&n0, s) || held_on(&n1, s))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.transport.set_down(n2, false);
    // Of each chunk whose node-2 slice went to node 0, node 1's slice is
    // now on node 2 alone, as if handed off there while node 1 was away.
    let mut doubled = Vec::new();
    for (homes, manifest) in chunks() {
        let at = |node: Hash| homes.iter().position(|home| *home == node).expect("one slice per node");
        let (of_2, of_1) = (manifest.slices[at(n2)], manifest.slices[at(n1)]);
        if !held_on(&n0, &of_2) {
            continue;
        }
        let slice = store(&n1).get_slice(&of_1).unwrap().expect("node 1's own slice");
        store(&n2).put_slice(&slice, &manifest.id).unwrap();
        store(&n1).remove_slice(&of_1).unwrap();
        doubled.push((manifest.id, of_2));
    }
    assert!(!doubled.is_empty(), "no chunk had its node-2 slice handed to node 0");

    // Node 1 is away: repair cannot tell whether it has its slice back, so
    // it takes node 2's slices home and keeps the copies on node 0.
    cluster.transport.set_down(n1, true);
    let (taken, _) = repair_everywhere(&cluster, &[n1]).await;
    assert!(taken >= doubled.len(), "{taken} slices taken home for {} chunks", doubled.len());
    for (chunk, of_2) in &doubled {
        assert!(held_on(&n2, of_2), "chunk {chunk}: its slice not taken home to node 2");
        assert!(held_on(&n0, of_2), "chunk {chunk}: the copy left node 0 while node 2 held two slices alone");
    }
    // So losing node 2 leaves every chunk two slices: everything reads.
    cluster.transport.set_down(n1, false);
    cluster.transport.set_down(n2, true);
    for i in 0..20 {
        let back = read_all(&cluster.engines[0], &format!("key-{i}")).await;
        assert!(back.as_deref().ok() == Some(data(i).as_slice()), "key-{i} with node 2 down: {:?}", back.err());
    }
}

/// Three nodes: a version written through node 0 before node 2 goes down
/// (to be forgotten while it is away), then `count` versions of `key-i`
/// holding `data(i)`, written while it is down.
async fn writes_while_node_2_is_away(count: usize, data: impl Fn(usize) -> Vec<u8>) -> NodeAway // A
{
    let cluster = Cluster::new(3, small_chunks());
    let doomed = put(&cluster.engines[0], "doomed", b"to be forgotten while node 2 is away").await;
    cluster.transport.set_down(cluster.nodes[2], true);
    let mut written = Vec::new();
    for i in 0..count {
        written.push(put(&cluster.engines[0], &format!("key-{i}"), &data(i)).await);
    }
    (cluster, doomed, written)
}

/// A cluster with node 2 down, the version to forget, the versions written.
type NodeAway = (Cluster, StoredBlob, Vec<StoredBlob>);

/// Forget `doomed` through node 0, and write a row through node `writer`.
async fn forget_and_write_a_row(cluster: &Cluster, doomed: &StoredBlob, writer: usize) // A
{
    cluster.engines[0].forget_version("bucket", "doomed", &doomed.hash).await.unwrap();
    let home = ouroboros_core::Home { bucket: "bucket", key: "upload" };
    let row = ouroboros_core::TableRow { table: 9, key: b"r".to_vec(), value: b"v".to_vec(), chunks: Vec::new() };
    cluster.engines[writer].put_row(home, row).await.unwrap();
}

/// A forget returns at its write quorum; a replica it has not reached yet
/// still holds the version, but reads of heads and listings through a
/// read quorum that includes that replica leave it out, because the other
/// answering replica holds its tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_a_replica_missed_is_hidden_from_heads_and_listings_at_once() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let engine = &cluster.engines[0];
    let older = put(engine, "doc", b"older").await;
    let newer = put(engine, "doc", b"newer, to be forgotten").await;
    let gone: Vec<StoredBlob> = vec![put(engine, "a", b"gone").await, put(engine, "b", b"gone too").await];
    let (behind, away) = (cluster.nodes[2], cluster.nodes[1]);
    cluster.transport.set_down(behind, true);
    engine.forget_version("bucket", "doc", &newer.hash).await.unwrap();
    for version in &gone {
        engine.forget_version("bucket", &version.blob.key, &version.hash).await.unwrap();
    }
    cluster.transport.set_down(behind, false);
    assert!(cluster.transport.store(&behind).unwrap().get_blob(&newer.hash).unwrap().is_some());

    // Reads now meet node 0 (tombstone) and node 2 (still the version).
    cluster.transport.set_down(away, true);
    let heads: Vec<Hash> = engine.heads("bucket", "doc").await.unwrap().iter().map(|h| h.version).collect();
    assert_eq!(heads, vec![older.hash], "the forgotten version is a head again");
    let versions: Vec<Hash> = engine.key_versions("bucket", "doc").await.unwrap().iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![older.hash], "the forgotten version is listed");
    let (listed, _) = engine.list_objects("bucket", "", ouroboros_core::ListStart::Beginning, 10).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.version).collect::<Vec<_>>(), vec![older.hash]);
    assert_eq!(read_all(engine, "doc").await.unwrap(), b"older");
    // Pages of one: the first is the live key past the forgotten ones, not
    // an empty page that reads as the end (a bucket that looks empty).
    let (first, _) = engine.list_objects("bucket", "", ouroboros_core::ListStart::Beginning, 1).await.unwrap();
    assert_eq!(first.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), ["doc"]);
    let start = ouroboros_core::VersionStart::Keys(ouroboros_core::ListStart::Beginning);
    let (first, _) = engine.list_versions("bucket", "", start, 1).await.unwrap();
    assert_eq!(first.iter().map(|v| v.version).collect::<Vec<_>>(), vec![older.hash]);
}

/// The engine's clock is the one it is given: a version written on a
/// simulated clock carries that clock's time, and the next one is later
/// even when the clock has not moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_take_their_time_from_the_engines_clock() // A
{
    let cluster = Cluster::new(1, small_chunks());
    let (world, clock) = ouroboros_core::world::World::simulated(1_000_000, 7);
    let engine = cluster.engines[0].clone().with_world(world);
    let first = put(&engine, "timed", b"one").await;
    assert_eq!(first.blob.created, 1_000_000);
    let second = put(&engine, "timed", b"two").await;
    assert_eq!(second.blob.created, 1_000_001, "a child is newer than its parent on a clock that stood still");
    clock.advance(5_000);
    let third = put(&engine, "timed", b"three").await;
    assert_eq!(third.blob.created, 1_005_000);
}

const CRASH_DIR: &str = "OUROBOROS_CRASH_TEST_DIR";

fn crash_object(i: u64) -> Vec<u8> // A
{
    random_bytes(200_000 + (i as usize * 77_777) % 2_000_000, i)
}

fn single_node(dir: &Path) -> TestEngine // A
{
    let transport = MemoryCluster::new();
    let id = Hash::of(b"crash node");
    transport.add_node(id, Arc::new(LocalStore::open(dir, Durability::Sync).unwrap()));
    let view = Arc::new(transport.view(id));
    Engine::new(Arc::new(transport), view, test_keys(), small_chunks()).unwrap()
}

/// The writer half of the crash test: runs only as a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of kill_9_mid_write_loses_nothing_acknowledged"]
async fn crash_writer() // A
{
    let Ok(dir) = std::env::var(CRASH_DIR) else { return };
    let engine = single_node(Path::new(&dir));
    for i in 0..10_000u64 {
        put(&engine, &format!("crash-{i}"), &crash_object(i)).await;
        println!("ACK {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_write_loses_nothing_acknowledged() // A
{
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_writer", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CRASH_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        if let Some(i) = line.unwrap().strip_prefix("ACK ") {
            acked.push(i.parse::<u64>().unwrap());
            if acked.len() == 12 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
    assert_eq!(acked.len(), 12, "the writer acknowledged objects before it was killed");

    let engine = single_node(dir.path());
    for i in acked {
        let back = read_all(&engine, &format!("crash-{i}")).await.unwrap();
        assert!(back == crash_object(i), "acknowledged object {i} differs after the crash");
    }
    // The store keeps working after recovery.
    put(&engine, "after-crash", b"still writable").await;
    assert_eq!(read_all(&engine, "after-crash").await.unwrap(), b"still writable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_over_six_nodes_page_without_gaps_or_repeats() // A
{
    let cluster = Cluster::new(6, small_chunks());
    let mut keys: Vec<String> = (0..60).map(|i| format!("key-{i:03}")).collect();
    for (i, key) in keys.iter().enumerate() {
        put(&cluster.engines[i % 6], key, key.as_bytes()).await;
    }
    // A deleted key disappears from listings.
    let mut marker = PutRequest::new("bucket", "key-007");
    marker.kind = ouroboros_core::BlobKind::DeleteMarker;
    cluster.engines[2].put_object(marker, body(b"")).await.unwrap();
    keys.retain(|k| k != "key-007");

    let engine = &cluster.engines[4];
    let mut listed = Vec::new();
    let mut start = ouroboros_core::store::ListStart::Beginning;
    loop {
        let (page, more) = engine.list_objects("bucket", "key-", start.clone(), 7).await.unwrap();
        assert!(page.len() <= 7);
        listed.extend(page.iter().map(|s| s.key.clone()));
        match (more, page.last()) {
            (true, Some(last)) => start = ouroboros_core::store::ListStart::After(last.key.clone()),
            _ => break,
        }
    }
    assert_eq!(listed, keys);
}

type TestSteward = Steward<MemoryCluster, MemoryView>;

fn steward_of(cluster: &Cluster, node: Hash, dead_after: Duration) -> TestSteward // A
{
    let store = cluster.transport.store(&node).expect("node's store");
    let settings =
        StewardSettings { dead_after, may_stand_alone: false, move_bytes_per_sec: u64::MAX, ..Default::default() };
    Steward::new(Arc::new(cluster.transport.clone()), Arc::new(cluster.transport.view(node)), store, settings)
}

/// One step of a node's steward and its move pass, as the server's two
/// loops run them; whether nothing was left to move.
async fn tend_and_move(steward: &TestSteward, peers: &[Hash]) -> bool // A
{
    steward.tend(peers).await;
    steward.move_if_needed().await.is_none_or(|moved| moved.complete())
}

/// Slices listed by a manifest held on `nodes` that are not on the home
/// the layout (as `nodes[0]` holds it) gives them.
fn misplaced_slices(cluster: &Cluster, nodes: &[Hash]) -> usize // A
{
    let store = |node: &Hash| cluster.transport.store(node).expect("store");
    let placing = store(&nodes[0]).layout().placing_members();
    let mut misplaced = 0;
    for node in nodes {
        let store = store(node);
        for id in store.unclaimed_chunks(u64::MAX, None, usize::MAX).expect("chunks") {
            let manifest = store.get_chunk(&id).expect("manifest").expect("listed");
            let homes = placement::slice_homes(&id, manifest.slices.len(), &placing);
            for (slice, home) in manifest.slices.iter().zip(&homes) {
                let held = cluster.transport.store(home).expect("home").holds_slices(&[*slice]).expect("holds");
                misplaced += usize::from(!held[0]);
            }
        }
    }
    misplaced
}

/// Slices held by a node other than the home the layout (as node 0 holds
/// it) gives them.
fn slices_away_from_home(cluster: &Cluster) -> usize // A
{
    let store = |node: &Hash| cluster.transport.store(node).expect("store");
    let placing = store(&cluster.nodes[0]).layout().placing_members();
    let mut away = 0;
    for node in &cluster.nodes {
        for (slice, chunk) in store(node).slices_stored_before(u64::MAX, None, usize::MAX).expect("slices") {
            let manifest = cluster.nodes.iter().find_map(|n| store(n).get_chunk(&chunk).expect("manifest"));
            let Some(manifest) = manifest else { continue };
            let homes = placement::slice_homes(&chunk, manifest.slices.len(), &placing);
            let index = manifest.slices.iter().position(|hash| *hash == slice).expect("listed");
            away += usize::from(homes[index] != *node);
        }
    }
    away
}

fn state_of(cluster: &Cluster, seen_by: Hash, node: Hash) -> Option<NodeState> // A
{
    cluster.transport.store(&seen_by).expect("store").layout().state_of(&node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_and_another_drains_while_every_object_keeps_reading() // A
{
    let mut cluster = Cluster::new(4, small_chunks());
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..16u64 {
        let (key, data) = (format!("before/{i}"), random_bytes(20_000 + i as usize * 41_000, i));
        put(&cluster.engines[0], &key, &data).await;
        objects.push((key, data));
    }

    // A fifth node starts: reachable, in nobody's layout yet.
    let newcomer = cluster.add_newcomer();
    let hour = Duration::from_secs(3600);
    let stewards: Vec<TestSteward> = cluster.nodes.iter().map(|node| steward_of(&cluster, *node, hour)).collect();

    // The join: every step, every node tends its layout, one more object
    // is written, and every object reads through some node.
    let mut step = 0;
    loop {
        let mut moves_done = true;
        for steward in &stewards {
            moves_done &= tend_and_move(steward, &cluster.nodes).await;
        }
        let (key, data) = (format!("joining/{step}"), random_bytes(150_000, 100 + step as u64));
        put(&cluster.engines[step % 5], &key, &data).await;
        objects.push((key, data));
        for (key, data) in &objects {
            let read = read_all(&cluster.engines[(step + 1) % 5], key).await;
            assert_eq!(read.as_deref().ok(), Some(data.as_slice()), "{key} at join step {step}: {read:?}");
        }
        let active = cluster.nodes.iter().all(|n| state_of(&cluster, *n, newcomer) == Some(NodeState::Active));
        if active && moves_done {
            break;
        }
        step += 1;
        assert!(step < 15, "the newcomer is {:?} after {step} steps", state_of(&cluster, newcomer, newcomer));
    }
    for steward in &stewards {
        tend_and_move(steward, &cluster.nodes).await;
    }
    assert_eq!(misplaced_slices(&cluster, &cluster.nodes), 0, "slices not moved to their homes after the join");
    let held = cluster.transport.store(&newcomer).unwrap().slice_usage().unwrap().1;
    assert!(held > 0, "the newcomer holds no slices");

    // A drain: node 1's data moves off, it leaves the layout, and once it
    // is stopped every object still reads.
    let leaving = cluster.nodes[1];
    stewards[0].set_state(leaving, NodeState::Draining).await.expect("drain");
    let mut step = 0;
    while state_of(&cluster, leaving, leaving) != Some(NodeState::Gone) {
        for steward in &stewards {
            tend_and_move(steward, &cluster.nodes).await;
        }
        for (key, data) in &objects {
            let read = read_all(&cluster.engines[0], key).await;
            assert_eq!(read.as_deref().ok(), Some(data.as_slice()), "{key} at drain step {step}: {read:?}");
        }
        step += 1;
        assert!(step < 15, "node 1 is {:?} after {step} steps", state_of(&cluster, leaving, leaving));
    }
    for steward in &stewards {
        tend_and_move(steward, &cluster.nodes).await;
    }
    cluster.transport.set_down(leaving, true);
    let left = cluster.transport.store(&leaving).unwrap();
    assert_eq!(left.slice_usage().unwrap().1, 0, "the drained node kept slices");
    assert_eq!(left.unclaimed_chunks(u64::MAX, None, 10).unwrap().len(), 0, "the drained node kept manifests");
    let remaining: Vec<Hash> = cluster.nodes.iter().copied().filter(|n| *n != leaving).collect();
    assert_eq!(misplaced_slices(&cluster, &remaining), 0, "slices not at their homes after the drain");
    for (key, data) in &objects {
        for engine in [&cluster.engines[0], &cluster.engines[4]] {
            let read = read_all(engine, key).await;
            assert_eq!(read.as_deref().ok(), Some(data.as_slice()), "{key} with the drained node stopped: {read:?}");
        }
    }

    // A node down past `dead_after` is marked gone by whoever sees it, and
    // its partitions are copied to their new replicas.
    let lost = cluster.nodes[3];
    cluster.transport.set_down(lost, true);
    let impatient = steward_of(&cluster, cluster.nodes[0], Duration::ZERO);
    let report = impatient.tend(&remaining).await;
    assert_eq!(report.marked_gone, vec![lost]);
    for steward in [&stewards[2], &stewards[4]] {
        tend_and_move(steward, &cluster.nodes).await;
    }
    assert_eq!(state_of(&cluster, cluster.nodes[2], lost), Some(NodeState::Gone));
    for node in [cluster.nodes[0], cluster.nodes[2], newcomer] {
        AntiEntropy::new(Arc::new(cluster.transport.clone()), Arc::new(cluster.transport.view(node))).round().await;
    }
    for (key, data) in &objects {
        let read = read_all(&cluster.engines[2], key).await;
        assert_eq!(read.as_deref().ok(), Some(data.as_slice()), "{key} after a node was lost: {read:?}");
    }
}

/// Wait (at most 10 s) until every slice is at its home: a put returns
/// once every slice is stored, some of them on a node that keeps it for
/// its home.
async fn settle_slice_writes(cluster: &Cluster) // A
{
    for _ in 0..100 {
        if misplaced_slices(cluster, &cluster.nodes) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(misplaced_slices(cluster, &cluster.nodes), 0, "slices still missing at their homes after the puts");
}

/// Repair passes on every node that is up, summed.
async fn repair_reports(cluster: &Cluster, down: &[Hash]) -> RepairReport // A
{
    let mut sum = RepairReport::default();
    for (node, engine) in cluster.nodes.iter().zip(&cluster.engines).filter(|(node, _)| !down.contains(node)) {
        let report = engine.repair_chunks().await.unwrap_or_else(|error| panic!("repair on {node}: {error}"));
        sum.slices_rebuilt += report.slices_rebuilt;
        sum.slices_taken_home += report.slices_taken_home;
        sum.chunks_unknown += report.chunks_unknown;
        sum.chunks_left_degraded += report.chunks_left_degraded;
    }
    sum
}

/// One repair pass on every node that is up; the slices rebuilt, and the
/// chunks left short.
async fn repair_everywhere(cluster: &Cluster, down: &[Hash]) -> (usize, usize) // A
{
    let report = repair_reports(cluster, down).await;
    (report.slices_rebuilt + report.slices_taken_home, report.chunks_left_degraded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_slices_are_rebuilt_at_their_homes_after_a_lost_disk_and_a_gone_node() // A
{
    let cluster = Cluster::new(6, small_chunks());
    let objects = put_objects(&cluster, 10, 100_000, 150_000, 900).await;
    settle_slice_writes(&cluster).await;
    assert_eq!(repair_everywhere(&cluster, &[]).await, (0, 0), "a healthy cluster had something repaired");

    // A lost disk: node 2 keeps running with every slice gone. A repair
    // pass rebuilds them where they belong, and a second finds nothing.
    let wiped = cluster.transport.store(&cluster.nodes[2]).unwrap();
    let lost = wiped.slices_stored_before(u64::MAX, None, usize::MAX).unwrap();
    assert!(!lost.is_empty());
    for (slice, _) in &lost {
        wiped.remove_slice(slice).unwrap();
    }
    assert!(misplaced_slices(&cluster, &cluster.nodes) >= lost.len());
    let (rebuilt, left) = repair_everywhere(&cluster, &[]).await;
    assert_eq!((rebuilt, left), (lost.len(), 0), "slices rebuilt, chunks left short");
    assert_eq!(misplaced_slices(&cluster, &cluster.nodes), 0, "a lost slice is still missing at its home");
    assert_eq!(repair_everywhere(&cluster, &[]).await, (0, 0), "a second pass found more to do");

    // A node gone for good: it is marked gone, the survivors move and
    // rebuild until every chunk has all its slices on the five left.
    let gone = cluster.nodes[4];
    cluster.transport.set_down(gone, true);
    let survivors: Vec<Hash> = cluster.nodes.iter().copied().filter(|n| *n != gone).collect();
    steward_of(&cluster, survivors[0], Duration::ZERO).tend(&survivors).await;
    for node in &survivors {
        let steward = steward_of(&cluster, *node, Duration::from_secs(3600));
        tend_and_move(&steward, &survivors).await;
        AntiEntropy::new(Arc::new(cluster.transport.clone()), Arc::new(cluster.transport.view(*node))).round().await;
    }
    let (rebuilt, left) = repair_everywhere(&cluster, &[gone]).await;
    assert!(rebuilt > 0 && left == 0, "after a node was gone: {rebuilt} slices brought home, {left} chunks left short");
    assert_eq!(misplaced_slices(&cluster, &survivors), 0, "chunks short of slices on the five left");
    for (key, data) in &objects {
        let read = read_all(&cluster.engines[0], key).await;
        assert_eq!(read.as_deref().ok(), Some(data.as_slice()), "{key} after repair: {read:?}");
    }
}

/// The nodes of `among` holding each slice of each chunk whose manifest
/// `seen_by` holds: chunk → holders of each position.
fn slice_holders(cluster: &Cluster, seen_by: Hash, among: &[Hash]) -> BTreeMap<Hash, Vec<Vec<Hash>>> // A
{
    let store = |node: &Hash| cluster.transport.store(node).expect("store");
    let mut holders = BTreeMap::new();
    for id in store(&seen_by).unclaimed_chunks(u64::MAX, None, usize::MAX).expect("chunks") {
        let manifest = store(&seen_by).get_chunk(&id).expect("manifest").expect("listed");
        let mut of_chunk = vec![Vec::new(); manifest.slices.len()];
        for node in among {
            let held = store(node).holds_slices(&manifest.slices).expect("holds");
            for (position, _) in held.into_iter().enumerate().filter(|(_, held)| *held) {
                of_chunk[position].push(*node);
            }
        }
        holders.insert(id, of_chunk);
    }
    holders
}

/// A node lost while another drains: repair does not wait for the drain to
/// end. Six nodes at 4+2; node 4 drains, and before any move pass, node 5
/// goes down. While node 5 is only down, repair rebuilds nothing (it may
/// come back). Once it is marked gone, four nodes place data, so every
/// chunk's new homes hold two slices on two nodes; a repair pass rebuilds
/// exactly the slices node 5 held, reading the others wherever they are
/// (node 4's are on their way to their new homes and stay there for the
/// move pass). The drain then ends, and losing the node holding two slices
/// (alone) of the most chunks loses nothing. A pass that waited for the
/// move, as repair did before, left those chunks with three slices of four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_during_a_drain_is_rebuilt_before_the_drain_ends() // A
{
    let cluster = Cluster::new(6, small_chunks());
    let objects = put_objects(&cluster, 10, 100_000, 60_000, 1300).await;
    settle_slice_writes(&cluster).await;
    let hour = Duration::from_secs(3600);
    let (draining, lost) = (cluster.nodes[4], cluster.nodes[5]);
    let slices_on = |node: &Hash| cluster.transport.store(node).unwrap().slice_usage().unwrap().1;
    let (held_by_draining, held_by_lost) = (slices_on(&draining), slices_on(&lost));
    let stewards: Vec<TestSteward> = cluster.nodes.iter().map(|node| steward_of(&cluster, *node, hour)).collect();
    stewards[0].set_state(draining, NodeState::Draining).await.expect("drain");
    cluster.transport.set_down(lost, true);
    let up: Vec<Hash> = cluster.nodes.iter().copied().filter(|n| *n != lost).collect();
    let report = repair_reports(&cluster, &[lost]).await;
    assert_eq!(report.slices_rebuilt, 0, "node 5 is only down, and its slices were rebuilt: {report:?}");
    assert!(report.chunks_unknown > 0, "chunks with a slice on node 5 were not reported: {report:?}");

    assert_eq!(steward_of(&cluster, up[0], Duration::ZERO).tend(&up).await.marked_gone, vec![lost]);
    for (node, steward) in cluster.nodes.iter().zip(&stewards) {
        if *node != lost && *node != draining {
            steward.tend(&up).await;
        }
    }
    sync_round(&cluster, &up).await;
    for node in &up {
        assert_eq!(state_of(&cluster, *node, draining), Some(NodeState::Draining), "the drain ended");
        assert_eq!(state_of(&cluster, *node, lost), Some(NodeState::Gone));
    }
    let report = repair_reports(&cluster, &[lost]).await;
    assert_eq!(
        (report.slices_rebuilt, report.slices_taken_home, report.chunks_left_degraded),
        (held_by_lost, 0, 0),
        "while node 4 drains: rebuilt, taken home, chunks left short"
    );
    assert_eq!(slices_on(&draining), held_by_draining, "repair moved node 4's slices, the move pass's work");
    let holders = slice_holders(&cluster, cluster.nodes[0], &up);
    for (chunk, of_chunk) in &holders {
        let held = of_chunk.iter().filter(|nodes| !nodes.is_empty()).count();
        assert_eq!(held, of_chunk.len(), "chunk {chunk} after repair: {of_chunk:?}");
    }

    // The drain ends; the node holding two slices (alone) of the most
    // chunks is lost too.
    for step in 0.. {
        let mut moved = true;
        for (_, steward) in cluster.nodes.iter().zip(&stewards).filter(|(node, _)| **node != lost) {
            moved &= tend_and_move(steward, &up).await;
        }
        if moved && state_of(&cluster, draining, draining) == Some(NodeState::Gone) {
            break;
        }
        assert!(step < 15, "node 4 is {:?} after {step} steps", state_of(&cluster, draining, draining));
    }
    let remaining: Vec<Hash> = up.iter().copied().filter(|n| *n != draining).collect();
    assert_eq!(misplaced_slices(&cluster, &remaining), 0, "slices not at their homes after the drain");
    let holders = slice_holders(&cluster, cluster.nodes[0], &remaining);
    let alone_on = |node: &Hash, of_chunk: &Vec<Vec<Hash>>| of_chunk.iter().filter(|n| **n == [*node]).count();
    let doubled_on = |node: &Hash| holders.values().filter(|of_chunk| alone_on(node, of_chunk) >= 2).count();
    let second = *remaining.iter().max_by_key(|node| doubled_on(node)).expect("a node left");
    assert!(doubled_on(&second) > 0, "no node holds two slices of a chunk alone");
    cluster.transport.set_down(second, true);
    let reader = cluster.nodes.iter().position(|n| remaining.contains(n) && *n != second).expect("a reader");
    for (key, data) in &objects {
        let read = read_all(&cluster.engines[reader], key).await;
        assert_eq!(read.as_deref().ok(), Some(data.as_slice()), "{key} with nodes 5 and another lost: {read:?}");
    }
}

/// Three nodes at 2+1, one drained: of the two left, one is home to two
/// of each chunk's three slices. That is the layout, not a slice on its
/// way, so no copy waits for it: the drain ends, the drained node keeps
/// nothing, and every object reads with it stopped. The copies used to
/// stay for good, and the drain never ended (simulation seed 41130).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_leaves_fewer_nodes_than_slices_ends() // A
{
    let cluster = Cluster::new(3, small_chunks());
    let objects = put_objects(&cluster, 12, 30_000, 37_000, 4100).await;
    let hour = Duration::from_secs(3600);
    let stewards: Vec<TestSteward> = cluster.nodes.iter().map(|node| steward_of(&cluster, *node, hour)).collect();
    let leaving = cluster.nodes[2];
    let slices_on = |node: &Hash| cluster.transport.store(node).unwrap().slice_usage().unwrap().1;
    stewards[0].set_state(leaving, NodeState::Draining).await.expect("drain");
    for step in 0.. {
        let mut moved = true;
        for steward in &stewards {
            moved &= tend_and_move(steward, &cluster.nodes).await;
        }
        if moved && state_of(&cluster, leaving, leaving) == Some(NodeState::Gone) {
            break;
        }
        let state = state_of(&cluster, leaving, leaving);
        assert!(step < 10, "node 2 is {state:?} after {step} steps, holding {} slices", slices_on(&leaving));
    }
    cluster.transport.set_down(leaving, true);
    assert_eq!(slices_on(&leaving), 0, "the drained node kept slices");
    let remaining = &cluster.nodes[..2];
    assert_eq!(misplaced_slices(&cluster, remaining), 0, "slices not at their homes after the drain");
    for (key, data) in &objects {
        let read = read_all(&cluster.engines[1], key).await;
        assert_eq!(read.as_deref().ok(), Some(data.as_slice()), "{key} with the drained node stopped: {read:?}");
    }
}

/// A slice held for a home that the layout, with fewer nodes than the
/// chunk's slices, also makes home to another of its slices: the hand-off
/// does not know the chunk's k, so while a slice homed elsewhere is
/// missing (lost and not rebuilt yet) the copy stays where it is, and
/// losing the home then costs the chunk one slice, not two. Four nodes at
/// 2+2, one gone: three nodes for four slices. Each chunk gets a handed-off
/// copy for its doubled home and loses a slice elsewhere; after a hand-off
/// pass, any one node down reads everything (taken home at once, as before,
/// the doubled home down left one slice of two). Once repair has rebuilt
/// the lost slices, the next pass takes the copies home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_off_slice_waits_while_its_home_would_hold_two_of_a_short_chunk() // A
{
    let cluster = Cluster::new(4, small_chunks());
    let objects = put_objects(&cluster, 6, 40_000, 60_000, 7300).await;
    settle_slice_writes(&cluster).await;
    let gone = cluster.nodes[3];
    cluster.transport.set_down(gone, true);
    let survivors: Vec<Hash> = cluster.nodes[..3].to_vec();
    steward_of(&cluster, survivors[0], Duration::ZERO).tend(&survivors).await;
    for node in &survivors {
        tend_and_move(&steward_of(&cluster, *node, Duration::from_secs(3600)), &survivors).await;
        AntiEntropy::new(Arc::new(cluster.transport.clone()), Arc::new(cluster.transport.view(*node))).round().await;
    }
    for _ in 0..3 {
        repair_everywhere(&cluster, &[gone]).await;
    }
    assert_eq!(misplaced_slices(&cluster, &survivors), 0, "the three left are short of slices after the gone mark");

    let store = |node: &Hash| cluster.transport.store(node).expect("store");
    let held_on = |node: &Hash, slice: &Hash| store(node).holds_slices(&[*slice]).expect("holds")[0];
    let placing = store(&survivors[0]).layout().placing_members();
    let mut manifests = BTreeMap::new();
    for node in &survivors {
        for id in store(node).unclaimed_chunks(u64::MAX, None, usize::MAX).expect("chunks") {
            manifests.insert(id, store(node).get_chunk(&id).expect("manifest").expect("listed"));
        }
    }
    // Per chunk: the copy for the doubled home, and where it is held.
    let mut copies = Vec::new();
    for (id, manifest) in &manifests {
        assert_eq!(manifest.slices.len(), 4, "chunk {id} is not 2+2");
        let homes = placement::slice_homes(id, 4, &placing);
        let doubled = *survivors.iter().find(|n| homes.iter().filter(|h| h == n).count() == 2).expect("a doubled home");
        let on_doubled: Vec<usize> = (0..4).filter(|p| homes[*p] == doubled).collect();
        let elsewhere: Vec<usize> = (0..4).filter(|p| homes[*p] != doubled).collect();
        let (copied, lost) = (on_doubled[0], elsewhere[0]);
        let holder = homes[lost];
        let slice = store(&doubled).get_slice(&manifest.slices[copied]).unwrap().expect("the home's slice");
        let hint = HeldSlice { chunk: *id, slices: manifest.slices.clone(), index: copied as u32 };
        store(&holder).put_handed_off_slice(&slice, hint, doubled).unwrap();
        store(&doubled).remove_slice(&manifest.slices[copied]).unwrap();
        store(&holder).remove_slice(&manifest.slices[lost]).unwrap();
        copies.push((*id, manifest.slices[copied], doubled, holder));
    }
    assert!(!copies.is_empty());

    let report = hand_off_everywhere(&cluster).await;
    assert_eq!(report.handed, 0, "copies taken home while their chunk was short: {report:?}");
    for (chunk, slice, doubled, holder) in &copies {
        assert!(held_on(holder, slice), "chunk {chunk}: the copy left while a slice elsewhere was missing");
        assert!(!held_on(doubled, slice), "chunk {chunk}: the home holds both");
    }
    for down in &survivors {
        cluster.transport.set_down(*down, true);
        let reader = survivors.iter().position(|n| n != down).expect("a reader");
        for (key, data) in &objects {
            let read = read_all(&cluster.engines[reader], key).await;
            assert_eq!(read.as_deref().ok(), Some(data.as_slice()), "{key} with node {down} down: {read:?}");
        }
        cluster.transport.set_down(*down, false);
    }

    // Repair rebuilds the lost slices (taking the copies home where it may);
    // the hand-off takes the rest, and every slice is at its home alone.
    for _ in 0..3 {
        repair_everywhere(&cluster, &[gone]).await;
        hand_off_everywhere(&cluster).await;
    }
    assert_eq!(misplaced_slices(&cluster, &survivors), 0, "slices not at their homes after repair and hand-off");
    assert!(slice_hints(&cluster).is_empty(), "hints left: {:?}", slice_hints(&cluster));
    for (chunk, slice, doubled, holder) in &copies {
        assert!(held_on(doubled, slice) && !held_on(holder, slice), "chunk {chunk}: the copy did not go home");
    }
}

/// The slice hints every node keeps, with the node each is kept for.
fn slice_hints(cluster: &Cluster) -> Vec<(Hash, HandedOffSlice)> // A
{
    let mut found = Vec::new();
    for node in &cluster.nodes {
        let store = cluster.transport.store(node).expect("store");
        for target in store.hints().targets().into_keys() {
            for (_, hint) in store.hints().for_node(&target, None, usize::MAX).expect("hints") {
                match hint {
                    Hinted::Slice(slice) => found.push((target, slice)),
                    Hinted::Held(held) => found.push((target, held.held_by(*node))),
                    Hinted::Write(_) => {}
                }
            }
        }
    }
    found
}

/// One hand-off pass on every node, its reports summed.
async fn hand_off_everywhere(cluster: &Cluster) -> HandoffReport // A
{
    let mut sum = HandoffReport::default();
    for engine in &cluster.engines {
        let report = engine.hand_off_hints().await.expect("hand-off");
        sum.handed += report.handed;
        sum.left += report.left;
        sum.dropped += report.dropped;
        sum.retargeted += report.retargeted;
    }
    sum
}

/// A slice a writer handed off before a node joined: the join may move its
/// home, and the holder's move pass may have run before the copy reached
/// it, so no pass of the holder's would take it home until the join ends
/// (`SIM_OVERLAP` seed 9055: three nodes at 2+1, the holder lost mid-join
/// holding two of a chunk's slices alone). First, with no move pass run
/// yet: a hint whose home the join moved is kept for the new home, and the
/// next hand-off pass takes the slice there (the previous code dropped it).
/// Then, after every move pass: copies no hint points at (the holder's
/// hint log was full, or it crashed between storing the slice and its
/// hint) are taken home by repair while the
/// join still runs where their node holds another of the chunk's slices,
/// and left for the move where it holds only that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_handed_off_before_a_join_goes_to_its_new_home_while_the_join_runs() // A
{
    let data = |i: usize| random_bytes(3000 + i * 10, i as u64);
    let (mut cluster, _, _) = writes_while_node_2_is_away(20, data).await;
    let n0 = cluster.nodes[0];
    let hinted = slice_hints(&cluster);
    assert!(hinted.len() >= 20, "a slice of each version's chunk handed off: {}", hinted.len());
    cluster.transport.set_down(cluster.nodes[2], false);

    // A fourth node joins; every node takes the join in, and no move pass
    // nor hand-off runs yet.
    let newcomer = cluster.add_newcomer();
    let hour = Duration::from_secs(3600);
    let stewards: Vec<TestSteward> = cluster.nodes.iter().map(|node| steward_of(&cluster, *node, hour)).collect();
    stewards[3].tend(&cluster.nodes).await;
    for steward in &stewards[..3] {
        steward.tend(&cluster.nodes).await;
    }
    let store = |node: &Hash| cluster.transport.store(node).expect("store");
    for node in &cluster.nodes {
        assert_eq!(state_of(&cluster, *node, newcomer), Some(NodeState::Joining), "as {node} sees it");
    }
    let layout = store(&n0).layout();
    assert!(layout.is_moving());
    let placing = layout.placing_members();
    let home_now =
        |hint: &HandedOffSlice| placement::slice_homes(&hint.chunk, hint.slices.len(), &placing)[hint.index as usize];
    let moved = hinted.iter().filter(|(target, hint)| home_now(hint) != *target && home_now(hint) != hint.holder);
    let moved = moved.count() as u64;
    assert!(moved > 0, "the join moved no handed-off slice's home");

    // The hand-off keeps the hints of slices whose home moved for their new
    // home, and the next pass takes them there.
    let first = hand_off_everywhere(&cluster).await;
    assert_eq!(first.retargeted, moved, "{first:?}");
    let second = hand_off_everywhere(&cluster).await;
    assert_eq!((second.handed, second.left, second.retargeted), (moved, 0, 0), "{second:?}");
    assert!(slice_hints(&cluster).is_empty(), "hints left after two passes");
    for (_, hint) in &hinted {
        let (home, slice) = (home_now(hint), hint.slices[hint.index as usize]);
        assert!(store(&home).holds_slices(&[slice]).unwrap()[0], "chunk {}: not at its new home", hint.chunk);
        if home != hint.holder {
            assert!(!store(&hint.holder).holds_slices(&[slice]).unwrap()[0], "chunk {}: copy left", hint.chunk);
        }
    }

    // The old nodes' move passes bring every slice to its new home.
    for steward in &stewards[..3] {
        assert!(steward.move_if_needed().await.is_some_and(|moved| moved.complete()), "a move pass left data");
    }
    assert_eq!(misplaced_slices(&cluster, &cluster.nodes), 0, "slices not at their homes after the move passes");
    // Then the first slice of every chunk leaves its home for the home of
    // the second, as a slice handed off there with no hint kept: that
    // node holds two of the chunk's slices alone. Of every other
    // chunk, the first slice goes to the node that is no home of the chunk,
    // holding one: the move of such a slice waits for the join to end.
    let mut strays = 0;
    let mut waiting = Vec::new();
    let chunks = store(&n0).unclaimed_chunks(u64::MAX, None, usize::MAX).unwrap();
    for (nth, id) in chunks.iter().enumerate() {
        let manifest = store(&n0).get_chunk(id).unwrap().expect("listed");
        let homes = placement::slice_homes(id, manifest.slices.len(), &placing);
        let spare = *cluster.nodes.iter().find(|node| !homes.contains(node)).expect("a node holds no slice");
        let slice = store(&homes[0]).get_slice(&manifest.slices[0]).unwrap().expect("at its home");
        let to = if nth % 2 == 0 { homes[1] } else { spare };
        store(&to).put_slice(&slice, id).unwrap();
        store(&homes[0]).remove_slice(&slice.hash).unwrap();
        match nth % 2 {
            0 => strays += 1,
            _ => waiting.push((homes[0], slice.hash)),
        }
    }
    assert!(strays >= 10, "{strays} slices moved off their homes");
    for steward in &stewards[..3] {
        assert!(steward.move_if_needed().await.is_none(), "a move pass ran again for the same placement");
    }
    assert_eq!(state_of(&cluster, n0, newcomer), Some(NodeState::Joining), "the join ended");
    let report = repair_reports(&cluster, &[]).await;
    assert_eq!(
        (report.slices_taken_home, report.slices_rebuilt, report.chunks_left_degraded),
        (strays, 0, 0),
        "during the join: taken home, rebuilt, chunks left short"
    );
    assert_eq!(slices_away_from_home(&cluster), waiting.len(), "slices off their homes after repair");
    for (home, slice) in &waiting {
        assert!(!store(home).holds_slices(&[*slice]).unwrap()[0], "a slice one node holds went home before the move");
    }
    for i in 0..20 {
        let back = read_all(&cluster.engines[3], &format!("key-{i}")).await;
        assert!(back.as_deref().ok() == Some(data(i).as_slice()), "key-{i} through the newcomer: {:?}", back.err());
    }
}

/// Manifests of `chunks` missing from a replica of their partition, as
/// `seen_by`'s layout names the replicas.
fn manifests_missing(cluster: &Cluster, seen_by: Hash, chunks: &[Hash]) -> usize // A
{
    let layout = cluster.transport.store(&seen_by).expect("store").layout();
    let holds = |node: &Hash, id: &Hash| cluster.transport.store(node).expect("store").holds_chunk(id).expect("holds");
    chunks.iter().map(|id| layout.hash_replicas(id).holding.iter().filter(|node| !holds(node, id)).count()).sum()
}

/// A node marked gone leaves the replica sets of its metadata partitions,
/// and the node that takes its place in each never held their chunk
/// manifests (no move pass runs for a loss). Anti-entropy copies them
/// there: every chunk's manifest is again on every replica the layout
/// names, and with two more nodes down every object reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replicas_that_replace_a_gone_node_receive_its_chunk_manifests() // A
{
    let cluster = Cluster::new(7, small_chunks());
    let mut objects = Vec::new();
    let mut chunks = Vec::new();
    for i in 0..12u64 {
        let (key, data) = (format!("object-{i}"), random_bytes(100_000 + i as usize * 50_000, 1200 + i));
        let stored = put(&cluster.engines[(i % 7) as usize], &key, &data).await;
        chunks.extend(stored.blob.chunks.iter().map(|chunk| chunk.id));
        objects.push((key, data));
    }
    settle_slice_writes(&cluster).await;
    assert_eq!(manifests_missing(&cluster, cluster.nodes[0], &chunks), 0, "a manifest missed a replica at its write");

    let gone = cluster.nodes[3];
    cluster.transport.set_down(gone, true);
    let survivors: Vec<Hash> = cluster.nodes.iter().copied().filter(|n| *n != gone).collect();
    steward_of(&cluster, survivors[0], Duration::ZERO).tend(&survivors).await;
    for node in &survivors {
        tend_and_move(&steward_of(&cluster, *node, Duration::from_secs(3600)), &survivors).await;
    }
    assert_eq!(state_of(&cluster, survivors[5], gone), Some(NodeState::Gone));
    let missing = manifests_missing(&cluster, survivors[0], &chunks);
    assert!(missing > 0, "the partitions node 3 replicated have new replicas, which lack their manifests");
    sync_round(&cluster, &survivors).await;
    assert_eq!(manifests_missing(&cluster, survivors[0], &chunks), 0, "manifests missing after anti-entropy");
    let (_, left) = repair_everywhere(&cluster, &[gone]).await;
    assert_eq!(left, 0, "chunks left short after repair");

    let down = [survivors[1], survivors[4]];
    for node in down {
        cluster.transport.set_down(node, true);
    }
    for (key, data) in &objects {
        let read = read_all(&cluster.engines[0], key).await;
        assert_eq!(read.as_deref().ok(), Some(data.as_slice()), "{key} with two more nodes down: {read:?}");
    }
}

/// Flip one byte in every `stride` of every slice segment under `dir`: a
/// disk that rotted under a running node.
fn rot_segments(dir: &Path, stride: u64) // A
{
    use std::os::unix::fs::FileExt;
    for entry in std::fs::read_dir(dir.join("slices")).unwrap() {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(entry.unwrap().path()).unwrap();
        let len = file.metadata().unwrap().len();
        let mut byte = [0u8; 1];
        for at in (stride / 2..len).step_by(stride as usize) {
            file.read_exact_at(&mut byte, at).unwrap();
            byte[0] ^= 0x5a;
            file.write_all_at(&byte, at).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrub_finds_rotten_slices_and_repair_rebuilds_them() // A
{
    let cluster = Cluster::new(6, small_chunks());
    let objects = put_objects(&cluster, 8, 200_000, 100_000, 1700).await;
    settle_slice_writes(&cluster).await;
    let rotten = cluster.transport.store(&cluster.nodes[3]).unwrap();
    let held = rotten.slices_stored_before(u64::MAX, None, usize::MAX).unwrap().len() as u64;
    assert!(held > 0);

    // Every slice on node 3 has bits flipped (slices are 4 KiB or more).
    rot_segments(cluster._dirs[3].path(), 1024);
    for (key, data) in &objects {
        let read = read_all(&cluster.engines[0], key).await;
        assert!(read.as_ref().is_ok_and(|read| read == data), "{key} with rotten slices: {:?}", read.err());
    }
    let sound = scrub_slices(cluster.transport.store(&cluster.nodes[0]).unwrap(), u64::MAX).await.unwrap();
    assert!(sound.slices_checked > 0 && sound.slices_damaged == 0, "an untouched node: {sound:?}");
    let found = scrub_slices(rotten.clone(), u64::MAX).await.unwrap();
    assert_eq!((found.slices_checked, found.slices_damaged), (held, held), "the rotten node's scrub");
    assert_eq!(rotten.last_scrub().unwrap(), Some(found), "the scrub's record");
    assert!(rotten.passes().scrubbing.is_none(), "a finished scrub still shows as under way");
    // Counted once per manifest replica.
    assert!(misplaced_slices(&cluster, &cluster.nodes) >= held as usize, "the set-aside slices count as missing");

    // Repair rebuilds exactly those, and the next scrub finds them sound.
    let (rebuilt, left) = repair_everywhere(&cluster, &[]).await;
    assert_eq!((rebuilt, left), (held as usize, 0), "slices rebuilt, chunks left short");
    assert_eq!(misplaced_slices(&cluster, &cluster.nodes), 0);
    let again = scrub_slices(rotten, u64::MAX).await.unwrap();
    assert_eq!((again.slices_checked, again.slices_damaged), (held, 0), "the scrub after repair");
    for (key, data) in &objects {
        let read = read_all(&cluster.engines[1], key).await;
        assert!(read.as_ref().is_ok_and(|read| read == data), "{key} after repair: {:?}", read.err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_others_marks_no_one_gone() // A
{
    let cluster = Cluster::new(4, small_chunks());
    let nodes = &cluster.nodes;
    // Node 0 sees the three others down past dead_after: the minority side
    // of a partition. It marks no one gone.
    for node in &nodes[1..] {
        cluster.transport.set_down(*node, true);
    }
    let report = steward_of(&cluster, nodes[0], Duration::ZERO).tend(&[]).await;
    assert!(report.marked_gone.is_empty(), "a cut-off node marked {:?} gone", report.marked_gone);
    assert!(nodes.iter().all(|n| state_of(&cluster, nodes[0], *n) == Some(NodeState::Active)));
    // With three of four up, the one down is marked gone.
    cluster.transport.set_down(nodes[1], false);
    cluster.transport.set_down(nodes[2], false);
    let report = steward_of(&cluster, nodes[0], Duration::ZERO).tend(&nodes[..3]).await;
    assert_eq!(report.marked_gone, vec![nodes[3]]);
    assert_eq!(state_of(&cluster, nodes[1], nodes[3]), Some(NodeState::Gone), "the mark did not spread");
}

/// Seven nodes at 4+2 in zones east (nodes 0, 1), west (2, 3) and north
/// (4, 5, 6): every chunk has two slices in each zone.
fn seven_nodes_in_three_zones() -> Cluster // A
{
    let cluster = Cluster::new(7, EngineConfig { erasure: Some(Erasure::new(4, 2)), ..small_chunks() });
    let mut places = Layout::default();
    for (node, zone) in cluster.nodes.iter().zip(["east", "east", "west", "west", "north", "north", "north"]) {
        places.set_place(*node, Place { zone: zone.into(), ..Place::default() });
    }
    for node in &cluster.nodes {
        cluster.transport.store(node).expect("store").merge_layout(&places).expect("layout");
    }
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_handed_off_stays_in_its_zone_so_losing_another_zone_loses_nothing() // A
{
    let cluster = seven_nodes_in_three_zones();
    let store = |node: usize| cluster.transport.store(&cluster.nodes[node]).expect("store");
    // Node 0 is away while objects are written: its slice of every chunk
    // is handed off, to node 1 (the other node of zone east, a home too)
    // rather than to the spare node of zone north, which would leave zone
    // north three slices of the chunk.
    cluster.transport.set_down(cluster.nodes[0], true);
    let data = |i: usize| random_bytes(200_000 + i * 1000, 70 + i as u64);
    for i in 0..8 {
        put(&cluster.engines[1 + i % 6], &format!("zoned-{i}"), &data(i)).await;
    }
    let ids = store(1).unclaimed_chunks(u64::MAX, None, usize::MAX).expect("chunks");
    assert!(!ids.is_empty());
    let held = |node: usize, id: &Hash| {
        let manifest = store(1).get_chunk(id).expect("manifest").expect("listed");
        store(node).holds_slices(&manifest.slices).expect("holds").into_iter().filter(|held| *held).count()
    };
    // A write's last slices are stored off its path: wait for every one.
    for _ in 0..100 {
        if ids.iter().all(|id| held(1, id) == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        assert_eq!(held(1, id), 2, "chunk {id}: node 0's slice is not on node 1");
        assert_eq!((4..7).map(|node| held(node, id)).sum::<usize>(), 2, "chunk {id}: zone north past its share");
    }
    // Node 0 comes back holding none of them, and before the hand-off
    // takes them home, zone north is lost whole: east and west still hold
    // four slices of every chunk.
    cluster.transport.set_down(cluster.nodes[0], false);
    for node in 4..7 {
        cluster.transport.set_down(cluster.nodes[node], true);
    }
    for reader in 0..4 {
        for i in 0..8 {
            let back = read_all(&cluster.engines[reader], &format!("zoned-{i}")).await;
            assert!(
                back.as_deref().ok() == Some(data(i).as_slice()),
                "zoned-{i} through node {reader}: {:?}",
                back.err()
            );
        }
    }
}
