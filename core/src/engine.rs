//! The distributed write and read paths, written against `Transport` and
//! `ClusterView` only. PUT: body → (MD5 ‖ FastCDC) → per chunk, in parallel
//! and off the async threads: keyed BLAKE3, dedup check, seal, place slices,
//! write the manifest → write the blob to its metadata replicas. GET: resolve
//! the blob, then fetch and open the overlapping chunks with read-ahead.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, Stream, StreamExt, TryStreamExt};
use futures::FutureExt;
use md5::{Digest, Md5};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::chunker::{Chunker, ChunkerConfig};
use crate::cluster::{Call, ClusterView, Request, Response, Transport, TransportError, Unreachable};
use crate::codec;
use crate::hash::Hash;
use crate::keys::NodeKeys;
use crate::model::{
    Blob, BlobKind, BucketRecord, Chunk, ChunkList, ChunkListRef, ChunkRef, Erasure, NodeId, ObjectSummary, PartRecord,
    RecordError, SealedSlice, SliceSeal, Versioning, CHUNKS_PER_LIST,
};
use crate::placement;
use crate::seal::{self, SealError, SealParams};
use crate::store::{now_nanos, Freed, ListStart, LocalStore, Row, StoreError, VersionStart};

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
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("this node's store: {0}")]
    Store(#[from] StoreError),
    #[error("chunk {chunk}: opened to {actual} bytes, the object expects {expected}")]
    ChunkLength { chunk: Hash, expected: u32, actual: usize },
    #[error("version {version} does not exist")]
    NoSuchVersion { version: Hash },
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

/// A body whose chunks are stored but that no blob references yet.
#[derive(Debug, Clone)]
pub struct WrittenBody {
    pub chunks: Vec<ChunkRef>,
    pub md5: [u8; 16],
    pub size: u64,
}

/// A request for several nodes: what it is for (in errors) and which
/// response kind answers it.
struct Ask {
    what: String,
    expected: &'static str,
    request: Request,
}

/// Picks the expected answer out of a response, or hands the response back.
type Accept<R> = fn(Response) -> Result<R, Response>;

/// What one node has of what was asked, or the unexpected response.
type Reply<R> = Result<Option<R>, Response>;
type Found<R> = EngineResult<Option<R>>;

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

/// A blob's chunks kept inline and its chunk lists.
type Split = EngineResult<(Vec<ChunkRef>, Vec<ChunkListRef>)>;

/// Part of a blob's chunk list, as a read walks it.
enum ChunkRun {
    Inline(Vec<ChunkRef>),
    Listed(Hash),
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
        }
    }
}

/// Where slice `index` of a chunk goes, or is looked for: its home (the
/// `index`-th ranked node) first, then the nodes after it in rank order;
/// nodes seen down go last, so nobody waits on them first.
fn handoff_order(index: usize, ranked: &[NodeId], is_down: impl Fn(NodeId) -> bool) -> Vec<NodeId> // PA
{
    if ranked.is_empty() {
        return Vec::new();
    }
    let n = ranked.len();
    let rotated = (0..n).map(|step| ranked[(index + step) % n]);
    let (up, down): (Vec<NodeId>, Vec<NodeId>) = rotated.partition(|node| !is_down(*node));
    up.into_iter().chain(down).collect()
}

/// Whether every slice of chunk `id` and every replica of its manifest
/// belong to `local`.
fn chunk_is_local(id: &Hash, erasure: Erasure, members: &[NodeId], local: NodeId) -> bool // PA
{
    let ranked = placement::rank(id, members);
    let replicas = placement::partition_replicas(placement::partition_of_hash(id), members);
    !ranked.is_empty()
        && !replicas.is_empty()
        && (0..erasure.total()).all(|index| ranked[index % ranked.len()] == local)
        && replicas.iter().all(|node| *node == local)
}

/// For a chunk that belongs wholly to this node: claim it if stored (`None`),
/// otherwise seal it for `store_sealed`.
fn claim_or_seal(store: &LocalStore, id: Hash, plain: Vec<u8>, params: SealParams, keys: &NodeKeys) -> Sealing // PA
{
    match store.claim_chunk(&id) {
        Ok(Some(chunk)) if chunk.id == id => return Ok(None),
        Ok(_) => {}
        Err(error) => tracing::warn!(chunk = %id, %error, "chunk claim failed; storing it again"),
    }
    Ok(Some(seal::seal_chunk(id, plain, params, &keys.recipients)?))
}

/// A sealed chunk to store, or `None` when it was already stored.
type Sealing = EngineResult<Option<seal::SealedChunk>>;

/// Where a new chunk stands after hashing: already stored here, sealed for
/// this node's store, or to be sealed for other nodes (its plaintext).
enum Prepared {
    Stored,
    SealedHere(Arc<LocalStore>, seal::SealedChunk),
    Elsewhere(Vec<u8>),
}

/// Store a sealed chunk's slices, then its manifest, on this node (each
/// durable per the store's durability when written).
fn store_sealed(store: &LocalStore, sealed: &seal::SealedChunk) -> EngineResult<()> // PA
{
    for slice in &sealed.slices {
        store.put_slice(slice, &sealed.manifest.id)?;
    }
    store.put_chunk(&sealed.manifest)?;
    Ok(())
}

/// Read the k data slices of a chunk held by this node straight into one
/// buffer, shard i at i × shard_len (not zeroed first), with their nonces
/// and tags. `None` when any is missing or not the manifest's length, or
/// the manifest claims more than a chunk can hold.
fn gather_data_shards(store: &LocalStore, manifest: &Chunk) -> Option<(Vec<u8>, Vec<SliceSeal>)> // PA
{
    let k = manifest.erasure.data as usize;
    let shard_len = manifest.shard_len as usize;
    let total = k.checked_mul(shard_len)?;
    // A chunk is at most fastcdc's largest maximum; a manifest saying more
    // is damaged, and must not make us allocate what it says.
    if shard_len == 0 || total > fastcdc::v2020::MAXIMUM_MAX as usize + 4 * k || manifest.slices.len() < k {
        return None;
    }
    let mut stored: Vec<u8> = Vec::with_capacity(total);
    let mut seals = Vec::with_capacity(k);
    for (region, hash) in stored.spare_capacity_mut()[..total].chunks_exact_mut(shard_len).zip(&manifest.slices) {
        seals.push(store.read_slice_parts(hash, region).ok()??);
    }
    // SAFETY: read_slice_parts returned a seal for each of the k regions,
    // which it does only after filling its region completely.
    unsafe { stored.set_len(total) };
    Some((stored, seals))
}

/// Open a chunk held here from its slices read one at a time (a slice
/// missing or damaged in the gathered read): the data slices, then parity
/// too if they do not open. `None` when fewer than k slices are here.
fn open_slice_by_slice(store: &LocalStore, manifest: &Chunk, keys: &NodeKeys) -> EngineResult<Option<Vec<u8>>> // PA
{
    let k = manifest.erasure.data as usize;
    let read = |count: usize| -> Vec<Option<SealedSlice>> {
        let mut slices = vec![None; manifest.erasure.total()];
        for (index, hash) in manifest.slices.iter().enumerate().take(count) {
            if let Ok(Some(slice)) = store.get_slice(hash) {
                slices[index] = Some(slice).filter(|s| s.hash == *hash);
            }
        }
        slices
    };
    let slices = read(k);
    if slices.iter().flatten().count() < k {
        return Ok(None);
    }
    match seal::open_chunk(manifest, slices, keys) {
        // A damaged data slice: parity on this node may cover it.
        Err(error) if manifest.erasure.parity > 0 => {
            tracing::warn!(chunk = %manifest.id, %error, "local slices unusable, reading parity");
            Ok(Some(seal::open_chunk(manifest, read(manifest.erasure.total()), keys)?))
        }
        opened => Ok(Some(opened?)),
    }
}

/// How far the serial MD5 pass may fall behind chunking, in body bytes. MD5
/// is the slowest serial stage of a PUT: held to a few pieces, it stalls the
/// body feed, chunking starves and a core idles while MD5 catches up. With
/// this much room sealing keeps both cores busy meanwhile (on incompressible
/// writes 16 MiB measured 7% faster than 4 MiB, 8 MiB as fast as 16, and
/// 64 MiB no faster).
const MD5_LAG_BYTES: usize = 8 << 20;
/// How much body may wait for the chunker, in bytes.
const CDC_QUEUE_BYTES: usize = 1 << 20;
/// The unit a piece queue counts room in.
const QUEUE_UNIT: usize = 4096;

/// The receiving end of a piece queue: each piece comes with the room it
/// takes, given back when the receiver drops it after use.
type PieceReceiver = mpsc::UnboundedReceiver<(Bytes, OwnedSemaphorePermit)>;

/// A queue of body pieces bounded by bytes rather than by count, so a body
/// that arrives in small network frames may queue as much as one that
/// arrives in large pieces.
struct PieceSender {
    pieces: mpsc::UnboundedSender<(Bytes, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
    units: usize,
}

impl PieceSender {
    fn new(bytes: usize) -> (PieceSender, PieceReceiver) // A
    {
        // At most u32::MAX units, so that any piece's share fits acquire_many.
        let units = bytes.div_ceil(QUEUE_UNIT).clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let (pieces, receiver) = mpsc::unbounded_channel();
        (PieceSender { pieces, room: Arc::new(Semaphore::new(units)), units }, receiver)
    }

    /// Wait for room, then queue `piece`; false once the receiver is gone.
    async fn send(&self, piece: Bytes) -> bool // A
    {
        // A piece larger than the whole queue takes all of it.
        let units = piece.len().div_ceil(QUEUE_UNIT).clamp(1, self.units);
        let Ok(room) = self.room.clone().acquire_many_owned(units as u32).await else { return false };
        self.pieces.send((piece, room)).is_ok()
    }
}

/// Run work that may wait on the disk on tokio's blocking pool.
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> EngineResult<R> // A
{
    tokio::task::spawn_blocking(work).await.map_err(|error| EngineError::Task(error.to_string()))
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
        Ok(Engine { transport, view, keys: Arc::new(keys), config: Arc::new(config), write_permits, read_permits })
    }

    pub fn local_node(&self) -> NodeId // A
    {
        self.view.local_node()
    }

    /// Store an object streamed from `body` as a new blob.
    pub async fn put_object(&self, request: PutRequest, body: impl BodyStream) -> EngineResult<StoredBlob> // PA
    {
        let (written, ()) = self.write_body(body, ()).await?;
        self.commit(request, written).await
    }

    /// Chunk, seal and place a body without making it visible; `tap` sees
    /// every byte on the MD5 thread (for the checksums a client asked for).
    /// Nothing references the chunks until `commit`.
    pub async fn write_body<H: BodyTap>(&self, body: impl BodyStream, tap: H) -> EngineResult<(WrittenBody, H)> // PA
    {
        self.store_body(body, tap).await
    }

    /// Make a written body visible as a new version of `request.key`.
    pub async fn commit(&self, request: PutRequest, body: WrittenBody) -> EngineResult<StoredBlob> // PA
    {
        let content =
            BlobContent { size: body.size, etag: hex::encode(body.md5), chunks: body.chunks, part_sizes: Vec::new() };
        self.commit_content(request, content).await
    }

    /// Make the parts of a multipart upload one new version: their chunk
    /// lists are stitched together, no byte is copied. The ETag is S3's
    /// MD5 of the part MD5s, with the part count.
    pub async fn commit_parts(&self, request: PutRequest, parts: Vec<PartRecord>) -> EngineResult<StoredBlob> // PA
    {
        let mut digests = Md5::new();
        let mut chunks = Vec::new();
        let mut offset = 0u64;
        for part in &parts {
            let digest = hex::decode(&part.etag)
                .map_err(|_| EngineError::Config(format!("part {} has a malformed ETag", part.number)))?;
            digests.update(&digest);
            for chunk in &part.chunks {
                chunks.push(ChunkRef { offset, ..*chunk });
                offset += chunk.len as u64;
            }
        }
        let content = BlobContent {
            size: offset,
            etag: format!("{}-{}", hex::encode(digests.finalize()), parts.len()),
            chunks,
            part_sizes: parts.iter().map(|p| p.size).collect(),
        };
        self.commit_content(request, content).await
    }

    /// Write a new version holding `content` (chunks already stored); its
    /// parents are the request's, or the key's current heads. Its created
    /// time is past every parent's, so along any path of the DAG time grows
    /// and a key's newest version is always one of its heads.
    pub async fn commit_content(&self, request: PutRequest, content: BlobContent) -> EngineResult<StoredBlob> // PA
    {
        let (parents, newest_parent) = match request.parents {
            Some(parents) => {
                let mut newest = 0;
                for parent in &parents {
                    let blob = self.get_blob(&request.bucket, &request.key, parent).await?;
                    let blob = blob.ok_or(EngineError::NoSuchVersion { version: *parent })?;
                    newest = newest.max(blob.created);
                }
                (parents, newest)
            }
            None => {
                let heads = self.heads(&request.bucket, &request.key).await?;
                let newest = heads.iter().map(|h| h.entry.created).max().unwrap_or(0);
                (heads.into_iter().map(|h| h.version).collect(), newest)
            }
        };
        let (chunks, chunk_lists) = self.store_chunk_lists(&request.bucket, &request.key, content.chunks).await?;
        let blob = Blob {
            bucket: request.bucket,
            key: request.key,
            parents,
            created: now_nanos().max(newest_parent.saturating_add(1)),
            writer: self.view.local_node(),
            kind: request.kind,
            size: content.size,
            etag: content.etag,
            system_metadata: request.system_metadata,
            user_metadata: request.user_metadata,
            checksums: request.checksums,
            chunks,
            part_sizes: content.part_sizes,
            null_version: request.null_version,
            chunk_lists,
        };
        self.put_blob(blob).await
    }

    /// Keep a short chunk list inline; store a long one as `ChunkList`
    /// records of `CHUNKS_PER_LIST` on the key's replicas, ahead of the blob
    /// that names them. The split is deterministic, so a copy of a large
    /// object stores the same records again.
    async fn store_chunk_lists(&self, bucket: &str, key: &str, chunks: Vec<ChunkRef>) -> Split // PA
    {
        if chunks.len() <= CHUNKS_PER_LIST {
            return Ok((chunks, Vec::new()));
        }
        let replicas = self.object_replicas(bucket, key);
        let needed = placement::write_quorum(replicas.len());
        let mut lists = Vec::new();
        for run in chunks.chunks(CHUNKS_PER_LIST) {
            let (Some(first), Some(last)) = (run.first(), run.last()) else { continue };
            let offset = first.offset;
            let len = last.offset + last.len as u64 - offset;
            let bytes = codec::encode(&ChunkList { chunks: run.to_vec() });
            let hash = Hash::of(&bytes);
            let calls = replicas.iter().map(|node| self.transport.call(*node, Request::PutChunkList(bytes.clone())));
            self.expect_acks(format!("chunk list {hash}"), calls, needed).await?;
            lists.push(ChunkListRef { hash, offset, len });
        }
        Ok((Vec::new(), lists))
    }

    /// A chunk list of a key's blob, from the first replica that has it intact.
    async fn fetch_chunk_list(&self, bucket: &str, key: &str, hash: &Hash) -> EngineResult<ChunkList> // PA
    {
        let ask =
            Ask { what: format!("chunk list {hash}"), expected: "ChunkList", request: Request::GetChunkList(*hash) };
        let accept = |response| match response {
            Response::ChunkList(Some(bytes)) => match ChunkList::decode_verified(hash, &bytes) {
                Ok(list) => Ok(Some(list)),
                Err(error) => {
                    tracing::warn!(%error, "a replica holds a damaged chunk list; asking the next");
                    Ok(None)
                }
            },
            Response::ChunkList(None) => Ok(None),
            other => Err(other),
        };
        match self.ask_first(self.object_replicas(bucket, key), ask, accept).await? {
            Some(list) => Ok(list),
            None => Err(EngineError::NoReplica { what: format!("chunk list {hash} (not found)"), errors: Vec::new() }),
        }
    }

    /// The chunks of a blob that overlap `start..end`, in order, whether
    /// inline or in chunk lists.
    pub async fn chunks_in(&self, blob: &Blob, start: u64, end: u64) -> EngineResult<Vec<ChunkRef>> // PA
    {
        let mut out = blob.chunks[blob.chunks_overlapping(start, end)].to_vec();
        for list in blob.chunk_lists.iter().filter(|l| l.offset < end && l.offset + l.len > start) {
            let held = self.fetch_chunk_list(&blob.bucket, &blob.key, &list.hash).await?;
            out.extend(held.chunks.into_iter().filter(|c| c.offset < end && c.offset + c.len as u64 > start));
        }
        Ok(out)
    }

    /// Set a row of a small metadata table on the replicas of `home`'s key.
    pub async fn put_row(&self, home: Home<'_>, row: TableRow) -> EngineResult<()> // PA
    {
        let replicas = self.object_replicas(home.bucket, home.key);
        let needed = placement::write_quorum(replicas.len());
        let TableRow { table, key, value, chunks } = row;
        let calls = replicas.iter().map(|node| {
            let request = Request::PutRow { table, key: key.clone(), value: value.clone(), chunks: chunks.clone() };
            self.transport.call(*node, request)
        });
        self.expect_acks(format!("row of table {table}"), calls, needed).await
    }

    /// A row from the first replica of `home` that has it.
    pub async fn get_row(&self, home: Home<'_>, table: u8, key: Vec<u8>) -> EngineResult<Option<Vec<u8>>> // PA
    {
        let ask =
            Ask { what: format!("row of table {table}"), expected: "Row", request: Request::GetRow { table, key } };
        let replicas = self.object_replicas(home.bucket, home.key);
        self.ask_first(replicas, ask, |r| if let Response::Row(row) = r { Ok(row) } else { Err(r) }).await
    }

    pub async fn delete_row(&self, home: Home<'_>, table: u8, key: Vec<u8>) -> EngineResult<()> // PA
    {
        let replicas = self.object_replicas(home.bucket, home.key);
        let needed = placement::write_quorum(replicas.len());
        let calls =
            replicas.iter().map(|node| self.transport.call(*node, Request::DeleteRow { table, key: key.clone() }));
        self.expect_acks(format!("row deletion in table {table}"), calls, needed).await
    }

    /// Up to `max` rows under `prefix` after `after`, merged from every member.
    pub async fn scan_rows(&self, table: u8, prefix: &[u8], after: &[u8], max: usize) -> EngineResult<Vec<Row>> // PA
    {
        let ask = Ask {
            what: format!("scan of table {table}"),
            expected: "Rows",
            request: Request::ScanRows { table, prefix: prefix.to_vec(), after: after.to_vec(), max },
        };
        let accept: Accept<Vec<Row>> = |r| if let Response::Rows(rows) = r { Ok(rows) } else { Err(r) };
        let answers = self.ask_all(&self.view.members(), ask, accept).await?;
        let merged: BTreeMap<Vec<u8>, Vec<u8>> = answers.into_iter().flatten().collect();
        Ok(merged.into_iter().take(max).collect())
    }

    /// Write a blob to its metadata replicas; answers once a quorum has it.
    pub async fn put_blob(&self, blob: Blob) -> EngineResult<StoredBlob> // PA
    {
        let (hash, bytes) = blob.encode_with_hash();
        let replicas = self.object_replicas(&blob.bucket, &blob.key);
        let needed = placement::write_quorum(replicas.len());
        let calls = replicas.iter().map(|node| self.transport.call(*node, Request::PutBlob(bytes.clone())));
        self.expect_acks(format!("blob {hash}"), calls, needed).await?;
        tracing::debug!(%hash, bucket = %blob.bucket, key = %blob.key, size = blob.size, "blob stored");
        Ok(StoredBlob { hash, blob })
    }

    /// Chunk, seal and place the body; returns the chunk list, MD5 and size.
    async fn store_body<H: BodyTap>(&self, mut body: impl BodyStream, mut tap: H) -> EngineResult<(WrittenBody, H)> // PA
    {
        // Queues bounded in bytes keep memory flat whatever the object size:
        // at most MD5_LAG_BYTES of body and `write_parallelism` chunks are in
        // flight.
        let (md5_tx, mut md5_rx) = PieceSender::new(MD5_LAG_BYTES);
        let (cdc_tx, mut cdc_rx) = PieceSender::new(CDC_QUEUE_BYTES);
        let (chunk_tx, chunk_rx) = mpsc::channel::<Vec<u8>>(1);

        let md5_task = tokio::task::spawn_blocking(move || {
            let mut md5 = Md5::new();
            let mut size = 0u64;
            while let Some((piece, _room)) = md5_rx.blocking_recv() {
                md5.update(&piece);
                tap.update(&piece);
                size += piece.len() as u64;
            }
            (<[u8; 16]>::from(md5.finalize()), size, tap)
        });
        let chunking = self.config.chunking;
        let cdc_task = tokio::task::spawn_blocking(move || {
            let mut chunker = Chunker::new(chunking);
            while let Some((piece, _room)) = cdc_rx.blocking_recv() {
                for chunk in chunker.push(&piece) {
                    if chunk_tx.blocking_send(chunk).is_err() {
                        return;
                    }
                }
            }
            for chunk in chunker.finish() {
                if chunk_tx.blocking_send(chunk).is_err() {
                    return;
                }
            }
        });

        let feed = async move {
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(EngineError::Body)?;
                if piece.is_empty() {
                    continue;
                }
                // A closed channel means a later stage failed; its error wins.
                if !md5_tx.send(piece.clone()).await || !cdc_tx.send(piece).await {
                    break;
                }
            }
            Ok::<(), EngineError>(())
        };
        // Each chunk takes one of the node's write permits before the next
        // is pulled, and keeps it until stored: a slow client holds none
        // while its body trickles in.
        let permits = self.write_permits.clone();
        let chunks = stream::unfold((chunk_rx, permits), |(mut rx, permits)| async move {
            let chunk = rx.recv().await?;
            let permit = permits.clone().acquire_owned().await.ok()?;
            Some(((chunk, permit), (rx, permits)))
        });
        // Chunks are stored in whatever order they finish: in order, one slow
        // chunk would hold back the next ones and leave cores idle.
        let store = chunks
            .enumerate()
            .map(|(index, (chunk, permit))| async move {
                let stored = self.store_chunk(chunk).await;
                drop(permit);
                stored.map(|stored| (index, stored))
            })
            .buffer_unordered(self.config.write_parallelism)
            .try_collect::<Vec<(usize, (Hash, u32))>>();
        let (fed, stored) = futures::join!(feed, store);
        let mut stored = stored?;
        fed?;
        stored.sort_unstable_by_key(|(index, _)| *index);
        cdc_task.await.map_err(|error| EngineError::Task(error.to_string()))?;
        let (md5, size, tap) = md5_task.await.map_err(|error| EngineError::Task(error.to_string()))?;

        let mut offset = 0u64;
        let chunks = stored
            .into_iter()
            .map(|(_, (id, len))| {
                let chunk = ChunkRef { id, offset, len };
                offset += len as u64;
                chunk
            })
            .collect();
        debug_assert_eq!(offset, size, "chunks must cover the body exactly");
        Ok((WrittenBody { chunks, md5, size }, tap))
    }

    /// Store one chunk unless the cluster already has it; returns (id, length).
    async fn store_chunk(&self, plain: Vec<u8>) -> EngineResult<(Hash, u32)> // PA
    {
        let len = u32::try_from(plain.len()).map_err(|_| EngineError::Config("chunk over 4 GiB".into()))?;
        let local = self.view.local_node();
        let store = self.transport.local_store(local);
        let members = self.view.members();
        let erasure = self.config.erasure.unwrap_or_else(|| Erasure::for_cluster(members.len()));
        let params = SealParams { erasure, zstd_level: self.config.zstd_level };
        let keys = self.keys.clone();
        let placed_on = members.clone();
        // A chunk wholly this node's is claimed or sealed in one step, and
        // stored apart from the workers, as storing may wait on an fsync.
        let (id, prepared) = compute(move || {
            let id = Hash::keyed(&keys.dedup_key, &plain);
            let prepared = match store.filter(|_| chunk_is_local(&id, params.erasure, &placed_on, local)) {
                Some(store) => match claim_or_seal(&store, id, plain, params, &keys)? {
                    None => Prepared::Stored,
                    Some(sealed) => Prepared::SealedHere(store, sealed),
                },
                None => Prepared::Elsewhere(plain),
            };
            Ok::<_, EngineError>((id, prepared))
        })
        .await??;
        let plain = match prepared {
            Prepared::Stored => return Ok((id, len)),
            Prepared::SealedHere(store, sealed) => {
                blocking(move || store_sealed(&store, &sealed)).await??;
                return Ok((id, len));
            }
            Prepared::Elsewhere(plain) => plain,
        };
        if self.claim_chunk(&id).await {
            return Ok((id, len));
        }

        let recipients = self.keys.recipients.clone();
        let sealed = compute(move || seal::seal_chunk(id, plain, params, &recipients)).await??;

        let ranked = placement::rank(&id, &members);
        let calls =
            sealed.slices.into_iter().enumerate().map(|(index, slice)| self.put_slice(id, index, slice, &ranked));
        // Durable once k+1 slices are down (all of them when there is no parity);
        // missing ones are rebuilt by repair.
        let needed = (erasure.data as usize + 1).min(erasure.total());
        self.expect_quorum(format!("slices of chunk {id}"), calls, needed).await?;

        let replicas = placement::partition_replicas(placement::partition_of_hash(&id), &members);
        let needed = placement::write_quorum(replicas.len());
        let calls = replicas.iter().map(|node| self.transport.call(*node, Request::PutChunk(sealed.manifest.clone())));
        self.expect_quorum(format!("manifest of chunk {id}"), calls, needed).await?;
        Ok((id, len))
    }

    /// Store slice `index` of a chunk on its home node, the `index`-th
    /// ranked; when the home is down or fails, hand it to the next ranked
    /// node that takes it, so a write goes on while a node is away. A node
    /// SWIM sees down is not waited for. A handed-off slice stays findable:
    /// readers ask the other nodes for a slice missing from its home.
    fn put_slice(&self, chunk: Hash, index: usize, slice: SealedSlice, ranked: &[NodeId]) -> Call // PA
    {
        let candidates = handoff_order(index, ranked, |node| self.view.is_down(node));
        let transport = self.transport.clone();
        async move {
            let mut last = None;
            for node in candidates {
                match transport.call(node, Request::PutSlice { chunk, slice: slice.clone() }).await {
                    Ok(Response::Stored) => return Ok(Response::Stored),
                    Ok(other) => {
                        last = Some(TransportError::UnexpectedResponse { node, expected: "Stored", got: other.kind() })
                    }
                    Err(error) => last = Some(error),
                }
            }
            Err(last.unwrap_or(TransportError::Unreachable { node: NodeId::default(), cause: Unreachable::NoTaker }))
        }
        .boxed()
    }

    /// Wait for every call's answer (each has a deadline, and a node seen
    /// down fails at once) and require `needed` acknowledgements. Metadata
    /// writes use this: until reads take a quorum, a replica left behind in
    /// the background could answer a read with what was just replaced.
    async fn expect_acks(&self, what: String, calls: impl Iterator<Item = Call>, needed: usize) -> EngineResult<()> // PA
    {
        let results = futures::future::join_all(calls).await;
        let mut errors = Vec::new();
        let mut acked = 0;
        for result in results {
            match result {
                Ok(Response::Stored) => acked += 1,
                Ok(other) => errors.push(TransportError::UnexpectedResponse {
                    node: Hash::default(),
                    expected: "Stored",
                    got: other.kind(),
                }),
                Err(error) => errors.push(error),
            }
        }
        if acked < needed {
            return Err(EngineError::Quorum { what, acked, needed, errors });
        }
        if !errors.is_empty() {
            tracing::warn!(%what, acked, errors = %join_errors(&errors), "write acknowledged with nodes missing");
        }
        Ok(())
    }

    /// Wait for `needed` acknowledgements and return: the calls still under
    /// way finish in the background instead of holding the client for the
    /// slowest node. Only for content-addressed records (slices, chunk
    /// manifests), which readers look for until they find them, so a copy
    /// still on its way is never mistaken for an older one. Fails as soon as
    /// too many calls have failed for the quorum.
    async fn expect_quorum(&self, what: String, calls: impl Iterator<Item = Call>, needed: usize) -> EngineResult<()> // PA
    {
        let mut pending: futures::stream::FuturesUnordered<Call> = calls.collect();
        let total = pending.len();
        let mut errors = Vec::new();
        let mut acked = 0;
        while acked < needed && total - errors.len() >= needed {
            match pending.next().await {
                Some(Ok(Response::Stored)) => acked += 1,
                Some(Ok(other)) => errors.push(TransportError::UnexpectedResponse {
                    node: Hash::default(),
                    expected: "Stored",
                    got: other.kind(),
                }),
                Some(Err(error)) => errors.push(error),
                None => break,
            }
        }
        if acked < needed {
            return Err(EngineError::Quorum { what, acked, needed, errors });
        }
        if !errors.is_empty() {
            tracing::warn!(%what, acked, errors = %join_errors(&errors), "write acknowledged with nodes missing");
        }
        if !pending.is_empty() {
            tokio::spawn(async move {
                let mut missed = Vec::new();
                while let Some(result) = pending.next().await {
                    match result {
                        Ok(Response::Stored) => {}
                        Ok(other) => missed.push(TransportError::UnexpectedResponse {
                            node: Hash::default(),
                            expected: "Stored",
                            got: other.kind(),
                        }),
                        Err(error) => missed.push(error),
                    }
                }
                if !missed.is_empty() {
                    tracing::warn!(%what, errors = %join_errors(&missed), "copies beyond the quorum not written");
                }
            });
        }
        Ok(())
    }

    /// Send one request to every node in `nodes` at once and keep the
    /// answers `accept` recognises; fails only when no node answered.
    async fn ask_all<R>(&self, nodes: &[NodeId], ask: Ask, accept: Accept<R>) -> EngineResult<Vec<R>> // PA
    {
        self.ask_many(nodes, ask, accept, false).await
    }

    /// As `ask_all`, but every node must answer.
    async fn ask_every<R>(&self, nodes: &[NodeId], ask: Ask, accept: Accept<R>) -> EngineResult<Vec<R>> // PA
    {
        self.ask_many(nodes, ask, accept, true).await
    }

    async fn ask_many<R>(&self, nodes: &[NodeId], ask: Ask, accept: Accept<R>, every: bool) -> EngineResult<Vec<R>> // PA
    {
        let calls = nodes.iter().map(|node| self.transport.call(*node, ask.request.clone()));
        let results = futures::future::join_all(calls).await;
        let mut answers = Vec::with_capacity(nodes.len());
        let mut errors = Vec::new();
        for (node, result) in nodes.iter().zip(results) {
            match result.map(accept) {
                Ok(Ok(answer)) => answers.push(answer),
                Ok(Err(other)) => errors.push(TransportError::UnexpectedResponse {
                    node: *node,
                    expected: ask.expected,
                    got: other.kind(),
                }),
                Err(error) => errors.push(error),
            }
        }
        if answers.is_empty() || (every && !errors.is_empty()) {
            return Err(EngineError::NoReplica { what: ask.what, errors });
        }
        if !errors.is_empty() {
            tracing::warn!(what = %ask.what, errors = %join_errors(&errors), "some nodes did not answer");
        }
        Ok(answers)
    }

    /// Ask `nodes` one after another until one has what is asked for;
    /// `Ok(None)` when every node that answered has nothing.
    async fn ask_first<R>(&self, nodes: Vec<NodeId>, ask: Ask, accept: impl Fn(Response) -> Reply<R>) -> Found<R> // PA
    {
        let mut errors = Vec::new();
        let mut answered = false;
        for node in nodes {
            match self.transport.call(node, ask.request.clone()).await.map(&accept) {
                Ok(Ok(Some(found))) => return Ok(Some(found)),
                Ok(Ok(None)) => answered = true,
                Ok(Err(other)) => {
                    errors.push(TransportError::UnexpectedResponse { node, expected: ask.expected, got: other.kind() })
                }
                Err(error) => errors.push(error),
            }
        }
        if answered {
            Ok(None)
        } else {
            Err(EngineError::NoReplica { what: ask.what, errors })
        }
    }

    fn object_replicas(&self, bucket: &str, key: &str) -> Vec<NodeId> // PA
    {
        placement::partition_replicas(placement::partition_of(bucket, key), &self.view.members())
    }

    /// Whether the cluster holds a chunk; claims it on every replica that
    /// does, so garbage collection spares it until this write references it.
    async fn claim_chunk(&self, id: &Hash) -> bool // PA
    {
        let replicas = placement::partition_replicas(placement::partition_of_hash(id), &self.view.members());
        let ask = Ask { what: format!("claim of chunk {id}"), expected: "Chunk", request: Request::ClaimChunk(*id) };
        let accept: Accept<Option<Chunk>> = |r| if let Response::Chunk(chunk) = r { Ok(chunk) } else { Err(r) };
        match self.ask_all(&replicas, ask, accept).await {
            Ok(answers) => answers.iter().flatten().any(|chunk| chunk.id == *id),
            Err(error) => {
                tracing::warn!(chunk = %id, %error, "chunk claim failed; storing it again");
                false
            }
        }
    }

    /// One garbage-collection pass over the chunks whose manifests this node
    /// is the first replica of: a chunk that no blob and no upload part
    /// references anywhere, and that no write claimed since
    /// `claimed_before`, loses its manifest on every replica and then its
    /// slices. Slices are removed only once every replica dropped the
    /// manifest, so a racing write that claimed it on any replica keeps it.
    pub async fn collect_garbage(&self, claimed_before: u64) -> EngineResult<GcReport> // PA
    {
        let local = self.view.local_node();
        let members = self.view.members();
        let mut report = GcReport::default();
        let mut after = None;
        loop {
            let ask = Ask {
                what: "unclaimed chunks".into(),
                expected: "Hashes",
                request: Request::UnclaimedChunks { claimed_before, after, max: 1000 },
            };
            let accept: Accept<Vec<Hash>> = |r| if let Response::Hashes(h) = r { Ok(h) } else { Err(r) };
            let page = self.ask_all(&[local], ask, accept).await?.into_iter().flatten().collect::<Vec<_>>();
            let Some(last) = page.last().copied() else { break };
            after = Some(last);
            let mine: Vec<Hash> = page
                .into_iter()
                .filter(|id| {
                    placement::partition_replicas(placement::partition_of_hash(id), &members).first() == Some(&local)
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            // Every member must answer: a reference held by a node that is
            // down would otherwise go unseen.
            let ask =
                Ask { what: "chunk references".into(), expected: "Hashes", request: Request::Referenced(mine.clone()) };
            let referenced: std::collections::HashSet<Hash> =
                self.ask_every(&members, ask, accept).await?.into_iter().flatten().collect();
            for id in mine.into_iter().filter(|id| !referenced.contains(id)) {
                match self.free_chunk(&id, claimed_before, &members).await {
                    Some(slices) => {
                        report.chunks_freed += 1;
                        report.slices_removed += slices;
                    }
                    None => report.chunks_kept += 1,
                }
            }
        }
        report.orphan_slices_removed = self.collect_orphan_slices(claimed_before).await?;
        if report.chunks_freed > 0 || report.orphan_slices_removed > 0 {
            tracing::info!(
                freed = report.chunks_freed,
                slices = report.slices_removed,
                orphans = report.orphan_slices_removed,
                "garbage collected"
            );
        }
        Ok(report)
    }

    /// Every slice the manifests of `chunk` list, over all its replicas;
    /// `None` unless every replica answered.
    async fn slices_listed_for(&self, chunk: &Hash, members: &[NodeId]) -> Option<Vec<Hash>> // PA
    {
        let replicas = placement::partition_replicas(placement::partition_of_hash(chunk), members);
        let ask =
            Ask { what: format!("manifest of chunk {chunk}"), expected: "Chunk", request: Request::GetChunk(*chunk) };
        let accept: Accept<Option<Chunk>> = |r| if let Response::Chunk(c) = r { Ok(c) } else { Err(r) };
        let manifests = self.ask_every(&replicas, ask, accept).await.ok()?;
        Some(manifests.into_iter().flatten().flat_map(|m| m.slices).collect())
    }

    /// Remove this node's slices, stored before `stored_before`, that no
    /// replica's manifest of their chunk lists; every replica must answer.
    async fn collect_orphan_slices(&self, stored_before: u64) -> EngineResult<usize> // PA
    {
        let local = self.view.local_node();
        let members = self.view.members();
        let mut removed = 0;
        let mut after = None;
        loop {
            let ask = Ask {
                what: "stored slices".into(),
                expected: "SliceOwners",
                request: Request::SlicesStoredBefore { stored_before, after, max: 1000 },
            };
            let accept: Accept<Vec<(Hash, Hash)>> = |r| if let Response::SliceOwners(o) = r { Ok(o) } else { Err(r) };
            let page: Vec<(Hash, Hash)> = self.ask_all(&[local], ask, accept).await?.into_iter().flatten().collect();
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            let mut listed: BTreeMap<Hash, Vec<Hash>> = BTreeMap::new();
            for (slice, chunk) in page {
                if let std::collections::btree_map::Entry::Vacant(entry) = listed.entry(chunk) {
                    match self.slices_listed_for(&chunk, &members).await {
                        Some(slices) => entry.insert(slices),
                        // A replica did not answer: nothing is removed.
                        None => continue,
                    };
                }
                if listed.get(&chunk).is_some_and(|slices| !slices.contains(&slice)) {
                    match self.transport.call(local, Request::RemoveSlice(slice)).await {
                        Ok(Response::Stored) => removed += 1,
                        other => tracing::warn!(%slice, answer = ?other.map(|r| r.kind()), "orphan slice not removed"),
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Free one unreferenced chunk; the number of slices removed, or `None`
    /// if a replica kept its manifest.
    async fn free_chunk(&self, id: &Hash, claimed_before: u64, members: &[NodeId]) -> Option<usize> // PA
    {
        let replicas = placement::partition_replicas(placement::partition_of_hash(id), members);
        let calls =
            replicas.iter().map(|node| self.transport.call(*node, Request::FreeChunk { id: *id, claimed_before }));
        let mut manifest = None;
        for answer in futures::future::join_all(calls).await {
            match answer {
                Ok(Response::Freed(Freed::Freed(chunk))) => manifest = Some(chunk),
                Ok(Response::Freed(Freed::Absent)) => {}
                Ok(Response::Freed(Freed::Claimed)) => return None,
                other => {
                    tracing::warn!(chunk = %id, answer = ?other.map(|r| r.kind()), "chunk kept: a replica did not free it");
                    return None;
                }
            }
        }
        let manifest = manifest?;
        let ranked = placement::rank(id, members);
        let mut removed = 0;
        for (index, slice) in manifest.slices.iter().enumerate() {
            let Some(node) = ranked.get(index % ranked.len().max(1)) else { break };
            match self.transport.call(*node, Request::RemoveSlice(*slice)).await {
                Ok(Response::Stored) => removed += 1,
                other => tracing::warn!(chunk = %id, index, answer = ?other.map(|r| r.kind()), "slice not removed"),
            }
        }
        Some(removed)
    }

    async fn fetch_chunk_manifest(&self, id: &Hash) -> EngineResult<Chunk> // PA
    {
        let replicas = placement::partition_replicas(placement::partition_of_hash(id), &self.view.members());
        let ask = Ask { what: format!("manifest of chunk {id}"), expected: "Chunk", request: Request::GetChunk(*id) };
        let accept = |r| if let Response::Chunk(chunk) = r { Ok(chunk.filter(|c| c.id == *id)) } else { Err(r) };
        match self.ask_first(replicas, ask, accept).await {
            Ok(Some(chunk)) => Ok(chunk),
            Ok(None) => Err(EngineError::ChunkNotFound(*id)),
            Err(error) => {
                tracing::warn!(chunk = %id, %error, "manifest lookup failed");
                Err(EngineError::ChunkNotFound(*id))
            }
        }
    }

    /// The current heads of a key: the union over its reachable replicas,
    /// newest first.
    pub async fn heads(&self, bucket: &str, key: &str) -> EngineResult<Vec<ObjectSummary>> // PA
    {
        let replicas = self.object_replicas(bucket, key);
        let ask = Ask {
            what: format!("heads of {bucket}/{key}"),
            expected: "Heads",
            request: Request::Heads { bucket: bucket.to_string(), key: key.to_string() },
        };
        let accept: Accept<Vec<ObjectSummary>> = |r| if let Response::Heads(heads) = r { Ok(heads) } else { Err(r) };
        let mut heads: Vec<ObjectSummary> = self.ask_all(&replicas, ask, accept).await?.into_iter().flatten().collect();
        heads.sort_by_key(|h| std::cmp::Reverse((h.entry.created, h.version)));
        heads.dedup_by_key(|h| h.version);
        Ok(heads)
    }

    /// The versions written on top of `version`: the union over the key's
    /// reachable replicas.
    pub async fn children(&self, bucket: &str, key: &str, version: &Hash) -> EngineResult<Vec<Hash>> // PA
    {
        let ask =
            Ask { what: format!("children of {version}"), expected: "Hashes", request: Request::Children(*version) };
        let accept: Accept<Vec<Hash>> = |r| if let Response::Hashes(hashes) = r { Ok(hashes) } else { Err(r) };
        let mut children: Vec<Hash> =
            self.ask_all(&self.object_replicas(bucket, key), ask, accept).await?.into_iter().flatten().collect();
        children.sort();
        children.dedup();
        Ok(children)
    }

    /// Forget one version of a key on its replicas (S3's DELETE of a version
    /// id). Forgetting a version that does not exist succeeds.
    pub async fn forget_version(&self, bucket: &str, key: &str, version: &Hash) -> EngineResult<()> // PA
    {
        let replicas = self.object_replicas(bucket, key);
        let needed = placement::write_quorum(replicas.len());
        let calls = replicas.iter().map(|node| self.transport.call(*node, Request::ForgetBlob(*version)));
        self.expect_acks(format!("forgetting version {version} of {bucket}/{key}"), calls, needed).await?;
        tracing::debug!(%bucket, %key, %version, "version forgotten");
        Ok(())
    }

    /// Every version of one key, newest first.
    pub async fn key_versions(&self, bucket: &str, key: &str) -> EngineResult<Vec<ObjectSummary>> // PA
    {
        let mut out = Vec::new();
        let mut start = VersionStart::Keys(ListStart::Beginning);
        loop {
            let (page, more) = self.list_versions(bucket, key, start, 1000).await?;
            let done = !more || page.iter().any(|v| v.key != key);
            let Some(last) = page.last() else { break };
            start = VersionStart::AfterVersion {
                key: last.key.clone(),
                created: last.entry.created,
                version: last.version,
            };
            out.extend(page.into_iter().filter(|v| v.key == key));
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` versions under `prefix`, keys in order and each key's
    /// versions newest first, merged from every member; and whether more
    /// may follow.
    pub async fn list_versions(&self, bucket: &str, prefix: &str, start: VersionStart, limit: usize) -> Listed // PA
    {
        let want = limit.saturating_add(1);
        let ask = Ask {
            what: format!("version listing of {bucket}"),
            expected: "Keys",
            request: Request::ListVersions {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                start,
                limit: want,
            },
        };
        let accept: Accept<Vec<ObjectSummary>> = |r| if let Response::Keys(keys) = r { Ok(keys) } else { Err(r) };
        let order = |s: &ObjectSummary| (s.key.clone(), std::cmp::Reverse((s.entry.created, s.version)));
        let mut merged: BTreeMap<_, ObjectSummary> = BTreeMap::new();
        // As in `list_objects`: a full answer may have stopped short of
        // versions another node sent, so the page ends at the smallest last
        // entry of any full answer.
        let mut cutoff = None;
        for versions in self.ask_all(&self.view.members(), ask, accept).await? {
            if versions.len() == want {
                if let Some(last) = versions.last().map(order) {
                    cutoff = Some(cutoff.map_or(last.clone(), |held: (String, _)| held.min(last)));
                }
            }
            for version in versions {
                merged.insert(order(&version), version);
            }
        }
        let mut page: Vec<ObjectSummary> = merged
            .into_iter()
            .take_while(|(at, _)| cutoff.as_ref().is_none_or(|c| at <= c))
            .map(|(_, version)| version)
            .collect();
        let more = page.len() > limit || cutoff.is_some();
        page.truncate(limit);
        Ok((page, more))
    }

    /// One version of a key, by hash, from the first replica that has it
    /// intact.
    pub async fn get_blob(&self, bucket: &str, key: &str, hash: &Hash) -> EngineResult<Option<Blob>> // PA
    {
        let ask = Ask { what: format!("blob {hash}"), expected: "Blob", request: Request::GetBlob(*hash) };
        let accept = |response| match response {
            Response::Blob(Some(bytes)) => match Blob::decode_verified(hash, &bytes) {
                Ok(blob) => Ok(Some(blob)),
                Err(error) => {
                    tracing::warn!(%error, "a replica holds a damaged blob; asking the next");
                    Ok(None)
                }
            },
            Response::Blob(None) => Ok(None),
            other => Err(other),
        };
        self.ask_first(self.object_replicas(bucket, key), ask, accept).await
    }

    /// The newest head of a key (by created time, then hash), as S3 reads see it.
    pub async fn latest(&self, bucket: &str, key: &str) -> EngineResult<Option<StoredBlob>> // PA
    {
        for head in self.heads(bucket, key).await? {
            if let Some(blob) = self.get_blob(bucket, key, &head.version).await? {
                return Ok(Some(StoredBlob { hash: head.version, blob }));
            }
        }
        Ok(None)
    }

    /// Every node's view of the bucket registers, merged (newest wins).
    async fn bucket_records(&self) -> EngineResult<BTreeMap<String, BucketRecord>> // PA
    {
        let ask = Ask { what: "bucket list".into(), expected: "Buckets", request: Request::ListBuckets };
        let accept: Accept<Vec<BucketRecord>> = |r| if let Response::Buckets(b) = r { Ok(b) } else { Err(r) };
        let mut merged: BTreeMap<String, BucketRecord> = BTreeMap::new();
        for record in self.ask_all(&self.view.members(), ask, accept).await?.into_iter().flatten() {
            match merged.get(&record.name) {
                Some(held) if !record.supersedes(held) => {}
                _ => {
                    merged.insert(record.name.clone(), record);
                }
            }
        }
        Ok(merged)
    }

    /// Live buckets, by name.
    pub async fn list_buckets(&self) -> EngineResult<Vec<BucketRecord>> // A
    {
        Ok(self.bucket_records().await?.into_values().filter(|b| !b.deleted).collect())
    }

    /// A live bucket's record, from this node's copy: every node keeps every
    /// bucket record, so the hot path asks no other node. A bucket this node
    /// has not heard of is asked of every member, and kept. A node that
    /// missed an update catches up at the next `sync_buckets`.
    pub async fn bucket(&self, name: &str) -> EngineResult<Option<BucketRecord>> // PA
    {
        let store = self.transport.local_store(self.view.local_node());
        if let Some(store) = store.clone() {
            let wanted = name.to_string();
            if let Some(record) = blocking(move || store.get_bucket(&wanted)).await?? {
                return Ok((!record.deleted).then_some(record));
            }
        }
        let record = self.bucket_records().await?.remove(name);
        if let (Some(record), Some(store)) = (record.clone(), store) {
            blocking(move || store.put_bucket(&record)).await??;
        }
        Ok(record.filter(|b| !b.deleted))
    }

    /// Bring this node's copy of every bucket record up to date with what
    /// the reachable members hold (newest wins); returns how many records
    /// were asked about. Run at start and every little while.
    pub async fn sync_buckets(&self) -> EngineResult<usize> // PA
    {
        let merged = self.bucket_records().await?;
        let count = merged.len();
        if let Some(store) = self.transport.local_store(self.view.local_node()) {
            blocking(move || merged.values().try_for_each(|record| store.put_bucket(record))).await??;
        }
        Ok(count)
    }

    /// Write a bucket record to every member; a majority must take it.
    pub async fn put_bucket_record(&self, record: &BucketRecord) -> EngineResult<()> // PA
    {
        let bytes = codec::encode(record);
        let members = self.view.members();
        let needed = placement::write_quorum(members.len());
        let calls = members.iter().map(|node| self.transport.call(*node, Request::PutBucket(bytes.clone())));
        self.expect_acks(format!("bucket {}", record.name), calls, needed).await
    }

    /// Create a bucket; `false` if it already exists.
    pub async fn create_bucket(&self, name: &str) -> EngineResult<bool> // PA
    {
        let held = self.bucket_records().await?.remove(name);
        if held.as_ref().is_some_and(|b| !b.deleted) {
            return Ok(false);
        }
        let now = now_nanos().max(held.map_or(0, |b| b.updated + 1));
        let record = BucketRecord {
            name: name.to_string(),
            created: now,
            updated: now,
            deleted: false,
            versioning: Versioning::Unversioned,
        };
        self.put_bucket_record(&record).await?;
        Ok(true)
    }

    /// Set a bucket's versioning state (S3's PutBucketVersioning).
    pub async fn set_versioning(&self, record: BucketRecord, versioning: Versioning) -> EngineResult<()> // PA
    {
        let updated = now_nanos().max(record.updated + 1);
        self.put_bucket_record(&BucketRecord { versioning, updated, ..record }).await
    }

    /// Mark a bucket deleted. The caller checks that it is empty.
    pub async fn delete_bucket(&self, record: BucketRecord) -> EngineResult<()> // PA
    {
        let updated = now_nanos().max(record.updated + 1);
        self.put_bucket_record(&BucketRecord { deleted: true, updated, ..record }).await
    }

    /// Up to `limit` live objects of `bucket` under `prefix` in key order from
    /// `start` (keys whose newest head is a delete marker are skipped), and
    /// whether more may follow.
    pub async fn list_objects(&self, bucket: &str, prefix: &str, start: ListStart, limit: usize) -> Listed // PA
    {
        let members = self.view.members();
        let mut start = start;
        let mut live = Vec::new();
        // One more than asked tells whether more follow.
        let want = limit.saturating_add(1);
        loop {
            let ask = Ask {
                what: format!("listing of {bucket}"),
                expected: "Keys",
                request: Request::ListKeys {
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string(),
                    start: start.clone(),
                    limit: want,
                },
            };
            let accept: Accept<Vec<ObjectSummary>> = |r| if let Response::Keys(keys) = r { Ok(keys) } else { Err(r) };
            let mut merged: BTreeMap<String, ObjectSummary> = BTreeMap::new();
            // A full answer may have stopped short of keys another node sent:
            // the page ends at the smallest last key of any full answer.
            let mut cutoff: Option<String> = None;
            for keys in self.ask_all(&members, ask, accept).await? {
                if keys.len() == want {
                    let last = keys.last().map(|s| s.key.clone());
                    cutoff = match (cutoff, last) {
                        (Some(held), Some(last)) => Some(held.min(last)),
                        (held, last) => held.or(last),
                    };
                }
                for summary in keys {
                    match merged.get(&summary.key) {
                        Some(held) if !summary.newer_than(held) => {}
                        _ => {
                            merged.insert(summary.key.clone(), summary);
                        }
                    }
                }
            }
            let more = cutoff.is_some();
            let page: Vec<ObjectSummary> =
                merged.into_values().take_while(|s| cutoff.as_ref().is_none_or(|c| s.key <= *c)).collect();
            let last = page.last().map(|s| s.key.clone());
            live.extend(page.into_iter().filter(|s| s.entry.kind != BlobKind::DeleteMarker));
            if live.len() > limit {
                live.truncate(limit);
                return Ok((live, true));
            }
            match (more, last) {
                (true, Some(last)) => start = ListStart::After(last),
                _ => return Ok((live, false)),
            }
        }
    }

    /// Stream `range` of a blob's bytes (clamped to its size), fetching and
    /// opening only the chunks that overlap it, `read_ahead` at a time. The
    /// chunk lists of a large blob are fetched one at a time as the read
    /// reaches them.
    pub fn read(&self, blob: &Blob, range: Range<u64>) -> impl Stream<Item = EngineResult<Bytes>> + Send + 'static // PA
    {
        let end = range.end.min(blob.size);
        let start = range.start.min(end);
        let mut runs = vec![ChunkRun::Inline(blob.chunks[blob.chunks_overlapping(start, end)].to_vec())];
        runs.extend(
            blob.chunk_lists
                .iter()
                .filter(|l| l.offset < end && l.offset + l.len > start)
                .map(|l| ChunkRun::Listed(l.hash)),
        );
        let (bucket, key) = (blob.bucket.clone(), blob.key.clone());
        let lister = self.clone();
        let chunks = stream::iter(runs)
            .then(move |run| {
                let (engine, bucket, key) = (lister.clone(), bucket.clone(), key.clone());
                async move {
                    match run {
                        ChunkRun::Inline(chunks) => Ok(chunks),
                        ChunkRun::Listed(hash) => Ok(engine.fetch_chunk_list(&bucket, &key, &hash).await?.chunks),
                    }
                }
            })
            .map(move |run: EngineResult<Vec<ChunkRef>>| {
                let chunks: Vec<EngineResult<ChunkRef>> = match run {
                    Ok(chunks) => chunks
                        .into_iter()
                        .filter(|c| c.offset < end && c.offset + c.len as u64 > start)
                        .map(Ok)
                        .collect(),
                    Err(error) => vec![Err(error)],
                };
                stream::iter(chunks)
            })
            .flatten();
        let engine = self.clone();
        chunks
            .map(move |chunk| {
                let engine = engine.clone();
                async move {
                    let chunk = chunk?;
                    let permit = engine.read_permits.clone().acquire_owned().await;
                    let plain = engine.read_chunk(&chunk).await;
                    drop(permit);
                    let plain = plain?;
                    let from = start.saturating_sub(chunk.offset) as usize;
                    let to = (end - chunk.offset).min(chunk.len as u64) as usize;
                    Ok(Bytes::from(plain).slice(from..to))
                }
            })
            .buffered(self.config.read_ahead)
    }

    /// Fetch a chunk's slices (data slices first, parity only if needed) and
    /// open it.
    async fn read_chunk(&self, chunk: &ChunkRef) -> EngineResult<Vec<u8>> // PA
    {
        let plain = match self.read_local_chunk(chunk.id).await? {
            Some(plain) => plain,
            None => self.fetch_and_open_chunk(chunk.id).await?,
        };
        if plain.len() != chunk.len as usize {
            return Err(EngineError::ChunkLength { chunk: chunk.id, expected: chunk.len, actual: plain.len() });
        }
        Ok(plain)
    }

    /// When this node holds a chunk's manifest and its k data slices, read
    /// and open them in one job on a CPU worker, so the slices are still in
    /// that core's cache when they are decrypted, and no request is made per
    /// slice. `None` when any of it is elsewhere or missing; the general path
    /// then takes over.
    async fn read_local_chunk(&self, id: Hash) -> EngineResult<Option<Vec<u8>>> // PA
    {
        let local = self.view.local_node();
        let Some(store) = self.transport.local_store(local) else { return Ok(None) };
        let members = self.view.members();
        if !placement::partition_replicas(placement::partition_of_hash(&id), &members).contains(&local) {
            return Ok(None);
        }
        let ranked = placement::rank(&id, &members);
        let keys = self.keys.clone();
        let (reader, opener) = (store.clone(), keys.clone());
        let opened = compute(move || {
            let manifest = match reader.get_chunk(&id) {
                Ok(Some(manifest)) if manifest.id == id => manifest,
                _ => return None,
            };
            let k = manifest.erasure.data as usize;
            if ranked.is_empty() || manifest.slices.len() < k || (0..k).any(|i| ranked[i % ranked.len()] != local) {
                return None;
            }
            let opened = gather_data_shards(&reader, &manifest).map(|(stored, seals)| {
                seal::open_gathered(&manifest, stored, &seals, &opener).inspect_err(
                    |error| tracing::warn!(chunk = %id, %error, "gathered slices unusable, opening one by one"),
                )
            });
            Some((manifest, opened))
        })
        .await?;
        let manifest = match opened {
            None => return Ok(None),
            Some((_, Some(Ok(plain)))) => return Ok(Some(plain)),
            Some((manifest, _)) => manifest,
        };
        blocking(move || open_slice_by_slice(&store, &manifest, &keys)).await?
    }

    /// The general read path: the manifest from its replicas, then k slices
    /// from the nodes that hold them, parity only when data slices are
    /// missing.
    async fn fetch_and_open_chunk(&self, id: Hash) -> EngineResult<Vec<u8>> // PA
    {
        let manifest = self.fetch_chunk_manifest(&id).await?;
        let k = manifest.erasure.data as usize;
        let total = manifest.erasure.total();
        let ranked = placement::rank(&id, &self.view.members());
        if ranked.is_empty() {
            return Err(EngineError::NoReplica { what: format!("chunk {id} (no members)"), errors: Vec::new() });
        }
        let mut slices: Vec<Option<SealedSlice>> = vec![None; total];
        let mut errors = Vec::new();
        let mut have = 0;
        let mut next = 0;
        while have < k && next < total {
            let batch: Vec<usize> = (next..total).take(k - have).collect();
            next += batch.len();
            let fetches = batch.iter().map(|&index| {
                let node = ranked[index % ranked.len()];
                let hash = manifest.slices[index];
                let call = self.transport.call(node, Request::GetSlice(hash));
                async move { (index, node, call.await) }
            });
            for (index, node, result) in futures::future::join_all(fetches).await {
                match result {
                    Ok(Response::Slice(Some(slice))) if slice.hash == manifest.slices[index] => {
                        slices[index] = Some(slice);
                        have += 1;
                    }
                    Ok(Response::Slice(_)) => errors.push(TransportError::Remote {
                        node,
                        message: format!("slice {index} of chunk {} missing", id),
                    }),
                    Ok(other) => {
                        errors.push(TransportError::UnexpectedResponse { node, expected: "Slice", got: other.kind() })
                    }
                    Err(error) => errors.push(error),
                }
            }
        }
        // Too few at home (nodes away, slices handed off): ask the other
        // nodes, in the order a writer hands slices off.
        let mut index = 0;
        while have < k && index < total {
            if slices[index].is_none() {
                let home = ranked[index % ranked.len()];
                let hash = manifest.slices[index];
                for node in
                    handoff_order(index, &ranked, |node| self.view.is_down(node)).into_iter().filter(|n| *n != home)
                {
                    if let Ok(Response::Slice(Some(slice))) = self.transport.call(node, Request::GetSlice(hash)).await {
                        if slice.hash == hash {
                            slices[index] = Some(slice);
                            have += 1;
                            break;
                        }
                    }
                }
            }
            index += 1;
        }
        if !errors.is_empty() {
            tracing::warn!(chunk = %id, errors = %join_errors(&errors), "slices missing, reading parity");
        }
        let keys = self.keys.clone();
        Ok(compute(move || seal::open_chunk(&manifest, slices, &keys)).await??)
    }
}
