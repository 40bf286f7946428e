//! Streaming content-defined chunking (FastCDC v2020): bytes are pushed in
//! pieces of any size and whole chunks come out, so an object is never held
//! whole in memory. Cut points depend only on content, so an insert in the
//! middle of a file changes only the chunks around it.

use bytes::{Bytes, BytesMut};

/// Chunk size bounds in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerConfig {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerConfig {
    fn default() -> Self // A
    {
        ChunkerConfig { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 }
    }
}

impl ChunkerConfig {
    /// Whether fastcdc accepts these bounds.
    pub fn is_valid(&self) -> bool // A
    {
        (fastcdc::v2020::MINIMUM_MIN..=fastcdc::v2020::MINIMUM_MAX).contains(&self.min)
            && (fastcdc::v2020::AVERAGE_MIN..=fastcdc::v2020::AVERAGE_MAX).contains(&self.avg)
            && (fastcdc::v2020::MAXIMUM_MIN..=fastcdc::v2020::MAXIMUM_MAX).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
    }
}

/// Push-based chunker over a growing buffer.
pub struct Chunker {
    config: ChunkerConfig,
    pending: BytesMut,
}

impl Chunker {
    pub fn new(config: ChunkerConfig) -> Self // A
    {
        Chunker { config, pending: BytesMut::new() }
    }

    /// Add bytes; returns every chunk whose cut point is now certain.
    pub fn push(&mut self, data: &[u8]) -> Vec<Bytes> // A
    {
        self.pending.extend_from_slice(data);
        let mut chunks = Vec::new();
        // With at least `max` bytes pending the next cut cannot move any more.
        while self.pending.len() >= self.config.max as usize {
            let len = self.next_cut();
            chunks.push(self.pending.split_to(len).freeze());
        }
        chunks
    }

    /// The chunks left at the end of the stream (none for an empty stream).
    pub fn finish(mut self) -> Vec<Bytes> // A
    {
        let mut chunks = Vec::new();
        while !self.pending.is_empty() {
            let len = self.next_cut();
            chunks.push(self.pending.split_to(len).freeze());
        }
        chunks
    }

    fn next_cut(&self) -> usize // A
    {
        let window = &self.pending[..self.pending.len().min(self.config.max as usize)];
        let cdc = fastcdc::v2020::FastCDC::new(window, self.config.min, self.config.avg, self.config.max);
        let (_, cut) = cdc.cut(0, window.len());
        // fastcdc always advances on non-empty input; guard anyway so a bug
        // there cannot turn into an endless loop here.
        if cut == 0 {
            window.len()
        } else {
            cut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerConfig // A
    {
        ChunkerConfig { min: 4096, avg: 16384, max: 65536 }
    }

    fn chunk_all(data: &[u8], piece: usize, config: ChunkerConfig) -> Vec<Bytes> // A
    {
        let mut chunker = Chunker::new(config);
        let mut out = Vec::new();
        for part in data.chunks(piece.max(1)) {
            out.extend(chunker.push(part));
        }
        out.extend(chunker.finish());
        out
    }

    proptest! {
        #[test]
        fn cut_points_do_not_depend_on_how_bytes_arrive(seed in any::<u64>(), len in 0usize..400_000, piece in 1usize..100_000) { // A
            use rand::{RngCore, SeedableRng};
            let mut data = vec![0u8; len];
            rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
            let whole = chunk_all(&data, len.max(1), small());
            let pieces = chunk_all(&data, piece, small());
            prop_assert_eq!(&whole, &pieces);
            prop_assert_eq!(whole.concat(), data);
            for chunk in &whole {
                prop_assert!(chunk.len() <= 65536);
            }
        }
    }

    #[test]
    fn default_config_is_valid() // A
    {
        assert!(ChunkerConfig::default().is_valid());
        assert!(!ChunkerConfig { min: 10, avg: 5, max: 1 }.is_valid());
    }
}
