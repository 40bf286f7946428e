//! Throughput of each write/read stage on one core, and of the whole engine
//! pipeline on all cores, for incompressible and text-like data, with 1+0 and
//! 4+2 coding. Run: `cargo bench -p ouroboros-core --bench pipeline`, or
//! `... -- "text-like 4+2"` for one case, with `PIPELINE_ONLY=1` to skip the
//! stage measurements (for profiling). Prints markdown for docs/BENCHMARKS.md.

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

/// MB/s of `work` over `data`, repeated for at least a second.
fn rate(data: &[u8], mut work: impl FnMut(&[u8])) -> f64 // A
{
    let start = Instant::now();
    let mut bytes = 0usize;
    while start.elapsed() < Duration::from_secs(1) {
        work(data);
        bytes += data.len();
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

struct Stages {
    write: Vec<(&'static str, f64)>,
    read: Vec<(&'static str, f64)>,
}

fn measure_stages(data: &[u8], erasure: Erasure) -> Stages // A
{
    let key = [5u8; 32];
    let cdc = rate(data, |d| {
        let mut chunker = Chunker::new(ChunkerConfig::default());
        let mut n = chunker.push(d).len();
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
            std::hint::black_box(zstd::bulk::decompress(chunk, CHUNK).unwrap());
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

async fn measure_pipeline(shared: Bytes, erasure: Erasure) -> (f64, f64) // A
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
    let start = Instant::now();
    let stored = engine.put_object(PutRequest::new("bench", "object"), futures::stream::iter(pieces)).await.unwrap();
    let write = shared.len() as f64 / start.elapsed().as_secs_f64() / 1e6;

    let start = Instant::now();
    let mut read_bytes = 0usize;
    let mut stream = std::pin::pin!(engine.read(&stored.blob, 0..u64::MAX));
    while let Some(piece) = stream.next().await {
        read_bytes += piece.unwrap().len();
    }
    assert_eq!(read_bytes, shared.len());
    let read = shared.len() as f64 / start.elapsed().as_secs_f64() / 1e6;
    (write, read)
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
    println!(
        "cores: {cores}; stage MB/s on one core over {} MiB, pipelines over {} MiB\n",
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
                let (write, read) = runtime.block_on(measure_pipeline(pipeline_data.clone(), erasure));
                println!("{case}: write {write:.0} MB/s, read {read:.0} MB/s");
                continue;
            }
            let stages = measure_stages(&stage_data, erasure);
            let (write, read) = runtime.block_on(measure_pipeline(pipeline_data.clone(), erasure));
            let write_bound = bound(&stages.write, cores);
            let read_bound = bound(&stages.read, cores);
            println!("### {name}, {}+{} coding\n", erasure.data, erasure.parity);
            println!("| stage | MB/s (one core) |\n|---|---|");
            for (stage, r) in stages
                .write
                .iter()
                .map(|(s, r)| (format!("write: {s}"), r))
                .chain(stages.read.iter().map(|(s, r)| (format!("read: {s}"), r)))
            {
                if r.is_finite() {
                    println!("| {stage} | {r:.0} |");
                }
            }
            println!(
                "| **write pipeline** | **{write:.0}** of {write_bound:.0} bound ({:.0}%) |",
                100.0 * write / write_bound
            );
            println!(
                "| **read pipeline** | **{read:.0}** of {read_bound:.0} bound ({:.0}%) |\n",
                100.0 * read / read_bound
            );
        }
    }
}
