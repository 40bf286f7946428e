//! Streaming content-defined chunking (FastCDC v2020): bytes are pushed in
//! pieces of any size and whole chunks come out, so an object is never held
//! whole in memory. Cut points depend only on content, so an insert in the
//! middle of a file changes only the chunks around it.

use std::sync::LazyLock;

type GearTable = Box<[u64; 256]>;

/// fastcdc's gear table and its left-shifted twin (unseeded).
static GEARS: LazyLock<(GearTable, GearTable)> = LazyLock::new(|| fastcdc::v2020::get_gear_with_seed(0));

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

/// Bytes copied into the pending chunk between scans: a cut found inside
/// a step leaves at most this much to move into the next chunk's buffer.
const STEP: usize = 32 * 1024;

/// Spare capacity past `max` in every chunk's buffer, so sealing can
/// append its authentication tag in place instead of copying the chunk.
pub const SEAL_ROOM: usize = 64;

/// Push-based chunker. Each byte is copied once, into the buffer of the
/// chunk it belongs to (a `Vec` the chunk then owns), and scanned once:
/// the gear hash resumes where the last push stopped. Cut points are exactly those of `fastcdc::v2020` over
/// the whole stream (a cut found before `max` bytes cannot move when more
/// bytes arrive, because the scan order and masks do not depend on them).
pub struct Chunker {
    config: ChunkerConfig,
    /// The bytes of the chunk being assembled; never more than `max`.
    pending: Vec<u8>,
    /// Gear hash over `pending` so far, and the next byte pair to scan.
    hash: u64,
    pair: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    pub fn new(config: ChunkerConfig) -> Self // A
    {
        // fastcdc's normalisation level 1, as `FastCDC::new` uses.
        let bits = fastcdc::v2020::logarithm2(config.avg.max(2)) as usize;
        let masks = &fastcdc::v2020::MASKS;
        Chunker {
            config,
            pending: Vec::with_capacity(config.max as usize + SEAL_ROOM),
            hash: 0,
            pair: config.min as usize / 2,
            mask_s: masks[(bits + 1).min(masks.len() - 1)],
            mask_l: masks[bits.saturating_sub(1)],
        }
    }

    /// Add bytes; returns every chunk whose cut point is now certain.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Vec<u8>> // A
    {
        let max = self.config.max as usize;
        let mut chunks = Vec::new();
        while !data.is_empty() {
            let take = data.len().min(STEP).min(max - self.pending.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            while let Some(cut) = self.scan() {
                chunks.push(self.cut(cut));
            }
        }
        chunks
    }

    /// The chunks left at the end of the stream (none for an empty stream).
    pub fn finish(mut self) -> Vec<Vec<u8>> // A
    {
        let mut chunks = Vec::new();
        while !self.pending.is_empty() {
            match self.scan() {
                Some(cut) => chunks.push(self.cut(cut)),
                None => chunks.push(std::mem::take(&mut self.pending)),
            }
        }
        chunks
    }

    /// The first `len` pending bytes become a chunk; the rest start the
    /// next chunk in a fresh buffer.
    fn cut(&mut self, len: usize) -> Vec<u8> // A
    {
        // A cut at 0 cannot happen (the scan starts at `min` ≥ 64); guard
        // anyway so a bug cannot turn into an endless loop.
        let len = len.clamp(1, self.pending.len());
        let mut next = Vec::with_capacity(self.config.max as usize + SEAL_ROOM);
        next.extend_from_slice(&self.pending[len..]);
        let mut chunk = std::mem::replace(&mut self.pending, next);
        chunk.truncate(len);
        self.hash = 0;
        self.pair = self.config.min as usize / 2;
        chunk
    }

    /// Continue the gear scan over the pending bytes (fastcdc `cut_gear`
    /// with `center = avg`, which is what it uses for any window of at
    /// least `avg`; for a shorter final window its masks agree). Returns
    /// the cut, `max` when `max` bytes hold none, or `None` when more bytes
    /// are needed (at the end of the stream: the rest is the last chunk).
    fn scan(&mut self) -> Option<usize> // A
    {
        let (avg, max) = (self.config.avg as usize, self.config.max as usize);
        let source = &self.pending[..];
        // A pair is scanned only when both its bytes are here, as fastcdc
        // does with a window that ends here.
        let pairs = source.len().min(max) / 2;
        let (gear, gear_ls) = &*GEARS;
        let mut hash = self.hash;
        let mut pair = self.pair;
        for (end, mask) in [((avg / 2).min(pairs), self.mask_s), (pairs, self.mask_l)] {
            let mask_ls = mask << 1;
            while pair < end {
                let a = pair * 2;
                hash = (hash << 2).wrapping_add(gear_ls[source[a] as usize]);
                if hash & mask_ls == 0 {
                    return Some(a);
                }
                hash = hash.wrapping_add(gear[source[a + 1] as usize]);
                if hash & mask == 0 {
                    return Some(a + 1);
                }
                pair += 1;
            }
        }
        self.hash = hash;
        self.pair = pair;
        (source.len() >= max).then_some(max)
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

    fn chunk_all(data: &[u8], piece: usize, config: ChunkerConfig) -> Vec<Vec<u8>> // A
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

    proptest! {
        #[test]
        fn cuts_are_those_of_fastcdc_v2020(seed in any::<u64>(), len in 0usize..300_000, text in any::<bool>()) { // A
            use rand::{RngCore, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let data: Vec<u8> = if text {
                // Few distinct bytes, long runs: cuts land at min, max and in between.
                (0..len).map(|_| if rng.next_u32() % 50 == 0 { (rng.next_u32() % 4) as u8 } else { 0 }).collect()
            } else {
                let mut data = vec![0u8; len];
                rng.fill_bytes(&mut data);
                data
            };
            let config = small();
            let ours: Vec<usize> = chunk_all(&data, 7_919, config).iter().map(Vec::len).collect();
            let theirs: Vec<usize> = fastcdc::v2020::FastCDC::new(&data, config.min, config.avg, config.max)
                .map(|chunk| chunk.length)
                .collect();
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn default_config_is_valid() // A
    {
        assert!(ChunkerConfig::default().is_valid());
        assert!(!ChunkerConfig { min: 10, avg: 5, max: 1 }.is_valid());
    }
}
