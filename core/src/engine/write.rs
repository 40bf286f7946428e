//! The write path: a body streamed through MD5 and FastCDC, each chunk
//! hashed, deduplicated, sealed and placed (slices on their ranked nodes,
//! handed off past nodes that are away; the manifest on its partition's
//! replicas), then the new version committed as a blob.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use futures::FutureExt;
use md5::{Digest, Md5};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::calls::{Acks, Query, Wait, WriteQuorum};
use super::{
    blocking, compute, stitch, BlobContent, BodyKind, BodyStream, BodyTap, Engine, EngineError, EngineResult, PartLead,
    PartOf, PutRequest, StoredBlob, WrittenBody,
};
use crate::chunker::{Chunker, ChunkerConfig};
use crate::cluster::Unreachable;
use crate::cluster::{
    ClaimChunk, ClusterView, HoldsSlices, PutChunk, PutChunkList, PutHandedOffSlice, PutSlice, Stored, Transport,
    TransportError,
};
use crate::codec;
use crate::compute::Stage;
use crate::hash::Hash;
use crate::keys::NodeKeys;
use crate::layout::Layout;
use crate::model::{
    Blob, Chunk, ChunkList, ChunkListRef, ChunkRef, Erasure, NodeId, PartRecord, SealedSlice, CHUNKS_PER_LIST,
};
use crate::placement::{self, Member};
use crate::seal::{self, SealParams};
use crate::store::{Claimed, LocalStore, StoreResult};
use crate::sync;

/// A chunk's slices on their way to their homes.
struct Outgoing {
    chunk: Hash,
    /// The slices' hashes, in position order.
    slices: Vec<Hash>,
    homes: Vec<NodeId>,
    /// The nodes a slice may be handed off to.
    members: Vec<Member>,
}

impl Outgoing {
    /// Slice `index` as sent to `node`: to its home as it is; to any other
    /// node with the home named, so that node keeps a hint with the copy
    /// and takes it home as soon as the home answers (`crate::handoff`).
    async fn send<T: Transport>(&self, transport: &T, node: NodeId, index: usize, slice: SealedSlice) -> Sent // PA
    {
        let (chunk, home) = (self.chunk, self.homes.get(index).copied());
        match (home, u32::try_from(index)) {
            (Some(home), Ok(index)) if home != node => {
                let slices = self.slices.clone();
                transport.ask(node, PutHandedOffSlice { chunk, slice, slices, index, home }).await
            }
            _ => transport.ask(node, PutSlice { chunk, slice }).await,
        }
    }
}

/// Whether a node stored a slice it was sent.
type Sent = Result<Stored, TransportError>;

/// A written body and the tap that saw it.
type Written<H> = EngineResult<(WrittenBody, H)>;

/// A blob's chunks kept inline and its chunk lists.
type Split = EngineResult<(Vec<ChunkRef>, Vec<ChunkListRef>)>;

/// Whether every slice of chunk `id` and every replica of its manifest
/// belong to `local`.
fn chunk_is_local(id: &Hash, erasure: Erasure, layout: &Layout, local: NodeId) -> bool // PA
{
    let homes = placement::slice_homes(id, erasure.total(), &layout.placing_members());
    let replicas = layout.hash_replicas(id).all();
    !homes.is_empty() && !replicas.is_empty() && homes.iter().chain(&replicas).all(|node| *node == local)
}

/// For a chunk that belongs wholly to this node: claim it if stored (`None`),
/// otherwise seal it for `store_sealed`.
fn claim_or_seal(store: &LocalStore, id: Hash, plain: Vec<u8>, params: SealParams, keys: &NodeKeys) -> Sealing // PA
{
    match store.claim_chunk(&id).map(|answer| answer.held) {
        Ok(Some(claimed)) if claimed.chunk.id == id => match reusable_here(store, claimed) {
            Ok(true) => return Ok(None),
            Ok(false) => {}
            Err(error) => tracing::warn!(chunk = %id, %error, "chunk check failed; storing it again"),
        },
        Ok(_) => {}
        Err(error) => tracing::warn!(chunk = %id, %error, "chunk claim failed; storing it again"),
    }
    Ok(Some(seal::seal_chunk(id, plain, params, &keys.recipients)?))
}

/// Whether a manifest claimed on this node, which holds all of the chunk,
/// may be reused: one that came from elsewhere only once k of its slices
/// are found here; it is then stored as this node's own.
fn reusable_here(store: &LocalStore, claimed: Claimed) -> StoreResult<bool> // PA
{
    if !claimed.unverified {
        return Ok(true);
    }
    let held = store.holds_slices(&claimed.chunk.slices)?.into_iter().filter(|held| *held).count();
    if held < claimed.chunk.erasure.data as usize {
        return Ok(false);
    }
    store.put_chunk(&claimed.chunk)?;
    Ok(true)
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

/// The last chunk of the part before, from whose start a part is chunked
/// (see `stitch`), or `None` to chunk it from its own start.
type Lead = Option<Arc<Vec<u8>>>;
type LeadRx = oneshot::Receiver<Lead>;

/// Chunks on their way to sealing, each with whether it is an edge of a
/// part (kept for cutting the part's junctions): one of the part's first
/// `PART_HEAD_CHUNKS`, or its last.
type ChunkSender = mpsc::Sender<(Vec<u8>, bool)>;

/// The chunker's side of `store_body`: cuts the body as it arrives, from
/// the start of the lead when there is one (the last chunk of the part
/// before, whose bytes come first: the piece that crosses into the body is
/// kept whole, and the lead it begins with is returned). A part's last
/// piece is left in `tails` for the part after it.
fn cut_body(config: ChunkerConfig, lead: LeadRx, body: PieceReceiver, chunks: ChunkSender, tail: TailTo) -> Led // PA
{
    let lead = lead.blocking_recv().ok().flatten();
    let mut cuts = BodyCuts {
        offset: 0,
        lead: lead.as_ref().map_or(0, |lead| lead.len() as u64),
        crossing: None,
        sent: 0,
        part: tail.is_some(),
        last: None,
        chunks,
    };
    let cut = cuts.cut_all(config, lead.as_deref().map(Vec::as_slice), body);
    let last = cuts.last.take();
    if let Some(PartWrite { part, junctions, .. }) = &tail {
        // With no piece at all, the stream still stands where the lead left it.
        let open = match &last {
            Some(last) => (last.len() < config.max as usize).then(|| last.clone()),
            None => lead.as_deref().cloned(),
        };
        junctions.tails.end(part, open);
    }
    if let (Some(last), true) = (last, cut) {
        cuts.send(last, true);
    }
    let (lead, len) = (lead?, cuts.crossing?);
    let dedup_key = tail?.dedup_key;
    Some(PartLead { from: Hash::keyed(&dedup_key, &lead), len })
}

/// What a part was led in with, if it was.
type Led = Option<PartLead>;

/// A part being written: where its last piece goes, and the key chunk ids
/// are made with.
struct PartWrite {
    part: PartOf,
    junctions: Arc<stitch::Junctions>,
    dedup_key: [u8; 32],
}

type TailTo = Option<PartWrite>;

/// Pieces cut from a lead and a body, sent on one behind, so the last is
/// known as the last.
struct BodyCuts {
    /// Where the next piece starts, counting the lead's bytes.
    offset: u64,
    lead: u64,
    /// The lead's bytes in the piece that crosses into the body.
    crossing: Option<u32>,
    /// Chunks of the body sent so far.
    sent: usize,
    part: bool,
    last: Option<Vec<u8>>,
    chunks: ChunkSender,
}

impl BodyCuts {
    /// Cut the lead and the body; false when the chunks' receiver is gone.
    fn cut_all(&mut self, config: ChunkerConfig, lead: Option<&[u8]>, mut body: PieceReceiver) -> bool // A
    {
        let mut chunker = Chunker::new(config);
        for piece in lead.map(|lead| chunker.push(lead)).unwrap_or_default() {
            if !self.take(piece) {
                return false;
            }
        }
        while let Some((piece, _room)) = body.blocking_recv() {
            for piece in chunker.push(&piece) {
                if !self.take(piece) {
                    return false;
                }
            }
        }
        chunker.finish().into_iter().all(|piece| self.take(piece))
    }

    fn take(&mut self, piece: Vec<u8>) -> bool // A
    {
        match self.last.replace(piece) {
            Some(before) => self.send(before, false),
            None => true,
        }
    }

    fn send(&mut self, piece: Vec<u8>, last: bool) -> bool // PA
    {
        let start = self.offset;
        self.offset += piece.len() as u64;
        // A piece wholly inside the lead is the part before's.
        if self.offset <= self.lead {
            return true;
        }
        if start < self.lead {
            self.crossing = Some((self.lead - start) as u32);
        }
        // Only a part chunked from its own start has its junction cut
        // again, reading these.
        let edge = self.part && self.lead == 0 && (last || self.sent < stitch::PART_HEAD_CHUNKS);
        self.sent += 1;
        self.chunks.blocking_send((piece, edge)).is_ok()
    }
}

/// A part's bytes held as they arrive until the part before it ends here,
/// so it can be chunked from that part's last chunk (see `stitch`).
struct LeadIn<'a> {
    tails: &'a stitch::PartTails,
    part: Option<PartOf>,
    /// Until the lead is decided.
    decide: Option<oneshot::Sender<Lead>>,
    held: Vec<(Bytes, Option<OwnedSemaphorePermit>)>,
    held_bytes: usize,
}

impl<'a> LeadIn<'a> {
    fn new(part: Option<PartOf>, decide: oneshot::Sender<Lead>, tails: &'a stitch::PartTails) -> Self // A
    {
        let mut lead = LeadIn { tails, part, decide: Some(decide), held: Vec::new(), held_bytes: 0 };
        match lead.part.as_ref().map(|part| tails.before(part)) {
            None | Some(Some(None)) => {
                lead.decided(None);
            }
            Some(Some(Some(last))) => {
                lead.decided(Some(last));
            }
            Some(None) => {}
        }
        lead
    }

    /// Take the next piece of the body; the pieces to chunk now.
    fn take(&mut self, piece: Bytes) -> Vec<Bytes> // PA
    {
        let Some(part) = self.part.clone().filter(|_| self.decide.is_some()) else { return vec![piece] };
        let units = piece.len().div_ceil(stitch::HELD_UNIT) as u32;
        let room = self.tails.held.clone().try_acquire_many_owned(units).ok();
        let no_room = room.is_none();
        self.held_bytes += piece.len();
        self.held.push((piece, room));
        if no_room || self.held_bytes > stitch::LEAD_HOLD_BYTES {
            // A part too large to hold, or the node holds all it may: go on
            // from the part's own start rather than hold up its client.
            return self.decided(None);
        }
        match self.tails.before(&part) {
            Some(last) => self.decided(last),
            None => Vec::new(),
        }
    }

    /// The body ended: the pieces still held, once the lead is known.
    async fn finish(&mut self) -> Vec<Bytes> // PA
    {
        match self.part.clone().filter(|_| self.decide.is_some()) {
            Some(part) => {
                let last = self.tails.wait_before(&part).await;
                self.decided(last)
            }
            None => Vec::new(),
        }
    }

    fn decided(&mut self, lead: Lead) -> Vec<Bytes> // A
    {
        if let Some(decide) = self.decide.take() {
            let _ = decide.send(lead);
        }
        self.held_bytes = 0;
        self.held.drain(..).map(|(piece, _room)| piece).collect()
    }
}

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// Store an object streamed from `body` as a new blob.
    pub async fn put_object(&self, request: PutRequest, body: impl BodyStream) -> EngineResult<StoredBlob> // PA
    {
        let (written, ()) = self.write_body(body, BodyKind::Object, ()).await?;
        self.commit(request, written).await
    }

    /// Chunk, seal and place a body without making it visible; `tap` sees
    /// every byte on the MD5 thread (for the checksums a client asked for).
    /// Nothing references the chunks until `commit`.
    pub async fn write_body<H: BodyTap>(&self, body: impl BodyStream, kind: BodyKind, tap: H) -> Written<H> // PA
    {
        self.store_body(body, kind, tap).await
    }

    /// Make a written body visible as a new version of `request.key`.
    pub async fn commit(&self, request: PutRequest, body: WrittenBody) -> EngineResult<StoredBlob> // PA
    {
        if body.lead.is_some() {
            return Err(EngineError::Config("a part's body cannot be committed as an object".into()));
        }
        let content =
            BlobContent { size: body.size, etag: hex::encode(body.md5), chunks: body.chunks, part_sizes: Vec::new() };
        self.commit_content(request, content).await
    }

    /// Make the parts of a multipart upload one new version: their chunk
    /// lists are stitched together with each junction cut as one stream
    /// would cut it (`stitch`), so the chunks are a single PUT's. The ETag
    /// is S3's MD5 of the part MD5s, with the part count.
    pub async fn commit_parts(&self, request: PutRequest, parts: Vec<PartRecord>) -> EngineResult<StoredBlob> // PA
    {
        let mut digests = Md5::new();
        for part in &parts {
            let digest = hex::decode(&part.etag)
                .map_err(|_| EngineError::Config(format!("part {} has a malformed ETag", part.number)))?;
            digests.update(&digest);
        }
        let chunks = self.stitch_parts(&parts).await?;
        let content = BlobContent {
            size: chunks.last().map_or(0, |last| last.offset + last.len as u64),
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
            created: self.world.now_nanos().max(newest_parent.saturating_add(1)),
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
        let mut lists = Vec::new();
        for run in chunks.chunks(CHUNKS_PER_LIST) {
            let (Some(first), Some(last)) = (run.first(), run.last()) else { continue };
            let offset = first.offset;
            let len = last.offset + last.len as u64 - offset;
            let bytes = codec::encode(&ChunkList { chunks: run.to_vec() });
            let hash = Hash::of(&bytes);
            let query = Query::to_replicas(format!("chunk list {hash}"), &replicas, PutChunkList { bytes });
            self.write_to(query, Wait::ForQuorum).await?;
            lists.push(ChunkListRef { hash, offset, len });
        }
        Ok((Vec::new(), lists))
    }

    /// Chunk, seal and place the body; returns the chunk list, MD5 and size.
    async fn store_body<H: BodyTap>(&self, mut body: impl BodyStream, kind: BodyKind, mut tap: H) -> Written<H> // PA
    {
        // Queues bounded in bytes keep memory flat whatever the object size:
        // at most MD5_LAG_BYTES of body and `write_parallelism` chunks are in
        // flight.
        // In a simulation the stages run one after another, each once its
        // input is whole (`compute::Stage`): the queues hold the whole body.
        let deterministic = crate::compute::deterministic();
        let (md5_room, cdc_room, chunk_room) = match deterministic {
            true => (usize::MAX, usize::MAX, Semaphore::MAX_PERMITS),
            false => (MD5_LAG_BYTES, CDC_QUEUE_BYTES, 1),
        };
        let (md5_tx, mut md5_rx) = PieceSender::new(md5_room);
        let (cdc_tx, cdc_rx) = PieceSender::new(cdc_room);
        let (chunk_tx, chunk_rx) = mpsc::channel(chunk_room);

        let md5_task = Stage::start(move || {
            let mut md5 = Md5::new();
            let mut size = 0u64;
            while let Some((piece, _room)) = md5_rx.blocking_recv() {
                md5.update(&piece);
                tap.update(&piece);
                size += piece.len() as u64;
            }
            (<[u8; 16]>::from(md5.finalize()), size, tap)
        });
        let part = match &kind {
            BodyKind::Part(part) => Some(part.clone()),
            BodyKind::Object => None,
        };
        let _writing = part.clone().map(|part| self.junctions.tails.writing(part));
        let (lead_tx, lead_rx) = oneshot::channel();
        let chunking = self.config.chunking;
        let tails = part.clone().map(|part| PartWrite {
            part,
            junctions: self.junctions.clone(),
            dedup_key: self.keys.dedup_key,
        });
        let cdc_task = Stage::start(move || cut_body(chunking, lead_rx, cdc_rx, chunk_tx, tails));

        let mut lead = LeadIn::new(part, lead_tx, &self.junctions.tails);
        let feed = async move {
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(EngineError::Body)?;
                if piece.is_empty() {
                    continue;
                }
                // A closed channel means a later stage failed; its error wins.
                if !md5_tx.send(piece.clone()).await {
                    return Ok(());
                }
                for piece in lead.take(piece) {
                    if !cdc_tx.send(piece).await {
                        return Ok(());
                    }
                }
            }
            for piece in lead.finish().await {
                if !cdc_tx.send(piece).await {
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
            .map(|(index, ((chunk, edge), permit))| async move {
                let kept = edge.then(|| chunk.clone());
                let stored = self.store_chunk(chunk).await;
                drop(permit);
                let stored = stored?;
                if let Some(kept) = kept {
                    self.junctions.edges.keep(stored.0, kept);
                }
                Ok::<_, EngineError>((index, stored))
            })
            .buffer_unordered(self.config.write_parallelism)
            .try_collect::<Vec<(usize, (Hash, u32))>>();
        let (fed, stored, lead) = if deterministic {
            let fed = feed.await;
            let lead = cdc_task.finish().await;
            (fed, store.await, lead)
        } else {
            let (fed, stored) = futures::join!(feed, store);
            (fed, stored, cdc_task.finish().await)
        };
        let mut stored = stored?;
        fed?;
        stored.sort_unstable_by_key(|(index, _)| *index);
        let lead = lead.map_err(|error| EngineError::Task(error.to_string()))?;
        let (md5, size, tap) = md5_task.finish().await.map_err(|error| EngineError::Task(error.to_string()))?;

        let mut offset = 0u64;
        let chunks = stored
            .into_iter()
            .map(|(_, (id, len))| {
                let chunk = ChunkRef { id, offset, len };
                offset += len as u64;
                chunk
            })
            .collect();
        let covered = offset.saturating_sub(lead.map_or(0, |lead| lead.len as u64));
        if covered != size {
            return Err(EngineError::Config(format!("the chunks of a body cover {covered} bytes, the body {size}")));
        }
        Ok((WrittenBody { chunks, md5, size, lead }, tap))
    }

    /// Store one chunk unless the cluster already has it; returns (id, length).
    pub(super) async fn store_chunk(&self, plain: Vec<u8>) -> EngineResult<(Hash, u32)> // PA
    {
        let len = u32::try_from(plain.len()).map_err(|_| EngineError::Config("chunk over 4 GiB".into()))?;
        let local = self.view.local_node();
        let store = self.transport.local_store(local);
        let layout = self.view.layout();
        let members = layout.placing_members();
        let erasure = self.config.erasure.unwrap_or_else(|| layout.erasure());
        let params = SealParams { erasure, zstd_level: self.config.zstd_level };
        let keys = self.keys.clone();
        let placed_on = layout.clone();
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

        let homes = placement::slice_homes(&id, erasure.total(), &members);
        let outgoing = Arc::new(Outgoing {
            chunk: id,
            slices: sealed.slices.iter().map(|slice| slice.hash).collect(),
            homes,
            members,
        });
        let calls = sealed.slices.into_iter().enumerate().map(|(index, slice)| self.put_slice(&outgoing, index, slice));
        // Acknowledged only once every slice is stored, at its home or with
        // a node that keeps it for its home: with any slice still on its
        // way, losing this node and m-1 others could leave fewer than k.
        let needed = erasure.total();
        let quorum = WriteQuorum { what: format!("slices of chunk {id}"), needed, wait: Wait::ForQuorum };
        self.expect_acks(quorum, calls).await?;

        let manifest = PutChunk { chunk: sealed.manifest };
        let query = Query::to_replicas(format!("manifest of chunk {id}"), &layout.hash_replicas(&id), manifest);
        self.write_to(query, Wait::ForQuorum).await?;
        Ok((id, len))
    }

    /// Store slice `index` of a chunk on its home node; when the home is
    /// down or fails, hand it to the next node that takes it (in
    /// `placement::handoff_order`), so a write goes on while a node is away. A node
    /// SWIM sees down is not waited for. A handed-off slice stays findable:
    /// readers ask the other nodes for a slice missing from its home; and
    /// the node that took it keeps a hint with it, to take it home as soon
    /// as the home answers (`crate::handoff`).
    fn put_slice(&self, outgoing: &Arc<Outgoing>, index: usize, slice: SealedSlice) -> Acks // PA
    {
        let candidates =
            placement::handoff_order(index, &outgoing.homes, &outgoing.members, |node| self.view.is_down(node));
        let transport = self.transport.clone();
        let outgoing = outgoing.clone();
        async move {
            let mut last = None;
            for node in candidates {
                match outgoing.send(transport.as_ref(), node, index, slice.clone()).await {
                    Ok(Stored) => return Ok(Stored),
                    Err(error) => last = Some(error),
                }
            }
            Err(last.unwrap_or(TransportError::Unreachable { node: NodeId::default(), cause: Unreachable::NoTaker }))
        }
        .boxed()
    }

    /// Whether this write may reuse a stored chunk: a write quorum of its
    /// manifest replicas holds a manifest, and each of them records the
    /// claim, so garbage collection spares the chunk until this write
    /// references it. Garbage collection frees a chunk once a write quorum
    /// dropped its manifest, so the two never both succeed; a manifest held
    /// by fewer replicas may be one a node kept while it was away, whose
    /// slices are gone, and the chunk is stored again instead. A manifest
    /// that came from another node is first checked (`slices_found`).
    pub(super) async fn claim_chunk(&self, id: &Hash) -> bool // PA
    {
        let replicas = self.chunk_replicas(id);
        let needed = placement::write_quorum(replicas.holding.len());
        let query = Query::new(format!("claim of chunk {id}"), replicas.all(), ClaimChunk { id: *id });
        let answers = match self.ask_all(query).await {
            Ok(answers) => answers,
            Err(error) => {
                tracing::warn!(chunk = %id, %error, "chunk claim failed; storing it again");
                return false;
            }
        };
        // A sealing any replica holds a tombstone of is never reused, even
        // where another still holds its manifest.
        let freed: Vec<Hash> = answers.iter().flat_map(|(_, answer)| answer.freed.iter().copied()).collect();
        let live =
            |claimed: &Claimed| claimed.chunk.id == *id && !freed.contains(&sync::sealing_digest(&claimed.chunk));
        let held: Vec<(NodeId, Claimed)> = answers
            .into_iter()
            .filter(|(node, _)| replicas.holding.contains(node))
            .filter_map(|(node, answer)| answer.held.filter(live).map(|claimed| (node, claimed)))
            .collect();
        let verified = held.iter().filter(|(_, claimed)| !claimed.unverified).count();
        if held.len() < needed || verified >= needed {
            return held.len() >= needed;
        }
        verified + self.unverified_found_whole(held).await >= needed
    }

    /// How many of the manifests among `held` that came from another node
    /// (each may be one whose chunk was freed while its sender was away,
    /// which anti-entropy or the move pass brought back) list slices still
    /// held, k of them at their homes, and were stored again as their
    /// holders' own, so later writes need not look. A holder that refuses
    /// (the sealing was freed meanwhile) or does not answer is not counted.
    async fn unverified_found_whole(&self, held: Vec<(NodeId, Claimed)>) -> usize // PA
    {
        let mut unverified: Vec<(Chunk, Vec<NodeId>)> = Vec::new();
        for (node, claimed) in held.into_iter().filter(|(_, claimed)| claimed.unverified) {
            match unverified.iter_mut().find(|(chunk, _)| chunk.slices == claimed.chunk.slices) {
                Some((_, nodes)) => nodes.push(node),
                None => unverified.push((claimed.chunk, vec![node])),
            }
        }
        let mut confirmed = 0;
        for (chunk, holders) in unverified {
            if !self.slices_found(&chunk).await {
                tracing::info!(chunk = %chunk.id, "a manifest from another node lists slices that are gone");
                continue;
            }
            let confirms = holders.iter().map(|node| self.transport.ask(*node, PutChunk { chunk: chunk.clone() }));
            for answer in futures::future::join_all(confirms).await {
                match answer {
                    Ok(Stored) => confirmed += 1,
                    Err(error) => tracing::debug!(chunk = %chunk.id, %error, "a checked manifest not confirmed"),
                }
            }
        }
        confirmed
    }

    /// Whether at least k of a manifest's slices are held at their homes.
    async fn slices_found(&self, chunk: &Chunk) -> bool // PA
    {
        let homes = placement::slice_homes(&chunk.id, chunk.slices.len(), &self.view.layout().placing_members());
        let asks = homes
            .iter()
            .zip(&chunk.slices)
            .map(|(home, slice)| self.transport.ask(*home, HoldsSlices { hashes: vec![*slice] }));
        let held = futures::future::join_all(asks)
            .await
            .into_iter()
            .filter(|answer| matches!(answer.as_deref(), Ok([true])))
            .count();
        held >= chunk.erasure.data as usize
    }
}
