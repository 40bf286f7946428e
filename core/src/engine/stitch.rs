//! Completing a multipart upload: the parts' chunk lists are joined, and
//! each junction between two parts is cut again as one stream of the same
//! bytes would cut it. Every part was chunked on its own, so its last chunk
//! ends where the part ends, not where the content says; shift the content
//! by one byte and every junction's chunks change. From the last cut before
//! a junction, the chunker runs over the bytes that follow until one of its
//! cuts lands on a cut the parts already have: from there on the parts' own
//! cuts are the stream's, because where FastCDC cuts next depends only on
//! where it cut last and the bytes after it. Only the chunks in between are
//! read, cut again and sealed (typically one to three per junction), so an
//! object completed from parts dedups against the same bytes written in
//! one PUT or with other part sizes. Junctions are cut again concurrently;
//! a junction whose run goes on past the next junction covers it.
//!
//! A junction is cut ahead as soon as both of its parts are stored
//! (`Engine::prepare_junction`, started by the gateway after each part),
//! and the result kept in this node's memory by what the two parts hold;
//! completion takes it when the parts it lists are those, so the client
//! waits at completion about as long as without any re-cutting. A run
//! seals each chunk as soon as the next is cut, so it holds about two
//! chunks in memory however long it runs. The chunks a run reads are the
//! edges of parts just stored: the first part's last chunk and the next
//! part's first few. Storing a part keeps their plaintext in memory for a
//! while (`EdgeChunks`), so a junction cut ahead reads nothing back.
//!
//! Most parts need no cut at all: when the part before is written on the
//! same node, a part's bytes are held as they arrive (parts up to
//! `LEAD_HOLD_BYTES`) until that part's chunker has ended, and are then
//! chunked from the start of its last chunk, whose bytes lead in
//! (`PartTails`). Every cut is then the stream's: the first chunk is the
//! stream's chunk across the junction, kept whole, and the part records
//! that it begins with the lead (`PartRecord::lead`: the id and length of
//! the part before's last chunk). Completion puts that chunk in place of
//! the part before's last one, reading and sealing nothing; only when the
//! part before in the object is not the one the part was led in from (left
//! out, or uploaded again) are its own bytes of that chunk sealed apart
//! (`unlead`) and the junction cut as any. Parts sent at once by one
//! client (the aws CLI sends ten) end about in order, so the wait is short;
//! a part whose predecessor is elsewhere or not yet begun is chunked from
//! its own start and its junction cut again as above.
//!
//! A part copied from another object (`UploadPartCopy`) reuses that
//! object's chunks, whose cuts are taken as the stream's: if they are not
//! (an object completed before junctions were cut again), the result dedups
//! less well, and holds the same bytes all the same.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::{Notify, OnceCell, Semaphore};

use super::{Engine, EngineError, EngineResult};
use crate::chunker::Chunker;
use crate::cluster::{ClusterView, Transport};
use crate::hash::Hash;
use crate::model::{ChunkRef, PartRecord};

type Stitched = EngineResult<Recut>;

/// The chunks that replace `chunks[start..end]` of the joined list.
struct Recut {
    start: usize,
    end: usize,
    chunks: Vec<ChunkRef>,
}

/// How many junctions cut ahead of completion a node keeps; an upload
/// completed on another node, or abandoned, leaves its junctions behind,
/// and the oldest go first.
const JUNCTIONS_KEPT: usize = 4096;

/// How many of a chunk's first bytes a junction's run scans before the
/// rest, in case a cut at its start lines up.
const LINE_UP_BYTES: usize = 64;

/// Junctions cut ahead at once on a node. A run mostly waits for its
/// sealed pieces to be stored, and with fewer the runs fell behind a
/// 1 GiB upload through the aws CLI.
const JUNCTIONS_AT_ONCE: usize = 4;

/// Bytes of part edges a node keeps for cutting junctions ahead: with the
/// aws CLI's 8 MiB parts, ten at once, about sixteen parts' edges.
const EDGE_BYTES: usize = 128 << 20;

/// A part keeps this many of its first chunks: a junction's run over a
/// part chunked from the part before it lines up at the end of the first
/// and reads the first bytes of the second.
pub(super) const PART_HEAD_CHUNKS: usize = 2;

/// How many bytes of a part are held, waiting for the last chunk of the
/// part before it, before the part is chunked from its own start instead;
/// a part of the aws CLI's or boto3's 8 MiB, or rclone's 5 MiB, fits.
pub(super) const LEAD_HOLD_BYTES: usize = 16 << 20;

/// Bytes of parts held at once on a node; beyond, a part is chunked from
/// its own start at once.
const LEAD_HELD_BYTES: usize = 256 << 20;

/// How long a part whose bytes have all arrived waits for the part before
/// it, still being written on this node, to end (parts sent at once end
/// about in order, a fraction of a part's time apart).
pub(super) const LEAD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Last chunks of parts written on this node, kept for the next part
/// (bytes at most; the oldest go first).
const TAILS_BYTES: usize = 64 << 20;

/// A part of a multipart upload, as written on this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartOf {
    pub upload: String,
    pub number: u16,
}

/// The parts of uploads being written on this node, and the last chunk of
/// those written, from where the next part's chunking starts.
pub(super) struct PartTails {
    parts: Mutex<TailMap>,
    /// Woken whenever a part ends.
    ended: Notify,
    /// Room for the bytes parts hold while they wait, in `HELD_UNIT`s.
    pub(super) held: Arc<Semaphore>,
}

/// The unit of `PartTails::held`.
pub(super) const HELD_UNIT: usize = 4 << 10;

struct TailMap {
    writing: HashSet<PartOf>,
    /// The last chunk's plaintext; `None` when it is no place to start
    /// from (a chunk of the maximum length, where the stream cuts too).
    written: Newest<PartOf, Option<Arc<Vec<u8>>>>,
}

/// A map that keeps its newest entries: beyond `max_entries`, or beyond
/// `max_weight` for the weights given with them, the oldest go first.
struct Newest<K, V> {
    by_key: HashMap<K, (V, usize)>,
    order: VecDeque<K>,
    weight: usize,
    max_entries: usize,
    max_weight: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V> Newest<K, V> {
    fn new(max_entries: usize, max_weight: usize) -> Self // A
    {
        Newest { by_key: HashMap::new(), order: VecDeque::new(), weight: 0, max_entries, max_weight }
    }

    fn get(&self, key: &K) -> Option<&V> // A
    {
        self.by_key.get(key).map(|(value, _)| value)
    }

    /// Keep `value` as the newest, in place of any under the same key.
    fn insert(&mut self, key: K, value: V, weight: usize) // A
    {
        self.take(&key);
        self.weight += weight;
        self.by_key.insert(key.clone(), (value, weight));
        self.order.push_back(key);
        while self.order.len() > self.max_entries || self.weight > self.max_weight {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some((_, dropped)) = self.by_key.remove(&oldest) {
                self.weight -= dropped;
            }
        }
    }

    fn take(&mut self, key: &K) -> Option<V> // A
    {
        let (value, weight) = self.by_key.remove(key)?;
        self.weight -= weight;
        self.order.retain(|kept| kept != key);
        Some(value)
    }
}

/// Ends a part's writing when dropped, as failed unless `PartTails::ended`
/// was given its last chunk.
pub(super) struct Writing<'a> {
    tails: &'a PartTails,
    part: PartOf,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) // A
    {
        self.tails.end(&self.part, None);
    }
}

/// Junctions between parts cut again while the upload is still going on
/// (`Engine::prepare_junction`), so completing it has little left to do.
/// They are found by what the two parts hold, so a part uploaded again
/// simply misses.
pub(super) struct Junctions {
    cut: Mutex<CutJunctions>,
    /// Cutting ahead runs beside the uploads; at most this many at once.
    running: Semaphore,
    pub(super) edges: EdgeChunks,
    pub(super) tails: PartTails,
}

/// The plaintext of the chunks at the edges of parts recently stored on
/// this node, by chunk id (a keyed hash of that plaintext, computed here):
/// what cutting their junctions reads. A chunk is taken out when a run
/// reads it; the oldest go first beyond `EDGE_BYTES`, and a chunk not here
/// is read back from its slices as usual.
pub(super) struct EdgeChunks {
    kept: Mutex<Newest<Hash, Vec<u8>>>,
}

type CutJunctions = Newest<Hash, JunctionCell>;

/// Filled by whichever comes first, the upload cutting ahead or the
/// completion; the other waits for it. `None`: the run did not line up
/// with a cut of the second part.
type JunctionCell = Arc<OnceCell<Option<CutJunction>>>;

/// The chunks from the start of the first part's last chunk that replace
/// the first `replaced` chunks of the pair.
#[derive(Debug, Clone)]
struct CutJunction {
    replaced: usize,
    chunks: Vec<(Hash, u32)>,
}

/// Two parts side by side: the first part's last chunk, then the second
/// part's chunks, placed from the start of that last chunk.
struct PartPair {
    key: Hash,
    joined: Vec<ChunkRef>,
}

impl Junctions {
    pub(super) fn new() -> Self // A
    {
        Junctions {
            cut: Mutex::new(Newest::new(JUNCTIONS_KEPT, usize::MAX)),
            running: Semaphore::new(JUNCTIONS_AT_ONCE),
            edges: EdgeChunks { kept: Mutex::new(Newest::new(usize::MAX, EDGE_BYTES)) },
            tails: PartTails::new(),
        }
    }

    /// The cell of a pair, made if `make`.
    fn cell(&self, key: &Hash, make: bool) -> Option<JunctionCell> // A
    {
        let mut cut = self.cut.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cell) = cut.get(key) {
            return Some(cell.clone());
        }
        if !make {
            return None;
        }
        let cell = JunctionCell::default();
        cut.insert(*key, cell.clone(), 0);
        Some(cell)
    }

    fn forget(&self, key: &Hash) // A
    {
        self.cut.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take(key);
    }
}

impl PartTails {
    fn new() -> Self // A
    {
        let held = Arc::new(Semaphore::new(LEAD_HELD_BYTES / HELD_UNIT));
        let parts = TailMap { writing: HashSet::new(), written: Newest::new(JUNCTIONS_KEPT, TAILS_BYTES) };
        PartTails { parts: Mutex::new(parts), ended: Notify::new(), held }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TailMap> // A
    {
        self.parts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `part` is being written here until the guard is dropped or ended.
    pub(super) fn writing(&self, part: PartOf) -> Writing<'_> // A
    {
        self.lock().writing.insert(part.clone());
        Writing { tails: self, part }
    }

    /// `part` ended; `last` is its last chunk as the stream would have cut
    /// it, when the next part can start from there.
    pub(super) fn end(&self, part: &PartOf, last: Option<Vec<u8>>) // PA
    {
        let mut parts = self.lock();
        if !parts.writing.remove(part) {
            return;
        }
        let weight = last.as_ref().map_or(0, Vec::len);
        parts.written.insert(part.clone(), last.map(Arc::new), weight);
        drop(parts);
        self.ended.notify_waiters();
    }

    /// Where the part before `part` left the stream, taken out: `Some` with
    /// its last chunk, `Some(None)` when there is nothing to start from
    /// (not written here, or it failed), `None` while it is being written.
    pub(super) fn before(&self, part: &PartOf) -> Option<Option<Arc<Vec<u8>>>> // PA
    {
        let Some(number) = part.number.checked_sub(1) else { return Some(None) };
        let before = PartOf { upload: part.upload.clone(), number };
        let mut parts = self.lock();
        if let Some(last) = parts.written.take(&before) {
            return Some(last);
        }
        if parts.writing.contains(&before) {
            return None;
        }
        Some(None)
    }

    /// As `before`, waiting up to `LEAD_WAIT` for a part being written.
    pub(super) async fn wait_before(&self, part: &PartOf) -> Option<Arc<Vec<u8>>> // PA
    {
        let deadline = tokio::time::Instant::now() + LEAD_WAIT;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(last) = self.before(part) {
                return last;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return None;
            }
        }
    }
}

impl EdgeChunks {
    pub(super) fn keep(&self, id: Hash, plain: Vec<u8>) // A
    {
        let weight = plain.len();
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id, plain, weight);
    }

    /// The plaintext of `chunk`, if kept, taken out.
    fn take(&self, chunk: &ChunkRef) -> Option<Vec<u8>> // PA
    {
        let plain = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take(&chunk.id)?;
        (plain.len() == chunk.len as usize).then_some(plain)
    }
}

impl PartPair {
    /// The pair whose junction needs cutting again: none when the first
    /// part is empty or ends in a chunk of the maximum length (where the
    /// stream cuts too), or the second part is empty.
    fn of(before: &[ChunkRef], after: &[ChunkRef], max: u32) -> Option<PartPair> // PA
    {
        let last = before.last().filter(|last| last.len < max)?;
        if after.is_empty() {
            return None;
        }
        let mut joined = Vec::with_capacity(after.len() + 1);
        let mut key = Vec::with_capacity((after.len() + 1) * 36);
        let mut offset = 0u64;
        for chunk in std::iter::once(last).chain(after) {
            joined.push(ChunkRef { offset, ..*chunk });
            offset += chunk.len as u64;
            key.extend_from_slice(chunk.id.as_bytes());
            key.extend_from_slice(&chunk.len.to_be_bytes());
        }
        Some(PartPair { key: Hash::of(&key), joined })
    }
}

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// Cut the junction between two consecutive parts of an upload again
    /// now, while other parts are still uploading, and keep the result in
    /// this node's memory for the completion. Errors are only logged: the
    /// completion cuts what it finds no result for.
    pub async fn prepare_junction(&self, before: &PartRecord, after: &PartRecord) // PA
    {
        // A part chunked from the part before needs no cut (or, when the
        // part before changed since, its completion cuts it).
        if after.lead.is_some() {
            return;
        }
        let Some(pair) = PartPair::of(&before.chunks, &after.chunks, self.config.chunking.max) else { return };
        // The cell is there before the wait, so a completion that comes
        // meanwhile cuts the junction itself and this run finds it done,
        // instead of the two cutting it twice.
        let Some(cell) = self.junctions.cell(&pair.key, true) else { return };
        let Ok(_running) = self.junctions.running.acquire().await else { return };
        if let Err(error) = cell.get_or_try_init(|| self.cut_pair(&pair)).await {
            tracing::warn!(%error, part = after.number, "cutting a junction ahead of completion failed");
        }
    }

    async fn cut_pair(&self, pair: &PartPair) -> EngineResult<Option<CutJunction>> // PA
    {
        let recut = self.recut_from(&pair.joined, 0, false).await?;
        Ok(recut.map(|recut| CutJunction {
            replaced: recut.end,
            chunks: recut.chunks.iter().map(|chunk| (chunk.id, chunk.len)).collect(),
        }))
    }

    /// The junction cut ahead for `joined[start]` (the last chunk of a
    /// part) and `after` (the next part's chunks), if this node has it and
    /// every chunk it sealed is still held (claimed again, so garbage
    /// collection spares it until the blob references it).
    async fn prepared_junction(&self, joined: &[ChunkRef], start: usize, after: &[ChunkRef]) -> Option<Recut> // PA
    {
        let pair = PartPair::of(&joined[start..=start], after, self.config.chunking.max)?;
        let cell = self.junctions.cell(&pair.key, false)?;
        let cut = cell.get_or_try_init(|| self.cut_pair(&pair)).await.ok().cloned().flatten();
        self.junctions.forget(&pair.key);
        let cut = cut?;
        let mut offset = joined[start].offset;
        let mut chunks = Vec::with_capacity(cut.chunks.len());
        for (id, len) in cut.chunks {
            let reused = joined[start..start + cut.replaced].iter().any(|c| c.id == id && c.offset == offset);
            if !reused && !self.claim_chunk(&id).await {
                return None;
            }
            chunks.push(ChunkRef { id, offset, len });
            offset += len as u64;
        }
        Some(Recut { start, end: start + cut.replaced, chunks })
    }

    /// The chunk list of the parts joined in order, with every junction cut
    /// as one stream of the same bytes would cut it.
    pub(super) async fn stitch_parts(&self, parts: &[PartRecord]) -> EngineResult<Vec<ChunkRef>> // PA
    {
        let mut joined: Vec<ChunkRef> = Vec::new();
        // (index in `joined` of a part's last chunk, index of the next part)
        let mut junctions: Vec<(usize, usize)> = Vec::new();
        // Each part's chunks as joined.
        let mut own: Vec<Cow<[ChunkRef]>> = Vec::with_capacity(parts.len());
        let mut size = 0u64;
        // The object starts with a part led in from one it lacks: its
        // first chunk was cut from elsewhere than the object's start.
        let mut cut_from_start = false;
        for (number, part) in parts.iter().enumerate() {
            let mut chunks = Cow::Borrowed(part.chunks.as_slice());
            if let Some(lead) = part.lead {
                let continues = joined.last().is_some_and(|last| last.id == lead.from && last.len == lead.len);
                if continues {
                    // Chunked from where the part before left the stream:
                    // its first chunk replaces that part's last, and the
                    // junction between them is cut already.
                    joined.pop();
                    size -= lead.len as u64;
                    if junctions.last().is_some_and(|(index, _)| *index == joined.len()) {
                        junctions.pop();
                    }
                } else {
                    chunks = Cow::Owned(self.unlead(&part.chunks, lead.len).await?);
                    cut_from_start |= joined.is_empty();
                }
            }
            for chunk in chunks.iter() {
                joined.push(ChunkRef { offset: size, ..*chunk });
                size += chunk.len as u64;
            }
            if !chunks.is_empty() {
                junctions.push((joined.len() - 1, number + 1));
            }
            own.push(chunks);
        }
        let parts_size: u64 = parts.iter().map(|part| part.size).sum();
        if size != parts_size {
            return Err(EngineError::Config(format!("the parts' chunks hold {size} bytes, the parts {parts_size}")));
        }
        // The object's last chunk ends the stream as well; a chunk of the
        // maximum length ends where the stream would cut it too (no cut
        // came before the maximum in the same bytes from the same cut).
        let max = self.config.chunking.max;
        junctions.retain(|(index, _)| index + 1 < joined.len() && joined[*index].len < max);
        if cut_from_start && !joined.is_empty() {
            junctions.insert(0, (0, usize::MAX));
        }
        let recuts: Vec<Recut> = stream::iter(junctions)
            .map(|(start, next)| self.stitch_junction(&joined, start, own.get(next).map(|chunks| &chunks[..])))
            .buffered(self.config.write_parallelism.max(1))
            .try_collect()
            .await?;
        let mut stitched = Vec::with_capacity(joined.len());
        let mut next = 0;
        for recut in recuts {
            // An earlier junction's run went past this one.
            if recut.start < next {
                continue;
            }
            stitched.extend_from_slice(&joined[next..recut.start]);
            stitched.extend(recut.chunks);
            next = recut.end;
        }
        stitched.extend_from_slice(&joined[next..]);
        let mut offset = 0u64;
        for chunk in &stitched {
            if chunk.offset != offset {
                return Err(EngineError::Config(format!(
                    "stitching the parts left a gap at byte {offset} (next chunk at {})",
                    chunk.offset
                )));
            }
            offset += chunk.len as u64;
        }
        if offset != size {
            return Err(EngineError::Config(format!("stitched parts hold {offset} bytes, the parts {size}")));
        }
        Ok(stitched)
    }

    /// A part's own chunks when it was chunked from the part before it but
    /// does not follow that part in the object (that part was left out, or
    /// uploaded again): the bytes of its first chunk after the lead are
    /// sealed as a chunk of their own, and its junction is cut as any.
    async fn unlead(&self, chunks: &[ChunkRef], lead: u32) -> EngineResult<Vec<ChunkRef>> // PA
    {
        let Some(first) = chunks.first() else { return Ok(Vec::new()) };
        let plain = {
            let _permit = self.read_permits.clone().acquire_owned().await.ok();
            self.read_chunk(first).await?
        };
        let Some(own) = plain.get(lead as usize..).filter(|own| !own.is_empty()) else {
            return Err(EngineError::Config(format!("a part's lead of {lead} bytes fills its first chunk")));
        };
        let (id, len) = {
            let _permit = self.write_permits.clone().acquire_owned().await.ok();
            self.store_chunk(own.to_vec()).await?
        };
        let mut unled = Vec::with_capacity(chunks.len());
        unled.push(ChunkRef { id, offset: 0, len });
        let mut offset = len as u64;
        for chunk in &chunks[1..] {
            unled.push(ChunkRef { offset, ..*chunk });
            offset += chunk.len as u64;
        }
        Ok(unled)
    }

    /// The junction after `joined[start]`, cut ahead or cut now.
    async fn stitch_junction(&self, joined: &[ChunkRef], start: usize, next: Option<&[ChunkRef]>) -> Stitched // PA
    {
        if let Some(next) = next {
            if let Some(prepared) = self.prepared_junction(joined, start, next).await {
                return Ok(prepared);
            }
        }
        let recut = self.recut_from(joined, start, true).await?;
        recut.ok_or_else(|| EngineError::Config("cutting a junction again ended short of the object".into()))
    }

    /// Run the chunker from the start of `joined[start]` (the last chunk of
    /// a part) until one of its cuts is the end of a chunk of `joined`, and
    /// seal the chunks it cut on the way (one equal to a joined chunk is
    /// taken as it is). Every chunk cut before the current one ends is a
    /// stream chunk whatever follows, so each is sealed as soon as the next
    /// chunk is pushed, and a run holds at most about two chunks in memory.
    /// When no cut lines up before `joined` ends: with `ends_object` the
    /// rest is cut as the stream's end, otherwise there is no result.
    async fn recut_from(&self, joined: &[ChunkRef], start: usize, ends_object: bool) -> EngineResult<Option<Recut>> // PA
    {
        let mut chunker = Chunker::new(self.config.chunking);
        let mut cut = joined[start].offset;
        let mut chunks = Vec::new();
        let mut kept = 0;
        for index in start..joined.len() {
            let plain = match self.junctions.edges.take(&joined[index]) {
                Some(plain) => {
                    kept += 1;
                    Ok(plain)
                }
                None => {
                    let _permit = self.read_permits.clone().acquire_owned().await.ok();
                    self.read_chunk(&joined[index]).await
                }
            };
            let plain = plain?;
            // A cut is certain once the bytes just after it are in: a cut
            // at the end of the chunk before needs only this chunk's first
            // bytes, and the rest is not scanned when it lines up there.
            let (first, rest) = plain.split_at(plain.len().min(LINE_UP_BYTES));
            for bytes in [first, rest] {
                let mut pieces = Vec::new();
                for piece in chunker.push(bytes) {
                    let len = piece.len() as u64;
                    pieces.push((cut, piece));
                    cut += len;
                }
                // A cut of an earlier push lies before every end from
                // `joined[index]` on, and would have lined up then.
                let cuts: Vec<u64> = pieces.iter().map(|(offset, piece)| offset + piece.len() as u64).collect();
                let level = (start..=index).find(|m| cuts.contains(&(joined[*m].offset + joined[*m].len as u64)));
                if let Some(level) = level {
                    let end = joined[level].offset + joined[level].len as u64;
                    pieces.retain(|(offset, _)| *offset < end);
                    chunks.extend(self.seal_pieces(&joined[start..=level], pieces).await?);
                    tracing::debug!(chunks = level + 1 - start, kept, cut = chunks.len(), "junction cut again");
                    return Ok(Some(Recut { start, end: level + 1, chunks }));
                }
                chunks.extend(self.seal_pieces(&joined[start..=index], pieces).await?);
            }
        }
        if !ends_object {
            return Ok(None);
        }
        let mut pieces = Vec::new();
        for piece in chunker.finish() {
            let len = piece.len() as u64;
            pieces.push((cut, piece));
            cut += len;
        }
        chunks.extend(self.seal_pieces(&joined[start..], pieces).await?);
        Ok(Some(Recut { start, end: joined.len(), chunks }))
    }

    /// Chunk references for pieces cut again: a piece with the same place
    /// and length as one of `was` is that chunk; any other is sealed and
    /// stored like a chunk of a PUT.
    async fn seal_pieces(&self, was: &[ChunkRef], pieces: Vec<(u64, Vec<u8>)>) -> EngineResult<Vec<ChunkRef>> // PA
    {
        let mut chunks = Vec::with_capacity(pieces.len());
        for (offset, piece) in pieces {
            let len = piece.len() as u64;
            if let Some(same) = was.iter().find(|c| c.offset == offset && c.len as u64 == len) {
                chunks.push(*same);
                continue;
            }
            let permit = self.write_permits.clone().acquire_owned().await.ok();
            let stored = self.store_chunk(piece).await;
            drop(permit);
            let (id, len) = stored?;
            chunks.push(ChunkRef { id, offset, len });
        }
        Ok(chunks)
    }
}
