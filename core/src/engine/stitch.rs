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
//! A part copied from another object (`UploadPartCopy`) reuses that
//! object's chunks, whose cuts are taken as the stream's: if they are not
//! (an object completed before junctions were cut again), the result dedups
//! less well, and holds the same bytes all the same.

use std::collections::HashSet;

use futures::stream::{self, StreamExt, TryStreamExt};

use super::{Engine, EngineError, EngineResult};
use crate::chunker::Chunker;
use crate::cluster::{ClusterView, Transport};
use crate::model::{ChunkRef, PartRecord};

/// The chunks that replace `chunks[start..end]` of the joined list.
struct Recut {
    start: usize,
    end: usize,
    chunks: Vec<ChunkRef>,
}

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// The chunk list of the parts joined in order, with every junction cut
    /// as one stream of the same bytes would cut it.
    pub(super) async fn stitch_parts(&self, parts: &[PartRecord]) -> EngineResult<Vec<ChunkRef>> // PA
    {
        let mut joined = Vec::new();
        let mut part_ends = Vec::new();
        let mut size = 0u64;
        for part in parts {
            for chunk in &part.chunks {
                joined.push(ChunkRef { offset: size, ..*chunk });
                size += chunk.len as u64;
            }
            if !part.chunks.is_empty() {
                part_ends.push(joined.len() - 1);
            }
        }
        // The object's last chunk ends the stream as well; a chunk of the
        // maximum length ends where the stream would cut it too (no cut
        // came before the maximum in the same bytes from the same cut).
        let max = self.config.chunking.max;
        part_ends.retain(|index| index + 1 < joined.len() && joined[*index].len < max);
        let recuts: Vec<Recut> = stream::iter(part_ends)
            .map(|start| self.recut_from(&joined, start))
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

    /// Run the chunker from the start of `joined[start]` (the last chunk of
    /// a part) until one of its cuts is the end of a chunk of `joined`;
    /// seal the chunks it cut on the way (those equal to a joined chunk are
    /// taken as they are).
    async fn recut_from(&self, joined: &[ChunkRef], start: usize) -> EngineResult<Recut> // PA
    {
        let mut chunker = Chunker::new(self.config.chunking);
        let mut cut = joined[start].offset;
        let mut pieces: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut cuts = HashSet::new();
        for index in start..joined.len() {
            let permit = self.read_permits.clone().acquire_owned().await.ok();
            let plain = self.read_chunk(&joined[index]).await;
            drop(permit);
            for piece in chunker.push(&plain?) {
                let len = piece.len() as u64;
                pieces.push((cut, piece));
                cut += len;
                cuts.insert(cut);
            }
            let level = (start..=index).find(|m| cuts.contains(&(joined[*m].offset + joined[*m].len as u64)));
            if let Some(level) = level {
                let end = joined[level].offset + joined[level].len as u64;
                pieces.retain(|(offset, _)| *offset < end);
                let chunks = self.seal_pieces(&joined[start..=level], pieces).await?;
                return Ok(Recut { start, end: level + 1, chunks });
            }
        }
        for piece in chunker.finish() {
            let len = piece.len() as u64;
            pieces.push((cut, piece));
            cut += len;
        }
        let chunks = self.seal_pieces(&joined[start..], pieces).await?;
        Ok(Recut { start, end: joined.len(), chunks })
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
