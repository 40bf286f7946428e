//! Sealing turns a plaintext chunk into its manifest and k+m sealed slices
//! (zstd → Reed-Solomon → ChaCha20-Poly1305 per shard, data key wrapped per
//! recipient); opening reverses it from any k slices and verifies the chunk id.

use std::cell::RefCell;

use x25519_dalek::PublicKey;

use crate::hash::Hash;
use crate::keys::{self, Cipher, DataKey, NodeKeys, UnwrapError, WrapError, TAG_LEN};
use crate::model::{Chunk, Codec, Erasure, SealedSlice, SliceSeal};

/// What went wrong sealing or opening a chunk; always names the chunk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("chunk {chunk}: slice {index} is {actual}, the manifest expects {expected}")]
    SliceHashMismatch { chunk: Hash, index: usize, expected: Hash, actual: Hash },
    #[error("chunk {chunk}: slice {index} failed authentication (tampered, misplaced or wrong key)")]
    SliceAuthentication { chunk: Hash, index: usize },
    #[error("chunk {chunk}: only {available} of the {needed} slices needed are readable")]
    NotEnoughSlices { chunk: Hash, available: usize, needed: usize },
    #[error("chunk {chunk}: {source}")]
    Key { chunk: Hash, source: UnwrapError },
    #[error("chunk {chunk}: {source}")]
    Wrap { chunk: Hash, source: WrapError },
    #[error("chunk {chunk}: decompression failed: {reason}")]
    Decompress { chunk: Hash, reason: String },
    #[error("chunk {chunk}: decoded content hashes to {actual} (wrong key or corrupted)")]
    ContentMismatch { chunk: Hash, actual: Hash },
    #[error("chunk {chunk}: manifest is inconsistent: {reason}")]
    BadManifest { chunk: Hash, reason: String },
    #[error("chunk {chunk}: erasure coding failed: {reason}")]
    Erasure { chunk: Hash, reason: String },
    #[error("chunk {chunk}: encryption failed")]
    Encrypt { chunk: Hash },
}

pub type SealResult<T> = Result<T, SealError>;

/// No chunker cuts a longer chunk (FastCDC's largest maximum), so no
/// manifest may claim one: it bounds what a reader allocates for a chunk.
pub const MAX_CHUNK_LEN: u32 = fastcdc::v2020::MAXIMUM_MAX;

/// How chunks are compressed and coded.
#[derive(Debug, Clone, Copy)]
pub struct SealParams {
    pub erasure: Erasure,
    pub zstd_level: i32,
}

/// A sealed chunk: its manifest and slice i for each i in 0..k+m.
#[derive(Debug, Clone)]
pub struct SealedChunk {
    pub manifest: Chunk,
    pub slices: Vec<SealedSlice>,
}

fn nonce_for(index: usize) -> [u8; 12] // PA
{
    // Each chunk has a fresh random data key, so the shard index is a unique nonce.
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&(index as u64).to_le_bytes());
    nonce
}

/// Binds a slice to its chunk and position: a slice moved to another chunk or
/// index fails to open.
fn associated_data(chunk: &Hash, index: usize, erasure: Erasure, shard_len: u32) -> [u8; 40] // PA
{
    let mut aad = [0u8; 40];
    aad[..32].copy_from_slice(chunk.as_bytes());
    aad[32] = index as u8;
    aad[33] = erasure.data;
    aad[34] = erasure.parity;
    aad[36..40].copy_from_slice(&shard_len.to_le_bytes());
    aad
}

/// Compress, code and encrypt one chunk whose id (keyed BLAKE3) is `id`.
/// With one data shard the chunk's own buffer (or the compressed one)
/// becomes the slice and is encrypted in place: the chunker leaves room
/// for the tag, so an incompressible chunk is never copied.
pub fn seal_chunk(id: Hash, plain: Vec<u8>, params: SealParams, to: &[PublicKey]) -> SealResult<SealedChunk> // PA
{
    let erasure = params.erasure;
    let bad = |reason: &str| SealError::BadManifest { chunk: id, reason: reason.to_string() };
    if erasure.data == 0 {
        return Err(bad("zero data shards"));
    }
    let plain_len = u32::try_from(plain.len())
        .ok()
        .filter(|len| *len <= MAX_CHUNK_LEN)
        .ok_or_else(|| bad("chunk larger than the largest chunk a chunker cuts"))?;

    let (codec, stored) = match compress(&plain, params.zstd_level) {
        Some(compressed) => (Codec::Zstd, compressed),
        None => (Codec::Stored, plain),
    };
    let stored_len = stored.len() as u32;
    let k = erasure.data as usize;
    // Reed-Solomon needs equal, even, non-empty shards.
    let shard_len = stored.len().div_ceil(k).max(2).next_multiple_of(2);
    let mut shards: Vec<Vec<u8>> = if k == 1 {
        let mut shard = stored;
        shard.resize(shard_len, 0);
        shard.reserve_exact(TAG_LEN);
        vec![shard]
    } else {
        (0..k)
            .map(|i| {
                let mut shard = Vec::with_capacity(shard_len + TAG_LEN);
                let start = (i * shard_len).min(stored.len());
                let end = ((i + 1) * shard_len).min(stored.len());
                shard.extend_from_slice(&stored[start..end]);
                shard.resize(shard_len, 0);
                shard
            })
            .collect()
    };
    if erasure.parity > 0 {
        let parity = reed_solomon_simd::encode(k, erasure.parity as usize, &shards)
            .map_err(|e| SealError::Erasure { chunk: id, reason: e.to_string() })?;
        shards.extend(parity.into_iter().map(|mut p| {
            p.reserve_exact(TAG_LEN);
            p
        }));
    }

    let data_key = DataKey::generate();
    let cipher = data_key.cipher();
    let shard_len32 = shard_len as u32;
    let mut slices = Vec::with_capacity(shards.len());
    for (index, mut shard) in shards.into_iter().enumerate() {
        let nonce = nonce_for(index);
        let aad = associated_data(&id, index, erasure, shard_len32);
        cipher.seal(nonce, &aad, &mut shard).map_err(|_| SealError::Encrypt { chunk: id })?;
        slices.push(SealedSlice::new(nonce, shard));
    }
    let keys = keys::wrap_data_key(&data_key, &id, to).map_err(|source| SealError::Wrap { chunk: id, source })?;
    let manifest = Chunk {
        id,
        plain_len,
        codec,
        stored_len,
        erasure,
        shard_len: shard_len32,
        slices: slices.iter().map(|s| s.hash).collect(),
        keys,
    };
    Ok(SealedChunk { manifest, slices })
}

/// zstd, unless the chunk does not shrink. A 64 KiB sample from the middle is
/// tried first: data that is already compressed or encrypted then skips the
/// full pass.
pub fn compress(plain: &[u8], level: i32) -> Option<Vec<u8>> // A
{
    const SAMPLE: usize = 64 * 1024;
    if plain.len() >= 4 * SAMPLE {
        let middle = plain.len() / 2;
        let sample = &plain[middle - SAMPLE / 2..middle + SAMPLE / 2];
        let probe = zstd_compress(sample, level)?;
        if probe.len() * 100 > sample.len() * 97 {
            return None;
        }
    }
    zstd_compress(plain, level).filter(|c| c.len() < plain.len())
}

thread_local! {
    // One zstd context per sealing thread, reused: creating one per chunk
    // cost more than compressing a 64 KiB sample.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_compress(data: &[u8], level: i32) -> Option<Vec<u8>> // A
{
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some((current, compressor)) if *current == level => compressor,
            slot => &mut slot.insert((level, zstd::bulk::Compressor::new(level).ok()?)).1,
        };
        compressor.compress(data).ok()
    })
}

/// Decompress into at most `capacity` bytes.
pub fn decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> // PA
{
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match &mut *slot {
            Some(decompressor) => decompressor,
            empty => empty.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress(data, capacity)
    })
}

fn check_manifest(manifest: &Chunk) -> Result<(), SealError> // PA
{
    let bad = |reason: String| Err(SealError::BadManifest { chunk: manifest.id, reason });
    let k = manifest.erasure.data as usize;
    if k == 0 {
        return bad("zero data shards".into());
    }
    if manifest.slices.len() != manifest.erasure.total() {
        return bad(format!("{} slice hashes for {}+{} coding", manifest.slices.len(), k, manifest.erasure.parity));
    }
    if manifest.shard_len == 0 || !manifest.shard_len.is_multiple_of(2) {
        return bad(format!("shard length {} is not a positive even number", manifest.shard_len));
    }
    if manifest.plain_len > MAX_CHUNK_LEN {
        return bad(format!("plain length {} exceeds the largest chunk, {MAX_CHUNK_LEN}", manifest.plain_len));
    }
    if manifest.stored_len as u64 > manifest.shard_len as u64 * k as u64 {
        return bad(format!("stored length {} exceeds {k} shards of {}", manifest.stored_len, manifest.shard_len));
    }
    if manifest.codec == Codec::Stored && manifest.stored_len != manifest.plain_len {
        return bad("uncompressed chunk whose stored and plain lengths differ".into());
    }
    Ok(())
}

/// Open a chunk from the slices at hand (`slices[i]` is slice i or `None`).
/// Any k slices suffice; the result is verified against the chunk id.
pub fn open_chunk(manifest: &Chunk, slices: HeldSlices, keys: &NodeKeys) -> SealResult<Vec<u8>> // PA
{
    check_manifest(manifest)?;
    let chunk = manifest.id;
    let k = manifest.erasure.data as usize;
    let shard_len = manifest.shard_len as usize;
    let data_key = keys::unwrap_data_key(&manifest.keys, &chunk, &keys.data_pair)
        .map_err(|source| SealError::Key { chunk, source })?;
    let mut shards = open_data_shards(manifest, slices, &data_key.cipher())?;
    let stored = if k == 1 {
        // One data shard: it already is the stored bytes.
        shards.pop().unwrap_or_default()
    } else {
        let mut stored = Vec::with_capacity(k * shard_len);
        for shard in &shards {
            stored.extend_from_slice(shard);
        }
        stored
    };
    finish_open(manifest, stored, keys)
}

/// The k data shards of a chunk, opened from any k of the slices at hand:
/// data shards missing are restored by Reed-Solomon. Fails naming what is
/// wrong when fewer than k open (a single damaged slice among too few is
/// the more useful error).
fn open_data_shards(manifest: &Chunk, slices: HeldSlices, cipher: &Cipher) -> SealResult<Vec<Vec<u8>>> // PA
{
    let chunk = manifest.id;
    let k = manifest.erasure.data as usize;
    let m = manifest.erasure.parity as usize;
    let mut opened: Vec<Option<Vec<u8>>> = vec![None; k + m];
    let mut available = 0;
    let mut first_error = None;
    for (index, slice) in slices.into_iter().enumerate().take(k + m) {
        if available == k {
            break;
        }
        let Some(slice) = slice else { continue };
        match open_slice(manifest, index, slice, cipher) {
            Ok(shard) => {
                opened[index] = Some(shard);
                available += 1;
            }
            Err(error) => {
                tracing::warn!(%chunk, index, %error, "slice unusable, trying the others");
                first_error.get_or_insert(error);
            }
        }
    }
    if available < k {
        return Err(match first_error {
            Some(error) if available + 1 >= k => error,
            _ => SealError::NotEnoughSlices { chunk, available, needed: k },
        });
    }
    if opened[..k].iter().any(Option::is_none) {
        let originals = opened[..k].iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i, s)));
        let recovery = opened[k..].iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i, s)));
        let restored = reed_solomon_simd::decode(k, m, originals, recovery)
            .map_err(|e| SealError::Erasure { chunk, reason: e.to_string() })?;
        for (index, shard) in restored.into_iter().filter(|(index, _)| *index < k) {
            opened[index] = Some(shard);
        }
    }
    opened.truncate(k);
    opened
        .into_iter()
        .enumerate()
        .map(|(index, shard)| {
            shard.ok_or_else(|| SealError::Erasure { chunk, reason: format!("data shard {index} was not restored") })
        })
        .collect()
}

/// Rebuild the slices at `wanted` positions of a chunk from the slices at
/// hand (any k of them): open k, restore the data shards by Reed-Solomon,
/// code the parity again where a parity slice is wanted, and seal each
/// wanted shard with the chunk's own key and the position's nonce, so it
/// comes out byte for byte as first sealed; each is checked against the
/// manifest's hash for its position.
pub fn rebuild_slices(manifest: &Chunk, slices: HeldSlices, wanted: &[usize], keys: &NodeKeys) -> Rebuilt // PA
{
    check_manifest(manifest)?;
    let chunk = manifest.id;
    let k = manifest.erasure.data as usize;
    let m = manifest.erasure.parity as usize;
    if let Some(index) = wanted.iter().find(|index| **index >= k + m) {
        return Err(SealError::BadManifest { chunk, reason: format!("no slice {index} in a {k}+{m} chunk") });
    }
    let data_key = keys::unwrap_data_key(&manifest.keys, &chunk, &keys.data_pair)
        .map_err(|source| SealError::Key { chunk, source })?;
    let cipher = data_key.cipher();
    let data = open_data_shards(manifest, slices, &cipher)?;
    let parity = if wanted.iter().any(|index| *index >= k) {
        reed_solomon_simd::encode(k, m, &data).map_err(|e| SealError::Erasure { chunk, reason: e.to_string() })?
    } else {
        Vec::new()
    };
    let mut rebuilt = Vec::with_capacity(wanted.len());
    for &index in wanted {
        let mut shard = if index < k { data[index].clone() } else { parity[index - k].clone() };
        shard.reserve_exact(TAG_LEN);
        let nonce = nonce_for(index);
        let aad = associated_data(&chunk, index, manifest.erasure, manifest.shard_len);
        cipher.seal(nonce, &aad, &mut shard).map_err(|_| SealError::Encrypt { chunk })?;
        let slice = SealedSlice::new(nonce, shard);
        if slice.hash != manifest.slices[index] {
            return Err(SealError::SliceHashMismatch {
                chunk,
                index,
                expected: manifest.slices[index],
                actual: slice.hash,
            });
        }
        rebuilt.push(slice);
    }
    Ok(rebuilt)
}

/// A chunk's slices at hand: `slices[i]` is slice i or `None`.
pub type HeldSlices = Vec<Option<SealedSlice>>;
/// Slices rebuilt, in the order asked for.
pub type Rebuilt = SealResult<Vec<SealedSlice>>;

/// Open a chunk whose k data shards were read straight into one buffer
/// (shard i at i × shard_len), with each slice's nonce and tag kept apart:
/// each shard is decrypted where it lies, so nothing is concatenated.
pub fn open_gathered(manifest: &Chunk, data: Vec<u8>, seals: &[SliceSeal], keys: &NodeKeys) -> SealResult<Vec<u8>> // PA
{
    let mut stored = data;
    check_manifest(manifest)?;
    let chunk = manifest.id;
    let k = manifest.erasure.data as usize;
    let shard_len = manifest.shard_len as usize;
    if seals.len() != k || stored.len() != k * shard_len {
        let reason = format!("{} seals and {} bytes gathered for {k} shards of {shard_len}", seals.len(), stored.len());
        return Err(SealError::BadManifest { chunk, reason });
    }
    let data_key = keys::unwrap_data_key(&manifest.keys, &chunk, &keys.data_pair)
        .map_err(|source| SealError::Key { chunk, source })?;
    let cipher = data_key.cipher();
    for (index, (shard, seal)) in stored.chunks_exact_mut(shard_len).zip(seals).enumerate() {
        let aad = associated_data(&chunk, index, manifest.erasure, manifest.shard_len);
        cipher.open_detached(seal, &aad, shard).map_err(|_| SealError::SliceAuthentication { chunk, index })?;
    }
    finish_open(manifest, stored, keys)
}

/// From the decrypted, decoded stored bytes to the verified plaintext.
fn finish_open(manifest: &Chunk, mut stored: Vec<u8>, keys: &NodeKeys) -> SealResult<Vec<u8>> // PA
{
    let chunk = manifest.id;
    stored.truncate(manifest.stored_len as usize);

    let plain = match manifest.codec {
        Codec::Stored => stored,
        Codec::Zstd => {
            let plain = decompress(&stored, manifest.plain_len as usize)
                .map_err(|e| SealError::Decompress { chunk, reason: e.to_string() })?;
            if plain.len() != manifest.plain_len as usize {
                return Err(SealError::Decompress {
                    chunk,
                    reason: format!("{} bytes out, the manifest says {}", plain.len(), manifest.plain_len),
                });
            }
            plain
        }
    };
    let actual = Hash::keyed(&keys.dedup_key, &plain);
    if actual != chunk {
        return Err(SealError::ContentMismatch { chunk, actual });
    }
    Ok(plain)
}

fn open_slice(manifest: &Chunk, index: usize, slice: SealedSlice, cipher: &Cipher) -> SealResult<Vec<u8>> // PA
{
    let chunk = manifest.id;
    let expected = manifest.slices[index];
    // The AEAD authenticates nonce and payload, so the content is not
    // rehashed here; the claimed hash must still be the one asked for.
    if slice.hash != expected {
        return Err(SealError::SliceHashMismatch { chunk, index, expected, actual: slice.hash });
    }
    if slice.payload.len() != manifest.shard_len as usize + TAG_LEN {
        return Err(SealError::SliceAuthentication { chunk, index });
    }
    let aad = associated_data(&chunk, index, manifest.erasure, manifest.shard_len);
    let mut shard = slice.payload;
    cipher.open(slice.nonce, &aad, &mut shard).map_err(|_| SealError::SliceAuthentication { chunk, index })?;
    Ok(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::keys::DataKeyPair;

    fn fixture() -> NodeKeys // A
    {
        let pair = DataKeyPair::generate();
        NodeKeys { dedup_key: [9; 32], recipients: vec![pair.public()], data_pair: pair }
    }

    fn seal(f: &NodeKeys, plain: &[u8], erasure: Erasure) -> SealedChunk // A
    {
        let id = Hash::keyed(&f.dedup_key, plain);
        seal_chunk(id, plain.to_vec(), SealParams { erasure, zstd_level: 1 }, &f.recipients).unwrap()
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> // A
    {
        use rand::{RngCore, SeedableRng};
        let mut bytes = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
        bytes
    }

    #[test]
    fn lost_slices_are_rebuilt_byte_for_byte_from_any_k() // A
    {
        let f = fixture();
        let erasure = Erasure { data: 4, parity: 2 };
        let sealed = seal(&f, &noise(900_000, 4), erasure);
        let all: Vec<Option<SealedSlice>> = sealed.slices.iter().cloned().map(Some).collect();
        // Any two lost, data or parity: rebuilt from the four others as sealed.
        for lost in [[0, 1], [0, 5], [4, 5], [2, 3], [1, 4]] {
            let mut held = all.clone();
            for index in lost {
                held[index] = None;
            }
            let rebuilt = rebuild_slices(&sealed.manifest, held, &lost, &f).unwrap();
            for (index, slice) in lost.iter().zip(&rebuilt) {
                assert_eq!(*slice, sealed.slices[*index], "slice {index} rebuilt differently (lost {lost:?})");
            }
        }
        // Three lost of a 4+2 chunk: refused, naming how many were at hand.
        let mut held = all.clone();
        for index in [0, 2, 4] {
            held[index] = None;
        }
        let error = rebuild_slices(&sealed.manifest, held, &[0], &f).unwrap_err();
        assert!(matches!(error, SealError::NotEnoughSlices { available: 3, needed: 4, .. }), "{error}");
        // Another key cannot rebuild: it cannot open the chunk.
        assert!(rebuild_slices(&sealed.manifest, all.clone(), &[1], &fixture()).is_err());
        // A position past the chunk's slices is refused, not a panic.
        assert!(rebuild_slices(&sealed.manifest, all, &[6], &f).is_err());
    }

    #[test]
    fn round_trip_compressible_and_incompressible() // A
    {
        let f = fixture();
        let text = b"the quick brown fox jumps over the lazy dog. ".repeat(5000);
        let random = noise(100_001, 1);
        for (plain, codec) in [(&text, Codec::Zstd), (&random, Codec::Stored)] {
            for erasure in [Erasure::new(1, 0), Erasure::new(2, 1), Erasure::new(4, 2)] {
                let sealed = seal(&f, plain, erasure);
                assert_eq!(sealed.manifest.codec, codec);
                let slices: Vec<_> = sealed.slices.into_iter().map(Some).collect();
                assert_eq!(&open_chunk(&sealed.manifest, slices.clone(), &f).unwrap(), plain);
            }
        }
    }

    #[test]
    fn any_m_slices_may_be_lost_but_not_more() // A
    {
        let f = fixture();
        let plain = noise(300_000, 2);
        let sealed = seal(&f, &plain, Erasure::new(4, 2));
        for a in 0..6 {
            for b in a + 1..6 {
                let mut slices: Vec<_> = sealed.slices.iter().cloned().map(Some).collect();
                slices[a] = None;
                slices[b] = None;
                assert_eq!(open_chunk(&sealed.manifest, slices.clone(), &f).unwrap(), plain, "lost {a},{b}");
                let third = (0..6).find(|i| slices[*i].is_some()).unwrap();
                slices[third] = None;
                let error = open_chunk(&sealed.manifest, slices.clone(), &f).unwrap_err();
                assert_eq!(error, SealError::NotEnoughSlices { chunk: sealed.manifest.id, available: 3, needed: 4 });
            }
        }
    }

    #[test]
    fn a_corrupted_slice_is_detected_and_parity_covers_it() // A
    {
        let f = fixture();
        let plain = noise(50_000, 3);
        let sealed = seal(&f, &plain, Erasure::new(2, 1));
        let mut slices: Vec<_> = sealed.slices.iter().cloned().map(Some).collect();
        if let Some(slice) = slices[0].as_mut() {
            slice.payload[10] ^= 1;
        }
        assert_eq!(open_chunk(&sealed.manifest, slices.clone(), &f).unwrap(), plain);
        // With no parity to fall back on, the damaged slice is named.
        let sealed = seal(&f, &plain, Erasure::new(1, 0));
        let mut slice = sealed.slices[0].clone();
        slice.payload[10] ^= 1;
        let error = open_chunk(&sealed.manifest, vec![Some(slice.clone())], &f).unwrap_err();
        assert_eq!(error, SealError::SliceAuthentication { chunk: sealed.manifest.id, index: 0 });
        // A forger who recomputes the slice hash still fails authentication.
        let forged = SealedSlice::new(slice.nonce, slice.payload);
        let mut manifest = sealed.manifest.clone();
        manifest.slices[0] = forged.hash;
        let error = open_chunk(&manifest, vec![Some(forged)], &f).unwrap_err();
        assert_eq!(error, SealError::SliceAuthentication { chunk: manifest.id, index: 0 });
    }

    #[test]
    fn wrong_keys_are_refused_with_the_chunk_named() // A
    {
        let f = fixture();
        let plain = noise(10_000, 4);
        let sealed = seal(&f, &plain, Erasure::new(1, 0));
        let slices = vec![Some(sealed.slices[0].clone())];
        let stranger = NodeKeys { data_pair: DataKeyPair::generate(), ..f.clone() };
        let error = open_chunk(&sealed.manifest, slices.clone(), &stranger).unwrap_err();
        assert!(matches!(error, SealError::Key { .. }));
        assert!(error.to_string().contains(&sealed.manifest.id.to_hex()));
        let other_cluster = NodeKeys { dedup_key: [0; 32], ..f.clone() };
        let error = open_chunk(&sealed.manifest, slices.clone(), &other_cluster).unwrap_err();
        assert!(matches!(error, SealError::ContentMismatch { .. }));
    }

    #[test]
    fn inconsistent_manifests_are_refused() // A
    {
        let f = fixture();
        let sealed = seal(&f, &noise(1000, 5), Erasure::new(2, 1));
        let slices: Vec<_> = sealed.slices.iter().cloned().map(Some).collect();
        let mut manifest = sealed.manifest.clone();
        manifest.slices.pop();
        assert!(matches!(open_chunk(&manifest, slices.clone(), &f), Err(SealError::BadManifest { .. })));
        let mut manifest = sealed.manifest.clone();
        manifest.stored_len = u32::MAX;
        assert!(matches!(open_chunk(&manifest, slices.clone(), &f), Err(SealError::BadManifest { .. })));
        let mut manifest = sealed.manifest.clone();
        manifest.erasure = Erasure::new(0, 3);
        assert!(matches!(open_chunk(&manifest, slices.clone(), &f), Err(SealError::BadManifest { .. })));
        // A forged manifest (any node can wrap a key to the public data key)
        // must not make the reader reserve gigabytes to decompress into.
        let mut manifest = sealed.manifest.clone();
        manifest.plain_len = u32::MAX;
        assert!(matches!(open_chunk(&manifest, slices.clone(), &f), Err(SealError::BadManifest { .. })));
    }
}
