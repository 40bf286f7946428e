//! The seeded fault simulation (issue 17). Several nodes run in one process
//! over a transport that drops messages, loses their answers, duplicates
//! and delays them, and cuts nodes off; nodes are also taken down, and
//! crash and start again from their stores with their memory lost. A seed
//! decides the operations (puts, multipart uploads with some junctions cut
//! ahead, merges of two versions, forgotten versions, delete markers, row
//! writes and deletes, garbage collection) and the faults. After the faults
//! stop, every node runs anti-entropy until the replicas agree, and the
//! checker compares what the cluster holds with a model of what was
//! acknowledged:
//!
//! 1. every acknowledged version that was not forgotten reads back byte for
//!    byte, through every node;
//! 2. every acknowledged forget holds on every replica: the blob is gone and
//!    its tombstone is there;
//! 3. every replica of every partition holds the same tree, within a bounded
//!    number of rounds;
//! 4. every row whose last write was acknowledged reads as that write.
//!
//! At most m nodes (the coding's parity) are faulty at once. A message's
//! fate is a hash of the seed and the message, so a schedule replays the
//! same faults whatever order concurrent calls run in.
//!
//! `SIM_SCHEDULES` schedules (default 300) from `SIM_FIRST_SEED` (default
//! 1), or the one `SIM_SEED`; `scripts/simulate.sh` runs it. A failure
//! prints its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use ouroboros_core::anti_entropy::AntiEntropy;
use ouroboros_core::chunker::ChunkerConfig;
use ouroboros_core::cluster::{Call, Request, Transport, TransportError, Unreachable};
use ouroboros_core::memory::{MemoryCluster, MemoryView};
use ouroboros_core::store::{Durability, LocalStore};
use ouroboros_core::{
    BlobKind, BodyKind, DataKeyPair, Engine, EngineConfig, Hash, Home, NodeKeys, PutRequest, StoredBlob, TableRow,
};
use rand::{Rng, SeedableRng};

/// What the faults of a schedule are, and whether they are on.
struct Faults {
    seed: u64,
    active: bool,
    /// Per mille of messages each fate takes.
    dropped: u32,
    answer_lost: u32,
    duplicated: u32,
    delayed: u32,
    /// Nodes cut off from every other node.
    cut: BTreeSet<Hash>,
}

enum Fate {
    Deliver,
    /// Lost on the way: the receiver never sees it.
    Drop,
    /// Delivered, but the answer is lost.
    LoseAnswer,
    /// Delivered twice.
    Duplicate,
    Delay(Duration),
}

impl Faults {
    fn fate(&self, from: Hash, to: Hash, request: &Request) -> Fate // A
    {
        if !self.active {
            return Fate::Deliver;
        }
        if self.cut.contains(&from) || self.cut.contains(&to) {
            return Fate::Drop;
        }
        let encoded = ouroboros_core::codec::encode(request);
        let roll = Hash::of_parts(&[&self.seed.to_le_bytes(), from.as_bytes(), to.as_bytes(), &encoded]);
        let dice = roll.prefix_u64();
        let mut roll = (dice % 1000) as u32;
        for (share, fate) in [
            (self.dropped, Fate::Drop),
            (self.answer_lost, Fate::LoseAnswer),
            (self.duplicated, Fate::Duplicate),
            (self.delayed, Fate::Delay(Duration::from_micros((dice >> 20) % 5000))),
        ] {
            if roll < share {
                return fate;
            }
            roll -= share;
        }
        Fate::Deliver
    }
}

/// One node's way to the others, through the faults.
#[derive(Clone)]
struct SimTransport {
    cluster: MemoryCluster,
    from: Hash,
    faults: Arc<Mutex<Faults>>,
}

fn timed_out(node: Hash) -> TransportError // A
{
    TransportError::Unreachable { node, cause: Unreachable::TimedOut }
}

impl Transport for SimTransport {
    fn call(&self, node: Hash, request: Request) -> Call // A
    {
        if node == self.from {
            return self.cluster.call(node, request);
        }
        let fate = self.faults.lock().unwrap().fate(self.from, node, &request);
        let cluster = self.cluster.clone();
        async move {
            match fate {
                Fate::Deliver => cluster.call(node, request).await,
                Fate::Drop => Err(timed_out(node)),
                Fate::LoseAnswer => {
                    let _ = cluster.call(node, request).await;
                    Err(timed_out(node))
                }
                Fate::Duplicate => {
                    let _ = cluster.call(node, request.clone()).await;
                    cluster.call(node, request).await
                }
                Fate::Delay(delay) => {
                    tokio::time::sleep(delay).await;
                    cluster.call(node, request).await
                }
            }
        }
        .boxed()
    }

    fn local_store(&self, node: Hash) -> Option<Arc<LocalStore>> // A
    {
        if node == self.from {
            self.cluster.local_store(node)
        } else {
            None
        }
    }
}

type SimEngine = Engine<SimTransport, MemoryView>;

struct Sim {
    dirs: Vec<tempfile::TempDir>,
    keys: NodeKeys,
    config: EngineConfig,
    nodes: Vec<Hash>,
    cluster: MemoryCluster,
    faults: Arc<Mutex<Faults>>,
    engines: Vec<SimEngine>,
    /// The coding's parity: how many nodes may be faulty at once.
    parity: usize,
}

impl Sim {
    fn new(seed: u64, size: usize) -> Self // A
    {
        let cluster = MemoryCluster::new();
        let faults = Arc::new(Mutex::new(Faults {
            seed,
            active: true,
            dropped: 0,
            answer_lost: 0,
            duplicated: 0,
            delayed: 0,
            cut: BTreeSet::new(),
        }));
        let mut dirs = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..size {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStore::open(dir.path(), Durability::Flush).unwrap();
            let id = Hash::of(format!("sim node {i}").as_bytes());
            cluster.add_node(id, Arc::new(store));
            dirs.push(dir);
            nodes.push(id);
        }
        let pair = DataKeyPair::from_secret_bytes([9; 32]);
        let keys = NodeKeys { dedup_key: [5; 32], recipients: vec![pair.public()], data_pair: pair };
        let config = EngineConfig {
            chunking: ChunkerConfig { min: 16 * 1024, avg: 32 * 1024, max: 64 * 1024 },
            ..Default::default()
        };
        let parity = ouroboros_core::Erasure::for_cluster(size).parity as usize;
        let mut sim = Sim { dirs, keys, config, nodes, cluster, faults, engines: Vec::new(), parity };
        sim.engines = (0..size).map(|node| sim.engine(node)).collect();
        sim
    }

    fn engine(&self, node: usize) -> SimEngine // A
    {
        let id = self.nodes[node];
        let transport = SimTransport { cluster: self.cluster.clone(), from: id, faults: self.faults.clone() };
        let view = Arc::new(self.cluster.view(id));
        Engine::new(Arc::new(transport), view, self.keys.clone(), self.config.clone()).unwrap()
    }

    /// A node crashes and starts again: its engine and everything it held
    /// in memory are gone, and its store is opened again from its
    /// directory, holding what it had acknowledged.
    async fn restart(&mut self, node: usize, stay_down: bool) // A
    {
        let id = self.nodes[node];
        self.cluster.set_down(id, true);
        let store = self.cluster.remove_store(&id).unwrap();
        // Calls already under way finish before the files are opened again.
        while Arc::strong_count(&store) > 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(store);
        let store = LocalStore::open(self.dirs[node].path(), Durability::Flush).unwrap();
        self.cluster.restore_node(id, Arc::new(store));
        self.engines[node] = self.engine(node);
        self.cluster.set_down(id, stay_down);
    }

    fn syncer(&self, node: usize) -> AntiEntropy<SimTransport, MemoryView> // A
    {
        let transport =
            SimTransport { cluster: self.cluster.clone(), from: self.nodes[node], faults: self.faults.clone() };
        AntiEntropy::new(Arc::new(transport), Arc::new(self.cluster.view(self.nodes[node])))
    }
}

/// What was acknowledged.
#[derive(Default)]
struct Model {
    /// Acknowledged versions: hash → (key, bytes).
    versions: BTreeMap<Hash, (String, Vec<u8>)>,
    /// Versions whose forget was acknowledged.
    forgotten: BTreeSet<Hash>,
    /// Versions a forget was sent for that may or may not have happened.
    maybe_forgotten: BTreeSet<Hash>,
    /// Rows: `Some(value)` after an acknowledged write (`Some(None)` for a
    /// delete); `None` once a write of unknown outcome may have won.
    rows: BTreeMap<String, Option<Option<Vec<u8>>>>,
}

const BUCKET: &str = "sim";
const TABLE: u8 = 9;

/// Part `number` (from 0) of the upload made at `step`.
fn part_of(step: usize, number: usize) -> ouroboros_core::PartOf // A
{
    ouroboros_core::PartOf { upload: format!("upload-{step}"), number: number as u16 + 1 }
}

fn body(data: &[u8]) -> impl ouroboros_core::BodyStream // A
{
    let pieces: Vec<Result<Bytes, std::io::Error>> = data.chunks(7000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(pieces)
}

async fn read_version(engine: &SimEngine, key: &str, version: &Hash) -> Result<Vec<u8>, String> // A
{
    let blob = engine
        .get_blob(BUCKET, key, version)
        .await
        .map_err(|e| format!("blob {version}: {e}"))?
        .ok_or_else(|| format!("blob {version} of {key} not found"))?;
    let mut out = Vec::new();
    let mut stream = Box::pin(engine.read(&blob, 0..blob.size));
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.map_err(|e| format!("reading {key}@{version}: {e}"))?);
    }
    Ok(out)
}

/// Run one schedule; `Err` says which property failed.
async fn run_schedule(seed: u64) -> Result<(), String> // A
{
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let size = if rng.gen_bool(0.7) { 3 } else { 5 };
    let verbose = std::env::var_os("SIM_VERBOSE").is_some();
    let started = std::time::Instant::now();
    let mut sim = Sim::new(seed, size);
    if verbose {
        eprintln!("seed {seed}: {size} nodes opened after {:?}", started.elapsed());
    }
    {
        let mut faults = sim.faults.lock().unwrap();
        faults.dropped = rng.gen_range(0..80);
        faults.answer_lost = rng.gen_range(0..80);
        faults.duplicated = rng.gen_range(0..50);
        faults.delayed = rng.gen_range(0..200);
    }
    let mut model = Model::default();
    let mut down: BTreeSet<usize> = BTreeSet::new();
    let steps = rng.gen_range(20..50);
    for step in 0..steps {
        let faulty = |down: &BTreeSet<usize>, sim: &Sim| down.len() + sim.faults.lock().unwrap().cut.len();
        let live: Vec<usize> = (0..size)
            .filter(|i| !down.contains(i) && !sim.faults.lock().unwrap().cut.contains(&sim.nodes[*i]))
            .collect();
        let via = live[rng.gen_range(0..live.len())];
        let mut restart = None;
        let engine = &sim.engines[via];
        match rng.gen_range(0..100) {
            // Take a node down, or cut it off, within the parity.
            0..=7 if faulty(&down, &sim) < sim.parity => {
                let node = rng.gen_range(0..size);
                if rng.gen_bool(0.5) {
                    down.insert(node);
                    sim.cluster.set_down(sim.nodes[node], true);
                } else {
                    sim.faults.lock().unwrap().cut.insert(sim.nodes[node]);
                }
            }
            // A node crashes and restarts at once.
            8..=9 => restart = Some(rng.gen_range(0..size)),
            // Bring every faulty node back.
            10..=13 => {
                for node in std::mem::take(&mut down) {
                    sim.cluster.set_down(sim.nodes[node], false);
                }
                sim.faults.lock().unwrap().cut.clear();
            }
            14..=45 => {
                let key = format!("key-{}", rng.gen_range(0..6));
                // Now and then the bytes of another version, so writes
                // deduplicate against chunks garbage collection may free.
                let bytes = match model.versions.values().nth(rng.gen_range(0..model.versions.len().max(1))) {
                    Some((_, bytes)) if rng.gen_bool(0.25) => bytes.clone(),
                    _ => {
                        let mut bytes = vec![0u8; rng.gen_range(0..150_000)];
                        rng.fill(&mut bytes[..]);
                        bytes
                    }
                };
                if let Ok(StoredBlob { hash, .. }) =
                    engine.put_object(PutRequest::new(BUCKET, key.clone()), body(&bytes)).await
                {
                    model.versions.insert(hash, (key, bytes));
                }
            }
            // A multipart upload: each part written through a live node,
            // some junctions cut ahead on one, completed through `via`.
            46..=50 => {
                let key = format!("key-{}", rng.gen_range(0..6));
                let mut bytes = vec![0u8; rng.gen_range(1..300_000)];
                rng.fill(&mut bytes[..]);
                let mut bounds: Vec<usize> = (0..rng.gen_range(0..4)).map(|_| rng.gen_range(0..bytes.len())).collect();
                bounds.retain(|bound| *bound > 0);
                bounds.sort_unstable();
                bounds.dedup();
                bounds.push(bytes.len());
                let mut parts = Vec::new();
                let mut from = 0;
                for (number, to) in bounds.into_iter().enumerate() {
                    let writer = &sim.engines[live[rng.gen_range(0..live.len())]];
                    let Ok((written, ())) =
                        writer.write_body(body(&bytes[from..to]), BodyKind::Part(part_of(step, number)), ()).await
                    else {
                        break;
                    };
                    parts.push(written.into_part(number as u16 + 1, 0, Default::default()));
                    from = to;
                }
                if from == bytes.len() {
                    for pair in parts.windows(2) {
                        if rng.gen_bool(0.5) {
                            let cutting = &sim.engines[live[rng.gen_range(0..live.len())]];
                            cutting.prepare_junction(&pair[0], &pair[1]).await;
                        }
                    }
                    if let Ok(StoredBlob { hash, .. }) =
                        engine.commit_parts(PutRequest::new(BUCKET, key.clone()), parts).await
                    {
                        model.versions.insert(hash, (key, bytes));
                    }
                }
            }
            // A merge: a new version whose parents are two acknowledged
            // versions of a key.
            51..=55 => {
                let key = format!("key-{}", rng.gen_range(0..6));
                let held =
                    |version: &Hash| !model.forgotten.contains(version) && !model.maybe_forgotten.contains(version);
                let of_key: Vec<Hash> =
                    model.versions.iter().filter(|(v, (k, _))| *k == key && held(v)).map(|(v, _)| *v).collect();
                if of_key.len() >= 2 {
                    let first = rng.gen_range(0..of_key.len());
                    let second = (first + rng.gen_range(1..of_key.len())) % of_key.len();
                    let mut bytes = vec![0u8; rng.gen_range(0..50_000)];
                    rng.fill(&mut bytes[..]);
                    let parents = Some(vec![of_key[first], of_key[second]]);
                    let merge = PutRequest { parents, ..PutRequest::new(BUCKET, key.clone()) };
                    if let Ok(StoredBlob { hash, .. }) = engine.put_object(merge, body(&bytes)).await {
                        model.versions.insert(hash, (key, bytes));
                    }
                }
            }
            56..=67 if !model.versions.is_empty() => {
                let pick = rng.gen_range(0..model.versions.len());
                let (version, (key, _)) = model.versions.iter().nth(pick).map(|(h, v)| (*h, v.clone())).unwrap();
                match engine.forget_version(BUCKET, &key, &version).await {
                    Ok(()) => {
                        model.forgotten.insert(version);
                    }
                    Err(_) => {
                        model.maybe_forgotten.insert(version);
                    }
                }
            }
            68..=73 => {
                let key = format!("key-{}", rng.gen_range(0..6));
                let marker = PutRequest { kind: BlobKind::DeleteMarker, ..PutRequest::new(BUCKET, key.clone()) };
                if let Ok(StoredBlob { hash, .. }) = engine.put_object(marker, body(&[])).await {
                    model.versions.insert(hash, (key, Vec::new()));
                }
            }
            74..=93 => {
                let row = format!("row-{}", rng.gen_range(0..4));
                let home = Home { bucket: BUCKET, key: &row };
                let (outcome, value) = if rng.gen_bool(0.7) {
                    let value = format!("value {step}").into_bytes();
                    let written =
                        TableRow { table: TABLE, key: row.clone().into_bytes(), value: value.clone(), chunks: vec![] };
                    (engine.put_row(home, written).await, Some(value))
                } else {
                    (engine.delete_row(home, TABLE, row.clone().into_bytes()).await, None)
                };
                model.rows.insert(row, outcome.ok().map(|()| value));
            }
            94..=96 => {
                sim.syncer(via).round().await;
            }
            97..=99 => {
                // Nothing is in flight between steps, so every chunk a write
                // claimed is referenced by now.
                let _ = engine.collect_garbage(ouroboros_core::now_nanos()).await;
            }
            _ => {}
        }
        if let Some(node) = restart {
            sim.restart(node, down.contains(&node)).await;
        }
    }

    if verbose {
        eprintln!(
            "seed {seed}: {steps} steps done after {:?}: {} versions acknowledged, {} forgotten, {} maybe, {} rows known",
            started.elapsed(),
            model.versions.len(),
            model.forgotten.len(),
            model.maybe_forgotten.len(),
            model.rows.values().filter(|r| r.is_some()).count()
        );
    }
    // The faults stop; anti-entropy runs until a round finds every replica in step.
    for node in std::mem::take(&mut down) {
        sim.cluster.set_down(sim.nodes[node], false);
    }
    {
        let mut faults = sim.faults.lock().unwrap();
        faults.active = false;
        faults.cut.clear();
    }
    // Copies a write left to finish in the background land first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    const MAX_ROUNDS: usize = 4;
    let mut rounds = 0;
    loop {
        let mut differing = 0;
        for node in 0..size {
            let began = std::time::Instant::now();
            let report = sim.syncer(node).round().await;
            if verbose {
                eprintln!("seed {seed}: node {node} round took {:?}: {report:?}", began.elapsed());
            }
            differing += report.partitions_differing;
        }
        if differing == 0 {
            break;
        }
        rounds += 1;
        if rounds > MAX_ROUNDS {
            return Err(format!("replicas still differ after {MAX_ROUNDS} rounds ({differing} partitions)"));
        }
    }

    if verbose {
        eprintln!("seed {seed}: converged in {rounds} rounds after {:?}", started.elapsed());
    }
    // 3: the same tree on every replica of every partition.
    for partition in 0..=u8::MAX {
        let replicas = ouroboros_core::placement::partition_replicas(partition, &sim.nodes);
        let roots: BTreeSet<Hash> = replicas
            .iter()
            .map(|node| sim.cluster.store(node).unwrap().sync_roots(&[partition]).unwrap()[0].1)
            .collect();
        if roots.len() != 1 {
            return Err(format!("partition {partition}: replicas hold {} different trees", roots.len()));
        }
    }
    // 1 and 2: versions.
    for (version, (key, bytes)) in &model.versions {
        let partition = ouroboros_core::placement::partition_of(BUCKET, key);
        let replicas = ouroboros_core::placement::partition_replicas(partition, &sim.nodes);
        if model.forgotten.contains(version) {
            for node in &replicas {
                let store = sim.cluster.store(node).unwrap();
                if store.get_blob(version).unwrap().is_some() || !store.is_forgotten(version).unwrap() {
                    return Err(format!("forgotten version {version} of {key} is back on a replica"));
                }
            }
            continue;
        }
        if model.maybe_forgotten.contains(version) {
            continue;
        }
        for (index, engine) in sim.engines.iter().enumerate() {
            match read_version(engine, key, version).await {
                Ok(read) if read == *bytes => {}
                Ok(read) => {
                    return Err(format!("{key}@{version} read through node {index}: {} bytes differ", read.len()))
                }
                Err(error) => return Err(format!("acknowledged {key}@{version} lost through node {index}: {error}")),
            }
        }
    }
    // 4: rows.
    for (row, expected) in &model.rows {
        let Some(expected) = expected else { continue };
        let home = Home { bucket: BUCKET, key: row };
        for (index, engine) in sim.engines.iter().enumerate() {
            let got = engine.get_row(home, TABLE, row.clone().into_bytes()).await.map_err(|e| e.to_string())?;
            if got != *expected {
                return Err(format!("row {row} through node {index}: {got:?}, acknowledged {expected:?}"));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_keep_every_acknowledged_write() // A
{
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env("SIM_FIRST_SEED").unwrap_or(1);
            (first..first + env("SIM_SCHEDULES").unwrap_or(300)).collect()
        }
    };
    let started = std::time::Instant::now();
    // Schedules are independent: a few run at once.
    let outcomes: Vec<(u64, Result<(), String>)> = futures::stream::iter(seeds.iter().copied())
        .map(|seed| async move { (seed, run_schedule(seed).await) })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut failed = Vec::new();
    for (seed, outcome) in outcomes {
        if let Err(error) = outcome {
            eprintln!("seed {seed} failed: {error} (replay: scripts/simulate.sh 1 --seed {seed})");
            failed.push(seed);
        }
    }
    failed.sort_unstable();
    eprintln!(
        "simulated {} schedules in {:.1} s\n{} passed, {} failed",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        seeds.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}
