//! Throughput of each write/read stage on one core, and of the whole engine
//! pipeline on all cores, for incompressible and text-like data, with 1+0 and
//! 4+2 coding. Run: `cargo bench -p ouroboros-core --bench pipeline`, or
//! `... -- "text-like 4+2"` for one case, with `PIPELINE_ONLY=1` to skip the
//! stage measurements (for profiling), `PIPELINE_RUNS=n` for the number of
//! runs (5; each times the stages, then the pipeline, and the run whose
//! pipeline is the median percentage of its own bound is reported), and
//! `PIPELINE_READS=n` for how many times the timed GET reads the object (3;
//! more for profiling reads).
//! Prints markdown for docs/BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest, Md5};
use ouroboros_core::chunker::{Chunker, ChunkerConfig};
use ouroboros_core::memory::MemoryCluster;
use ouroboros_core::seal;
use ouroboros_core::store::{Durability, LocalStore};
use ouroboros_core::{DataKeyPair, Engine, EngineConfig, Erasure, Hash, NodeKeys, PutRequest};
use rand::{RngCore, SeedableRng};
use tokio::runtime::Runtime;

const STAGE_BYTES: usize = 64 << 20;
const PIPELINE_BYTES: usize = 512 << 20;
const CHUNK: usize = 1 << 20;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> // A
{
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

/// Log-like text: compresses about 4:1 with zstd level 1, like real logs and source.
fn text_bytes(len: usize, seed: u64) -> Vec<u8> // A
{
    let words = [
        "GET",
        "PUT",
        "/api/v1/objects",
        "200",
        "404",
        "user=",
        "bucket",
        "latency_ms=",
        "INFO",
        "WARN",
        "request",
        "completed",
        "node-",
        "chunk",
        "version",
        "etag=",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let word = words[(rng.next_u32() % words.len() as u32) as usize];
        out.extend_from_slice(word.as_bytes());
        out.extend_from_slice(format!("{} ", rng.next_u32() % 1000).as_bytes());
        if rng.next_u32() % 12 == 0 {
            out.push(b'\n');
        }
    }
    out.truncate(len);
    out
}

/// MB/s of `work` over `data`: the median of three passes of at least a
/// second each (one pass swung by up to 50% on a shared machine).
fn rate(data: &[u8], mut work: impl FnMut(&[u8])) -> f64 // A
{
    median(
        (0..3)
            .map(|_| {
                let start = Instant::now();
                let mut bytes = 0usize;
                while start.elapsed() < Duration::from_secs(1) {
                    work(data);
                    bytes += data.len();
                }
                bytes as f64 / start.elapsed().as_secs_f64() / 1e6
            })
            .collect(),
    )
}

/// The middle value (the upper middle of an even count).
fn median(mut values: Vec<f64>) -> f64 // A
{
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Stages {
    write: Vec<(&'static str, f64)>,
    read: Vec<(&'static str, f64)>,
}

impl Stages {
    /// The write stages, then the read stages.
    fn by_direction(&self) -> [&[(&'static str, f64)]; 2] // A
    {
        [&self.write, &self.read]
    }
}

fn measure_stages(data: &[u8], erasure: Erasure) -> Stages // A
{
    let key = [5u8; 32];
    // In 256 KiB pieces, each chunk dropped as it comes, as a PUT feeds it.
    let cdc = rate(data, |d| {
        let mut chunker = Chunker::new(ChunkerConfig::default());
        let mut n = 0;
        for piece in d.chunks(256 << 10) {
            n += chunker.push(piece).len();
        }
        n += chunker.finish().len();
        std::hint::black_box(n);
    });
    let blake3 = rate(data, |d| {
        for chunk in d.chunks(CHUNK) {
            std::hint::black_box(Hash::keyed(&key, chunk));
        }
    });
    let md5 = rate(data, |d| {
        std::hint::black_box(Md5::digest(d));
    });
    // What sealing does: a sample first, the whole chunk only if it shrinks.
    let compressed: Vec<Option<Vec<u8>>> = data.chunks(CHUNK).map(|c| seal::compress(c, 1)).collect();
    let zstd = rate(data, |d| {
        for chunk in d.chunks(CHUNK) {
            std::hint::black_box(seal::compress(chunk, 1));
        }
    });
    let stored_len: usize =
        compressed.iter().zip(data.chunks(CHUNK)).map(|(c, p)| c.as_ref().map_or(p.len(), Vec::len)).sum();
    let stored_ratio = stored_len as f64 / data.len() as f64;
    let unzstd = rate(data, |_| {
        for chunk in compressed.iter().flatten() {
            std::hint::black_box(seal::decompress(chunk, CHUNK).unwrap());
        }
    });
    let k = erasure.data as usize;
    let rs = if erasure.parity == 0 {
        f64::INFINITY
    } else {
        rate(data, |d| {
            for chunk in d.chunks(CHUNK) {
                let shard = chunk.len().div_ceil(k).next_multiple_of(2);
                let mut padded = chunk.to_vec();
                padded.resize(shard * k, 0);
                let shards: Vec<&[u8]> = padded.chunks(shard).collect();
                std::hint::black_box(reed_solomon_simd::encode(k, erasure.parity as usize, shards).unwrap());
            }
        })
    };
    let cipher = ouroboros_core::keys::Cipher::new(&key);
    let chacha = rate(data, |d| {
        for chunk in d.chunks(CHUNK) {
            let mut buf = Vec::with_capacity(chunk.len() + 16);
            buf.extend_from_slice(chunk);
            cipher.seal([0; 12], b"", &mut buf).unwrap();
            std::hint::black_box(buf);
        }
    });
    // Sealed bytes are what the cipher and coder really see: scale their cost
    // by how much compression left, and the cipher by the parity overhead.
    let overhead = erasure.total() as f64 / k as f64;
    let after_zstd = stored_ratio.min(1.0);
    Stages {
        write: vec![
            ("FastCDC", cdc),
            ("MD5", md5),
            ("BLAKE3 (keyed)", blake3),
            ("zstd -1 (sampled)", zstd),
            ("Reed-Solomon encode", rs / after_zstd),
            ("ChaCha20-Poly1305", chacha / (after_zstd * overhead)),
            ("BLAKE3 (slice hashes)", blake3 / (after_zstd * overhead)),
        ],
        read: vec![
            ("ChaCha20-Poly1305", chacha / after_zstd),
            ("zstd decompress", if after_zstd < 1.0 { unzstd } else { f64::INFINITY }),
            ("BLAKE3 (verify)", blake3),
        ],
    }
}

/// cores ÷ Σ 1/(stage MB/s): the best a perfectly parallel pipeline can do.
fn bound(stages: &[(&'static str, f64)], cores: usize) -> f64 // A
{
    cores as f64 / stages.iter().map(|(_, r)| 1.0 / r).sum::<f64>()
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 // A
{
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// One timed phase: MB/s and how many cores it kept busy on average.
#[derive(Clone, Copy)]
struct Phase {
    rate: f64,
    cores_busy: f64,
}

/// Time `work` over `bytes`, wall clock and CPU.
async fn timed<T>(bytes: usize, work: impl std::future::Future<Output = T>) -> (T, Phase) // A
{
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let out = work.await;
    let elapsed = wall.elapsed().as_secs_f64();
    (out, Phase { rate: bytes as f64 / elapsed / 1e6, cores_busy: (cpu_seconds() - cpu) / elapsed })
}

/// One PUT and one GET of `shared` through a fresh single-node engine (a
/// fresh dedup key, so nothing is deduplicated against an earlier run).
async fn measure_pipeline(shared: Bytes, erasure: Erasure, reads: usize) -> (Phase, Phase) // A
{
    let dir = tempfile::tempdir().unwrap();
    let transport = MemoryCluster::new();
    let id = Hash::of(b"bench node");
    transport.add_node(id, Arc::new(LocalStore::open(dir.path(), Durability::Flush).unwrap()));
    let pair = DataKeyPair::generate();
    let keys = NodeKeys { dedup_key: rand::random(), recipients: vec![pair.public()], data_pair: pair };
    let config = EngineConfig { erasure: Some(erasure), ..EngineConfig::default() };
    let view = Arc::new(transport.view(id));
    let engine = Engine::new(Arc::new(transport), view, keys, config).unwrap();

    let pieces: Vec<Result<Bytes, std::io::Error>> = (0..shared.len())
        .step_by(256 << 10)
        .map(|at| Ok(shared.slice(at..(at + (256 << 10)).min(shared.len()))))
        .collect();
    let put = engine.put_object(PutRequest::new("bench", "object"), futures::stream::iter(pieces));
    let (stored, write) = timed(shared.len(), put).await;
    let stored = stored.unwrap();
    // The kernel writes the PUT's pages back in the background; left alone,
    // that work lands on the cores during the timed read (4% of its rate,
    // median of eight paired runs).
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };

    // The GET reads the object `reads` times in one timed phase: one read of
    // 512 MiB lasts about a third of a second, in which filling the
    // read-ahead and draining it are a visible share.
    let get = async {
        let mut read_bytes = 0usize;
        for _ in 0..reads {
            let mut stream = std::pin::pin!(engine.read(&stored.blob, 0..u64::MAX));
            while let Some(piece) = stream.next().await {
                read_bytes += piece.unwrap().len();
            }
        }
        read_bytes
    };
    let (read_bytes, read) = timed(shared.len() * reads, get).await;
    assert_eq!(read_bytes, shared.len() * reads);
    (write, read)
}

/// The median run by rate, of `runs` PUT+GET runs.
fn median_runs(runtime: &Runtime, data: &Bytes, erasure: Erasure, runs: usize, reads: usize) -> (Phase, Phase) // A
{
    let measured: Vec<(Phase, Phase)> =
        (0..runs).map(|_| runtime.block_on(measure_pipeline(data.clone(), erasure, reads))).collect();
    let median = |pick: fn(&(Phase, Phase)) -> Phase| {
        let mut phases: Vec<Phase> = measured.iter().map(pick).collect();
        phases.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        phases[phases.len() / 2]
    };
    (median(|m| m.0), median(|m| m.1))
}

/// A count from the environment, at least 1; `default` when unset or not a number.
fn env_count(name: &str, default: usize) -> usize // A
{
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default).max(1)
}

fn main() // A
{
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench ... -- "text-like 4+2"` runs just the cases whose name contains it.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(cores).enable_all().build().unwrap();
    let runs = env_count("PIPELINE_RUNS", 5);
    let reads = env_count("PIPELINE_READS", 3);
    println!(
        "cores: {cores}; median of {runs} runs; stage MB/s on one core over {} MiB, pipelines over {} MiB \
         (written once, read {reads} times)\n",
        STAGE_BYTES >> 20,
        PIPELINE_BYTES >> 20
    );
    for (name, make) in [("incompressible", random_bytes as fn(usize, u64) -> Vec<u8>), ("text-like", text_bytes)] {
        if filter.as_ref().is_some_and(|f| !f.starts_with(name) && !f.starts_with(|c: char| c.is_ascii_digit())) {
            continue;
        }
        let stage_data = make(STAGE_BYTES, 1);
        let pipeline_data = Bytes::from(make(PIPELINE_BYTES, 2));
        for erasure in [Erasure::new(1, 0), Erasure::new(4, 2)] {
            let case = format!("{name} {}+{}", erasure.data, erasure.parity);
            if filter.as_ref().is_some_and(|f| !case.contains(f.as_str())) {
                continue;
            }
            if std::env::var_os("PIPELINE_ONLY").is_some() {
                let (write, read) = median_runs(&runtime, &pipeline_data, erasure, runs, reads);
                println!(
                    "{case}: write {:.0} MB/s ({:.2} cores), read {:.0} MB/s ({:.2} cores)",
                    write.rate, write.cores_busy, read.rate, read.cores_busy
                );
                continue;
            }
            // Each run's stages are timed just before its pipeline, so a run's
            // bound and pipeline see the same machine: its speed drifts by
            // tens of percent over minutes here.
            let measured: Vec<(Stages, Phase, Phase)> = (0..runs)
                .map(|_| {
                    let stages = measure_stages(&stage_data, erasure);
                    let (write, read) = runtime.block_on(measure_pipeline(pipeline_data.clone(), erasure, reads));
                    (stages, write, read)
                })
                .collect();
            println!("### {name}, {}+{} coding\n", erasure.data, erasure.parity);
            println!("| stage | MB/s (one core, median of the runs) |\n|---|---|");
            for (d, direction) in ["write", "read"].into_iter().enumerate() {
                for (index, (stage, _)) in measured[0].0.by_direction()[d].iter().enumerate() {
                    let r = median(measured.iter().map(|(stages, ..)| stages.by_direction()[d][index].1).collect());
                    if r.is_finite() {
                        println!("| {direction}: {stage} | {r:.0} |");
                    }
                }
            }
            for (d, direction) in ["write", "read"].into_iter().enumerate() {
                // (percent of its own bound, rate, bound, cores busy) per run, by percent.
                let mut runs: Vec<(f64, f64, f64, f64)> = measured
                    .iter()
                    .map(|(stages, write, read)| {
                        let phase = [write, read][d];
                        let bound = bound(stages.by_direction()[d], cores);
                        (100.0 * phase.rate / bound, phase.rate, bound, phase.cores_busy)
                    })
                    .collect();
                runs.sort_by(|a, b| a.0.total_cmp(&b.0));
                let (percent, rate, bound, cores_busy) = runs[runs.len() / 2];
                let each: Vec<String> = runs.iter().map(|r| format!("{:.0}%", r.0)).collect();
                println!(
                    "| **{direction} pipeline** | **{rate:.0}** of {bound:.0} bound ({percent:.0}%), {cores_busy:.2} cores busy; runs {} |",
                    each.join(", ")
                );
            }
            println!();
        }
    }
}
