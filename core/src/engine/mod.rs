//! The distributed engine, written against `Transport` and `ClusterView`
//! only: no networking happens here. Its parts, one module each:
//! - `calls`: asking other nodes, with write and read quorums;
//! - `write`: PUT, body → (MD5 ‖ FastCDC) → per chunk, in parallel and off
//!   the async threads: keyed BLAKE3, dedup check, seal, place slices,
//!   write the manifest → write the blob to its metadata replicas;
//! - `read`: GET, the overlapping chunks fetched and opened with read-ahead;
//! - `objects`: blobs, heads with read repair, the version DAG, listings;
//! - `tables`: table rows and bucket records;
//! - `access_keys`: the cluster's access keys, secrets sealed;
//! - `gc`: garbage collection of unreferenced chunks and orphan slices;
//! - `repair`: slices missing at their homes taken home or rebuilt;
//! - `handoff`: metadata writes a replica missed, handed over once it is back.
//!
//! Time and randomness come from the engine's `World`.

mod access_keys;
mod calls;
mod gc;
mod objects;
mod read;
mod repair;
mod stitch;
mod tables;

mod write;

pub use access_keys::{AccessKeyEntry, ClusterAccessKeys, ACCESS_KEY_TABLE};
pub use repair::RepairReport;
pub use stitch::PartOf;
pub use tables::ScannedRows;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::Stream;
use tokio::sync::Semaphore;

use crate::chunker::ChunkerConfig;
use crate::cluster::{ClusterView, Transport, TransportError};
use crate::handoff::{Handoff, HandoffReport};
use crate::hash::Hash;
use crate::keys::NodeKeys;
use crate::model::{Blob, BlobKind, ChunkRef, Erasure, NodeId, ObjectSummary, PartLead, PartRecord, RecordError};
use crate::seal::SealError;
use crate::store::StoreError;
use crate::world::World;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("reading the request body: {0}")]
    Body(io::Error),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("chunk {0}: manifest not found on any reachable replica")]
    ChunkNotFound(Hash),
    #[error("{what}: {acked} of the {needed} acknowledgements needed ({})", join_errors(errors))]
    Quorum { what: String, acked: usize, needed: usize, errors: Vec<TransportError> },
    #[error("{what}: no replica reachable ({})", join_errors(errors))]
    NoReplica { what: String, errors: Vec<TransportError> },
    #[error("{what}: {} metadata partitions have no reachable read quorum", partitions.len())]
    PartitionsUnreachable { what: String, partitions: Vec<u8> },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("this node's store: {0}")]
    Store(#[from] StoreError),
    #[error("chunk {chunk}: opened to {actual} bytes, the object expects {expected}")]
    ChunkLength { chunk: Hash, expected: u32, actual: usize },
    #[error("version {version} does not exist")]
    NoSuchVersion { version: Hash },
    #[error("access key {id}: its secret could not be sealed")]
    SealSecret { id: String },
    #[error("invalid engine configuration: {0}")]
    Config(String),
    #[error("a pipeline task failed: {0}")]
    Task(String),
}

pub type EngineResult<T> = Result<T, EngineError>;

/// What a failure means to a client, whatever caused it: the gateway turns
/// each class into one S3 answer and keeps the cause for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// A disk that was to hold the data has no space left.
    StorageFull,
    /// Too few nodes answered; the same request may succeed later.
    Unavailable,
    /// A fault of this server or of the data it holds.
    Internal,
}

impl EngineError {
    pub fn class(&self) -> FailureClass // A
    {
        let of_transport = |errors: &[TransportError]| {
            if errors.iter().any(|e| matches!(e, TransportError::StorageFull { .. })) {
                FailureClass::StorageFull
            } else {
                FailureClass::Unavailable
            }
        };
        match self {
            EngineError::Quorum { errors, .. } | EngineError::NoReplica { errors, .. } => of_transport(errors),
            EngineError::Transport(error) => of_transport(std::slice::from_ref(error)),
            EngineError::PartitionsUnreachable { .. } => FailureClass::Unavailable,
            other if crate::store::is_storage_full(other) => FailureClass::StorageFull,
            _ => FailureClass::Internal,
        }
    }
}

/// A page of a listing and whether more follow.
pub type Listed = EngineResult<(Vec<ObjectSummary>, bool)>;

/// An object body as it arrives: pieces of any size, or the error that cut it short.
pub trait BodyStream: Stream<Item = Result<Bytes, io::Error>> + Send + Unpin {}
impl<S: Stream<Item = Result<Bytes, io::Error>> + Send + Unpin> BodyStream for S {}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub chunking: ChunkerConfig,
    pub zstd_level: i32,
    /// Chunks hashed, sealed and stored at once on the write path.
    pub write_parallelism: usize,
    /// Chunks fetched and opened ahead of the reader.
    pub read_ahead: usize,
    /// Chunks being sealed and stored at once across all writes of the node,
    /// and chunks being fetched and opened across all reads: with the
    /// per-request buffers, these bound memory whatever the client count.
    pub node_write_chunks: usize,
    pub node_read_chunks: usize,
    /// Fixed coding; `None` follows the cluster size.
    pub erasure: Option<Erasure>,
    /// Bytes of slices repair stores per second at most, so clients keep
    /// their speed.
    pub repair_bytes_per_sec: u64,
}

impl Default for EngineConfig {
    fn default() -> Self // A
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        EngineConfig {
            chunking: ChunkerConfig::default(),
            zstd_level: 1,
            write_parallelism: cores * 4,
            read_ahead: cores * 4,
            node_write_chunks: cores * 4,
            node_read_chunks: cores * 4,
            erasure: None,
            repair_bytes_per_sec: 64 << 20,
        }
    }
}

/// Sees every byte of a body as it is written (for extra checksums).
pub trait BodyTap: Send + 'static {
    fn update(&mut self, data: &[u8]);
}

impl BodyTap for () {
    fn update(&mut self, _data: &[u8]) {} // A
}

/// What a body is written as: an object, or a part of a multipart upload,
/// which starts where the part before it left the stream when that part
/// was written here, and whose edge chunks this node keeps in memory a
/// while for cutting its junctions with the parts beside it (`stitch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Object,
    Part(PartOf),
}

/// A body whose chunks are stored but that no blob references yet.
#[derive(Debug, Clone)]
pub struct WrittenBody {
    /// From the start of the lead when there is one (see `PartRecord`).
    pub chunks: Vec<ChunkRef>,
    pub md5: [u8; 16],
    pub size: u64,
    pub lead: Option<PartLead>,
}

impl WrittenBody {
    /// The record of part `number`, written as this body.
    pub fn into_part(self, number: u16, created: u64, checksums: BTreeMap<String, String>) -> PartRecord // A
    {
        PartRecord {
            number,
            etag: hex::encode(self.md5),
            size: self.size,
            created,
            chunks: self.chunks,
            checksums,
            lead: self.lead,
        }
    }
}

/// The object key whose metadata partition holds a table row.
#[derive(Debug, Clone, Copy)]
pub struct Home<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
}

/// A row of a small metadata table, and the chunks it references.
#[derive(Debug, Clone)]
pub struct TableRow {
    pub table: u8,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub chunks: Vec<Hash>,
}

/// What one garbage-collection pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Unreferenced chunks whose manifests and slices were removed.
    pub chunks_freed: usize,
    pub slices_removed: usize,
    /// Unreferenced chunks kept because a write claimed them meanwhile, or
    /// a replica could not be reached.
    pub chunks_kept: usize,
    /// Slices no manifest lists: left by writes cut short between storing
    /// a chunk's slices and its manifest.
    pub orphan_slices_removed: usize,
}

/// What a new version holds, however its bytes were written.
#[derive(Debug, Clone)]
pub struct BlobContent {
    pub size: u64,
    pub etag: String,
    pub chunks: Vec<ChunkRef>,
    /// Sizes of multipart parts; empty otherwise.
    pub part_sizes: Vec<u64>,
}

/// What a write stores besides the body.
#[derive(Debug, Clone)]
pub struct PutRequest {
    pub bucket: String,
    pub key: String,
    /// `None`: the key's current heads.
    pub parents: Option<Vec<Hash>>,
    pub kind: BlobKind,
    pub system_metadata: BTreeMap<String, String>,
    pub user_metadata: BTreeMap<String, String>,
    pub checksums: BTreeMap<String, String>,
    /// Written with versioning off: the key's "null" version (see `Blob`).
    pub null_version: bool,
}

impl PutRequest {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self // A
    {
        PutRequest {
            bucket: bucket.into(),
            key: key.into(),
            parents: None,
            kind: BlobKind::Version,
            system_metadata: BTreeMap::new(),
            user_metadata: BTreeMap::new(),
            checksums: BTreeMap::new(),
            null_version: false,
        }
    }
}

/// A stored version: its id (hash) and the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub hash: Hash,
    pub blob: Blob,
}

pub struct Engine<T, V> {
    transport: Arc<T>,
    view: Arc<V>,
    keys: Arc<NodeKeys>,
    config: Arc<EngineConfig>,
    write_permits: Arc<Semaphore>,
    read_permits: Arc<Semaphore>,
    junctions: Arc<stitch::Junctions>,
    refused_frees: Arc<gc::RefusedFrees>,
    world: World,
}

impl<T, V> Clone for Engine<T, V> {
    fn clone(&self) -> Self // A
    {
        Engine {
            transport: self.transport.clone(),
            view: self.view.clone(),
            keys: self.keys.clone(),
            config: self.config.clone(),
            write_permits: self.write_permits.clone(),
            read_permits: self.read_permits.clone(),
            junctions: self.junctions.clone(),
            refused_frees: self.refused_frees.clone(),
            world: self.world.clone(),
        }
    }
}

/// Run work that may wait on the disk on tokio's blocking pool.
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> EngineResult<R> // A
{
    crate::compute::blocking(work).await.map_err(|error| EngineError::Task(error.to_string()))
}

/// Run CPU-bound work (sealing, opening) on the process's per-core workers.
async fn compute<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> EngineResult<R> // A
{
    crate::compute::run(work).await.map_err(|error| EngineError::Task(error.to_string()))
}

fn join_errors(errors: &[TransportError]) -> String // A
{
    if errors.is_empty() {
        return "no errors reported".into();
    }
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl<T: Transport, V: ClusterView> Engine<T, V> {
    pub fn new(transport: Arc<T>, view: Arc<V>, keys: NodeKeys, config: EngineConfig) -> EngineResult<Self> // A
    {
        if !config.chunking.is_valid() {
            return Err(EngineError::Config(format!("chunk sizes {:?} out of range", config.chunking)));
        }
        if config.write_parallelism == 0 || config.read_ahead == 0 {
            return Err(EngineError::Config("write_parallelism and read_ahead must be at least 1".into()));
        }
        if config.erasure.is_some_and(|e| e.data == 0 || e.total() > 255) {
            return Err(EngineError::Config(format!("erasure {:?} unusable", config.erasure)));
        }
        if keys.recipients.is_empty() {
            return Err(EngineError::Config("no recipient public key to seal chunks for".into()));
        }
        let write_permits = Arc::new(Semaphore::new(config.node_write_chunks.max(1)));
        let read_permits = Arc::new(Semaphore::new(config.node_read_chunks.max(1)));
        let (keys, config) = (Arc::new(keys), Arc::new(config));
        let junctions = Arc::new(stitch::Junctions::new());
        let refused_frees = Arc::new(gc::RefusedFrees::default());
        Ok(Engine {
            transport,
            view,
            keys,
            config,
            write_permits,
            read_permits,
            junctions,
            refused_frees,
            world: World::real(),
        })
    }

    /// The same engine on another clock and random source.
    pub fn with_world(self, world: World) -> Self // A
    {
        Engine { world, ..self }
    }

    /// The clock and random source the engine runs on.
    pub fn world(&self) -> &World // A
    {
        &self.world
    }

    pub fn local_node(&self) -> NodeId // A
    {
        self.view.local_node()
    }

    /// The layout placement reads now.
    pub fn layout(&self) -> Arc<crate::layout::Layout> // A
    {
        self.view.layout()
    }

    /// One hand-off pass of this node's hints (`crate::handoff`).
    pub async fn hand_off_hints(&self) -> EngineResult<HandoffReport> // PA
    {
        Ok(Handoff::new(self.transport.clone(), self.view.clone()).hand_off_hints().await?)
    }
}
