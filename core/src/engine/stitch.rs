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
//! chunks in memory however long it runs.
//!
//! A part copied from another object (`UploadPartCopy`) reuses that
//! object's chunks, whose cuts are taken as the stream's: if they are not
//! (an object completed before junctions were cut again), the result dedups
//! less well, and holds the same bytes all the same.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::{OnceCell, Semaphore};

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

/// Junctions between parts cut again while the upload is still going on
/// (`Engine::prepare_junction`), so completing it has little left to do.
/// They are found by what the two parts hold, so a part uploaded again
/// simply misses.
pub(super) struct Junctions {
    cut: Mutex<CutJunctions>,
    /// Cutting ahead runs beside the uploads; at most this many at once.
    running: Semaphore,
}

#[derive(Default)]
struct CutJunctions {
    by_pair: HashMap<Hash, JunctionCell>,
    order: VecDeque<Hash>,
}

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
        Junctions { cut: Mutex::new(CutJunctions::default()), running: Semaphore::new(2) }
    }

    /// The cell of a pair, made if `make`.
    fn cell(&self, key: &Hash, make: bool) -> Option<JunctionCell> // A
    {
        let mut cut = self.cut.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cell) = cut.by_pair.get(key) {
            return Some(cell.clone());
        }
        if !make {
            return None;
        }
        if cut.order.len() >= JUNCTIONS_KEPT {
            if let Some(oldest) = cut.order.pop_front() {
                cut.by_pair.remove(&oldest);
            }
        }
        let cell = JunctionCell::default();
        cut.by_pair.insert(*key, cell.clone());
        cut.order.push_back(*key);
        Some(cell)
    }

    fn forget(&self, key: &Hash) // A
    {
        let mut cut = self.cut.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if cut.by_pair.remove(key).is_some() {
            cut.order.retain(|kept| kept != key);
        }
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
        let Some(pair) = PartPair::of(&before.chunks, &after.chunks, self.config.chunking.max) else { return };
        let Ok(_running) = self.junctions.running.acquire().await else { return };
        let Some(cell) = self.junctions.cell(&pair.key, true) else { return };
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
        let mut joined = Vec::new();
        // (index in `joined` of a part's last chunk, index of the next part)
        let mut junctions: Vec<(usize, usize)> = Vec::new();
        let mut size = 0u64;
        for (number, part) in parts.iter().enumerate() {
            for chunk in &part.chunks {
                joined.push(ChunkRef { offset: size, ..*chunk });
                size += chunk.len as u64;
            }
            if !part.chunks.is_empty() {
                junctions.push((joined.len() - 1, number + 1));
            }
        }
        // The object's last chunk ends the stream as well; a chunk of the
        // maximum length ends where the stream would cut it too (no cut
        // came before the maximum in the same bytes from the same cut).
        let max = self.config.chunking.max;
        junctions.retain(|(index, _)| index + 1 < joined.len() && joined[*index].len < max);
        let recuts: Vec<Recut> = stream::iter(junctions)
            .map(|(start, next)| self.stitch_junction(&joined, start, parts.get(next)))
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

    /// The junction after `joined[start]`, cut ahead or cut now.
    async fn stitch_junction(&self, joined: &[ChunkRef], start: usize, next: Option<&PartRecord>) -> Stitched // PA
    {
        if let Some(next) = next {
            if let Some(prepared) = self.prepared_junction(joined, start, &next.chunks).await {
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
        for index in start..joined.len() {
            let permit = self.read_permits.clone().acquire_owned().await.ok();
            let plain = self.read_chunk(&joined[index]).await;
            drop(permit);
            let mut pieces = Vec::new();
            for piece in chunker.push(&plain?) {
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
                return Ok(Some(Recut { start, end: level + 1, chunks }));
            }
            chunks.extend(self.seal_pieces(&joined[start..=index], pieces).await?);
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
