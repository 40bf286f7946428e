//! The data model: sealed slices, chunk manifests with their key index, and
//! blobs (one version of one object, identified by the hash of its encoding).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, Record, RecordKind};
use crate::hash::Hash;

/// A node's id: BLAKE3 of its public key.
pub type NodeId = Hash;

/// A slice's nonce and Poly1305 tag, for a reader that reads the
/// ciphertext into a buffer of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceSeal {
    pub nonce: [u8; 12],
    pub tag: [u8; 16],
}

/// One erasure-coded, encrypted shard of a chunk. `hash` = BLAKE3(nonce ‖
/// payload), so any node can check a slice's integrity without any key.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSlice {
    pub hash: Hash,
    pub nonce: [u8; 12],
    /// Ciphertext followed by the 16-byte Poly1305 tag.
    pub payload: Vec<u8>,
}

/// On the wire a slice is its own encoding as one byte string; the hash is
/// recomputed from the bytes, never taken from the sender.
impl Serialize for SealedSlice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> // PA
    {
        serializer.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for SealedSlice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> // PA
    {
        struct SliceBytes;
        impl<'de> serde::de::Visitor<'de> for SliceBytes {
            type Value = SealedSlice;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result // A
            {
                f.write_str("an encoded slice")
            }

            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<SealedSlice, E> // PA
            {
                SealedSlice::decode_received(bytes).map_err(E::custom)
            }
        }
        deserializer.deserialize_bytes(SliceBytes)
    }
}

impl std::fmt::Debug for SealedSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result // A
    {
        write!(f, "SealedSlice({:?}, {} bytes)", self.hash, self.payload.len())
    }
}

impl SealedSlice {
    /// Version of the slice layout this build writes.
    pub const VERSION: u8 = 1;

    pub fn new(nonce: [u8; 12], payload: Vec<u8>) -> Self // PA
    {
        let hash = Hash::of_parts(&[&nonce, &payload]);
        SealedSlice { hash, nonce, payload }
    }

    /// Slices are the bulk of all bytes, so their layout is fixed rather than
    /// serde-encoded: envelope, nonce, payload. The hash is not stored; it is
    /// recomputed on decode and is the key the slice is stored under.
    pub fn encode(&self) -> Vec<u8> // PA
    {
        let mut out = Vec::with_capacity(codec::ENVELOPE_LEN + 12 + self.payload.len());
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Bytes before the payload in the encoding: envelope and nonce.
    pub const HEADER_LEN: usize = codec::ENVELOPE_LEN + 12;

    /// Decode a slice stored under `hash` without rehashing it: the reader's
    /// AEAD check authenticates every byte anyway. Scrub uses `decode_verified`.
    pub fn decode(hash: &Hash, mut bytes: Vec<u8>) -> Result<Self, SliceDecodeError> // PA
    {
        if bytes.len() < Self::HEADER_LEN {
            return Self::decode_parts(hash, &bytes, Vec::new());
        }
        let payload = bytes.split_off(Self::HEADER_LEN);
        Self::decode_parts(hash, &bytes, payload)
    }

    /// Decode a slice whose header and payload were read separately, so the
    /// payload never has to move within its buffer.
    pub fn decode_parts(hash: &Hash, header: &[u8], payload: Vec<u8>) -> Result<Self, SliceDecodeError> // PA
    {
        let nonce = Self::decode_header(hash, header)?;
        if payload.len() < 16 {
            return Err(SliceDecodeError::Truncated { hash: *hash, len: header.len() + payload.len() });
        }
        Ok(SealedSlice { hash: *hash, nonce, payload })
    }

    /// The nonce from a slice's header (envelope and nonce).
    pub fn decode_header(hash: &Hash, header: &[u8]) -> Result<[u8; 12], SliceDecodeError> // PA
    {
        let (version, body) = codec::open_envelope(RecordKind::Slice, header)
            .map_err(|source| SliceDecodeError::Envelope { hash: *hash, source })?;
        if version != Self::VERSION {
            return Err(SliceDecodeError::Envelope {
                hash: *hash,
                source: DecodeError::UnknownVersion { kind: RecordKind::Slice, version, newest: Self::VERSION },
            });
        }
        let mut nonce = [0u8; 12];
        match body.get(..12) {
            Some(bytes) => nonce.copy_from_slice(bytes),
            None => return Err(SliceDecodeError::Truncated { hash: *hash, len: body.len() }),
        }
        Ok(nonce)
    }

    /// Decode a slice that arrived with no name: its hash is computed here.
    pub fn decode_received(bytes: &[u8]) -> Result<Self, SliceDecodeError> // PA
    {
        let header = bytes.get(..Self::HEADER_LEN).unwrap_or(bytes);
        let payload = bytes.get(Self::HEADER_LEN..).unwrap_or_default();
        let unnamed = Hash::of(&[]);
        let nonce = Self::decode_header(&unnamed, header)?;
        if payload.len() < 16 {
            return Err(SliceDecodeError::Truncated { hash: unnamed, len: bytes.len() });
        }
        Ok(SealedSlice::new(nonce, payload.to_vec()))
    }

    /// Decode a slice and check that its content hashes to `expected`.
    pub fn decode_verified(expected: &Hash, bytes: Vec<u8>) -> Result<Self, SliceDecodeError> // PA
    {
        let slice = Self::decode(expected, bytes)?;
        let actual = Hash::of_parts(&[&slice.nonce, &slice.payload]);
        if actual != *expected {
            return Err(SliceDecodeError::HashMismatch { expected: *expected, actual });
        }
        Ok(slice)
    }

    /// The envelope and nonce that precede the payload in the encoding.
    pub fn header(&self) -> [u8; Self::HEADER_LEN] // PA
    {
        let mut header = [0u8; Self::HEADER_LEN];
        header[..codec::ENVELOPE_LEN].copy_from_slice(&codec::envelope(RecordKind::Slice, Self::VERSION));
        header[codec::ENVELOPE_LEN..].copy_from_slice(&self.nonce);
        header
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SliceDecodeError {
    #[error("slice {hash}: {source}")]
    Envelope { hash: Hash, source: DecodeError },
    #[error("slice {hash}: truncated ({len} bytes after the envelope, at least 28 needed)")]
    Truncated { hash: Hash, len: usize },
    #[error("slice {expected}: content hashes to {actual} (corrupted)")]
    HashMismatch { expected: Hash, actual: Hash },
}

/// How a chunk's bytes were compressed before coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    /// Stored as is: compression did not make it smaller.
    Stored,
    Zstd,
}

/// Reed-Solomon parameters: `data` shards of which any `data` out of
/// `data + parity` rebuild the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub data: u8,
    pub parity: u8,
}

impl Erasure {
    pub const fn new(data: u8, parity: u8) -> Self // A
    {
        Erasure { data, parity }
    }

    pub fn total(&self) -> usize // A
    {
        self.data as usize + self.parity as usize
    }

    /// The coding to use for a cluster of `nodes` members.
    pub fn for_cluster(nodes: usize) -> Self // PA
    {
        match nodes {
            0 | 1 => Erasure::new(1, 0),
            2 => Erasure::new(1, 1),
            3 => Erasure::new(2, 1),
            4 | 5 => Erasure::new(2, 2),
            _ => Erasure::new(4, 2),
        }
    }
}

/// A chunk's data key wrapped for one recipient by X25519 key encapsulation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// BLAKE3 of the recipient's public key.
    pub recipient: Hash,
    /// The sender's ephemeral X25519 public key, shared by the chunks one
    /// process seals within a minute.
    pub ephemeral: [u8; 32],
    /// The data key sealed with the derived key-encryption key: a 12-byte
    /// random nonce, then 32 + 16 bytes. Records of the first form, one
    /// ephemeral key per wrap, have no nonce (48 bytes; the nonce was zero).
    pub sealed_key: Vec<u8>,
}

/// The chunk's data key, once per recipient public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KeyIndex(pub Vec<WrappedKey>);

/// The manifest of one stored chunk: everything needed to find, open and
/// verify it, except the private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Keyed BLAKE3 of the plaintext.
    pub id: Hash,
    pub plain_len: u32,
    pub codec: Codec,
    /// Length after compression, before padding into shards.
    pub stored_len: u32,
    pub erasure: Erasure,
    pub shard_len: u32,
    /// Hash of slice i, for i in 0..data+parity.
    pub slices: Vec<Hash>,
    pub keys: KeyIndex,
}

impl Record for Chunk {
    const KIND: RecordKind = RecordKind::Chunk;
}

/// Where one chunk sits in an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: Hash,
    pub offset: u64,
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobKind {
    Version,
    DeleteMarker,
    Merge,
}

/// One version of one object. Its hash (BLAKE3 of its encoding) is the S3
/// version id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub bucket: String,
    pub key: String,
    /// 0 = first version, 1 = normal, 2 or more = merge.
    pub parents: Vec<Hash>,
    /// UTC nanoseconds since the Unix epoch.
    pub created: u64,
    pub writer: NodeId,
    pub kind: BlobKind,
    pub size: u64,
    pub etag: String,
    /// Standard headers (content-type, cache-control, ...), lowercase names.
    pub system_metadata: BTreeMap<String, String>,
    /// `x-amz-meta-*` headers, without the prefix.
    pub user_metadata: BTreeMap<String, String>,
    /// Algorithm name (`crc32`, `sha256`, ...) → base64 value.
    pub checksums: BTreeMap<String, String>,
    /// The chunks, in order, when there are few enough to keep inline;
    /// empty when `chunk_lists` holds them.
    pub chunks: Vec<ChunkRef>,
    /// Sizes of the parts of a multipart upload, in order; empty otherwise.
    pub part_sizes: Vec<u64>,
    /// Written while the bucket was unversioned or suspended: S3 calls it
    /// the key's "null" version, and a newer null version replaces it.
    pub null_version: bool,
    /// The chunk list in separate records, for objects of more than
    /// `CHUNKS_PER_LIST` chunks (up to S3's 5 TiB), in order.
    pub chunk_lists: Vec<ChunkListRef>,
}

/// Most chunk references a blob keeps inline, and most in one `ChunkList`
/// record (about 3 MB encoded).
pub const CHUNKS_PER_LIST: usize = 65_536;

/// Where one `ChunkList` record sits in an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkListRef {
    /// BLAKE3 of the record's encoding.
    pub hash: Hash,
    /// Byte range of the object its chunks cover.
    pub offset: u64,
    pub len: u64,
}

/// A run of a large object's chunk list, with offsets in the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkList {
    pub chunks: Vec<ChunkRef>,
}

impl Record for ChunkList {
    const KIND: RecordKind = RecordKind::ChunkList;
}

impl ChunkList {
    /// Decode stored bytes and check they are the list named `expected`.
    pub fn decode_verified(expected: &Hash, bytes: &[u8]) -> Result<Self, RecordError> // PA
    {
        let actual = Hash::of(bytes);
        if actual != *expected {
            return Err(RecordError::HashMismatch { kind: RecordKind::ChunkList, expected: *expected, actual });
        }
        codec::decode(bytes).map_err(|source| RecordError::Decode { hash: *expected, source })
    }
}

/// Blob layout 1, before `null_version`: every blob then was written to an
/// unversioned bucket, so it decodes as a null version.
#[derive(Serialize, Deserialize)]
struct BlobV1 {
    bucket: String,
    key: String,
    parents: Vec<Hash>,
    created: u64,
    writer: NodeId,
    kind: BlobKind,
    size: u64,
    etag: String,
    system_metadata: BTreeMap<String, String>,
    user_metadata: BTreeMap<String, String>,
    checksums: BTreeMap<String, String>,
    chunks: Vec<ChunkRef>,
    part_sizes: Vec<u64>,
}

impl Record for Blob {
    const KIND: RecordKind = RecordKind::Blob;
    const VERSION: u8 = 3;

    /// Layout 1 lacks `null_version` and `chunk_lists`; layout 2 lacks
    /// `chunk_lists`. Postcard writes a struct as its fields in order, so
    /// layout 2 reads as (layout 1, `null_version`).
    fn decode_older(version: u8, body: &[u8]) -> Result<Self, DecodeError> // PA
    {
        let (v1, null_version) = match version {
            1 => (codec::decode_body::<BlobV1>(Self::KIND, body)?, true),
            2 => codec::decode_body::<(BlobV1, bool)>(Self::KIND, body)?,
            _ => return Err(DecodeError::UnknownVersion { kind: Self::KIND, version, newest: Self::VERSION }),
        };
        Ok(Blob {
            bucket: v1.bucket,
            key: v1.key,
            parents: v1.parents,
            created: v1.created,
            writer: v1.writer,
            kind: v1.kind,
            size: v1.size,
            etag: v1.etag,
            system_metadata: v1.system_metadata,
            user_metadata: v1.user_metadata,
            checksums: v1.checksums,
            chunks: v1.chunks,
            part_sizes: v1.part_sizes,
            null_version,
            chunk_lists: Vec::new(),
        })
    }
}

impl Blob {
    /// The blob's canonical encoding and its hash (the version id).
    pub fn encode_with_hash(&self) -> (Hash, Vec<u8>) // PA
    {
        let bytes = codec::encode(self);
        (Hash::of(&bytes), bytes)
    }

    pub fn hash(&self) -> Hash // PA
    {
        self.encode_with_hash().0
    }

    /// Decode stored bytes and check they are the blob named `expected`.
    pub fn decode_verified(expected: &Hash, bytes: &[u8]) -> Result<Self, RecordError> // PA
    {
        let actual = Hash::of(bytes);
        if actual != *expected {
            return Err(RecordError::HashMismatch { kind: RecordKind::Blob, expected: *expected, actual });
        }
        codec::decode(bytes).map_err(|source| RecordError::Decode { hash: *expected, source })
    }

    /// Indexes of the chunks that overlap `start..end` (byte offsets).
    pub fn chunks_overlapping(&self, start: u64, end: u64) -> std::ops::Range<usize> // A
    {
        let first = self.chunks.partition_point(|c| c.offset + c.len as u64 <= start);
        let last = self.chunks.partition_point(|c| c.offset < end);
        first..last.max(first)
    }
}

/// What listings show of a version without decoding its blob: the value of
/// the `heads` and `versions` index entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntry {
    pub kind: BlobKind,
    pub created: u64,
    pub size: u64,
    pub etag: String,
    pub null_version: bool,
    pub writer: NodeId,
}

impl VersionEntry {
    pub fn of(blob: &Blob) -> Self // A
    {
        VersionEntry {
            kind: blob.kind,
            created: blob.created,
            size: blob.size,
            etag: blob.etag.clone(),
            null_version: blob.null_version,
            writer: blob.writer,
        }
    }
}

/// One version of a key as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSummary {
    pub key: String,
    pub version: Hash,
    pub entry: VersionEntry,
}

impl ObjectSummary {
    pub fn of(version: Hash, blob: &Blob) -> Self // A
    {
        Self::from_entry(blob.key.clone(), version, VersionEntry::of(blob))
    }

    pub fn from_entry(key: String, version: Hash, entry: VersionEntry) -> Self // A
    {
        ObjectSummary { key, version, entry }
    }

    /// Whether `self` wins over `other` as the key's current version.
    pub fn newer_than(&self, other: &ObjectSummary) -> bool // A
    {
        (self.entry.created, self.version) > (other.entry.created, other.version)
    }

    /// The S3 version id: the blob hash, or "null".
    pub fn version_id(&self) -> String // A
    {
        if self.entry.null_version {
            NULL_VERSION_ID.to_string()
        } else {
            self.version.to_hex()
        }
    }
}

/// How S3 names the version written while versioning was off.
pub const NULL_VERSION_ID: &str = "null";

/// S3 versioning state of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Versioning {
    #[default]
    Unversioned,
    Enabled,
    Suspended,
}

/// A bucket: a last-writer-wins register replicated to every node. Deleting
/// a bucket writes a record with `deleted` set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub name: String,
    /// When the bucket was created (UTC nanoseconds).
    pub created: u64,
    /// The register's clock: the newest `updated` wins, then the larger encoding.
    pub updated: u64,
    pub deleted: bool,
    pub versioning: Versioning,
}

impl Record for BucketRecord {
    const KIND: RecordKind = RecordKind::Bucket;
}

impl BucketRecord {
    /// Last-writer-wins order between two versions of the same bucket record.
    pub fn supersedes(&self, other: &BucketRecord) -> bool // PA
    {
        register_supersedes((self.updated, self), (other.updated, other))
    }
}

/// Last-writer-wins between two versions of a register: the newer
/// `updated`, then the larger encoding, so every node picks the same one.
fn register_supersedes<R: Record>(one: (u64, &R), other: (u64, &R)) -> bool // PA
{
    (one.0, codec::encode(one.1)) > (other.0, codec::encode(other.1))
}

/// A small secret sealed to the data key pair's public half, as chunks'
/// data keys are: gateways, which hold the private half, can open it;
/// storage-only nodes, which keep it, cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub keys: KeyIndex,
    pub nonce: [u8; 12],
    /// ChaCha20-Poly1305 ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// An S3 access key as the cluster keeps it: a last-writer-wins register
/// replicated to every node, its secret sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    pub access_key_id: String,
    pub name: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The register's clock (UTC nanoseconds).
    pub updated: u64,
    pub secret: SealedSecret,
}

impl Record for AccessKeyRecord {
    const KIND: RecordKind = RecordKind::AccessKey;
}

/// One version of a row of a small metadata table (multipart uploads and
/// parts, access keys). Replicas keep whichever version supersedes the
/// other, so they merge to one answer in any order; a deletion is a
/// version without a value, kept as a tombstone so a replica that missed
/// it cannot bring the row back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowVersion {
    /// The register's clock (UTC nanoseconds).
    pub updated: u64,
    /// `None`: deleted.
    pub value: Option<Vec<u8>>,
    /// Chunks the row references (an upload part's), spared by garbage
    /// collection while the row is live.
    pub chunks: Vec<Hash>,
}

impl Record for RowVersion {
    const KIND: RecordKind = RecordKind::Row;
}

impl RowVersion {
    pub fn live(updated: u64, value: Vec<u8>, chunks: Vec<Hash>) -> Self // A
    {
        RowVersion { updated, value: Some(value), chunks }
    }

    pub fn tombstone(updated: u64) -> Self // A
    {
        RowVersion { updated, value: None, chunks: Vec::new() }
    }

    pub fn supersedes(&self, other: &RowVersion) -> bool // PA
    {
        register_supersedes((self.updated, self), (other.updated, other))
    }
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    /// UTC nanoseconds.
    pub initiated: u64,
    pub system_metadata: BTreeMap<String, String>,
    pub user_metadata: BTreeMap<String, String>,
    /// The checksum algorithm the client announced, lowercase.
    pub checksum_algorithm: Option<String>,
}

impl Record for UploadRecord {
    const KIND: RecordKind = RecordKind::Upload;
}

/// One uploaded part: its chunks are stored, nothing references them until
/// the upload completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub number: u16,
    /// Hex MD5 of the part's bytes.
    pub etag: String,
    pub size: u64,
    pub created: u64,
    /// From the start of the lead when there is one: the first chunk then
    /// holds `lead.len` bytes of the part before, then this part's own.
    pub chunks: Vec<ChunkRef>,
    pub checksums: BTreeMap<String, String>,
    pub lead: Option<PartLead>,
}

/// A part chunked from the start of the last chunk of the part before it,
/// as one stream of both would be (see `engine::stitch`): its first chunk
/// is the stream's chunk across the junction, and begins with that last
/// chunk's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartLead {
    /// The id of the part before's last chunk.
    pub from: Hash,
    /// Its length: the bytes at the start of this part's first chunk that
    /// are not this part's.
    pub len: u32,
}

/// Part layout 1, before `lead`.
#[derive(Serialize, Deserialize)]
struct PartRecordV1 {
    number: u16,
    etag: String,
    size: u64,
    created: u64,
    chunks: Vec<ChunkRef>,
    checksums: BTreeMap<String, String>,
}

impl Record for PartRecord {
    const KIND: RecordKind = RecordKind::Part;
    const VERSION: u8 = 2;

    /// Layout 1 lacks `lead`: its parts were all chunked from their start.
    fn decode_older(version: u8, body: &[u8]) -> Result<Self, DecodeError> // PA
    {
        if version != 1 {
            return Err(DecodeError::UnknownVersion { kind: Self::KIND, version, newest: Self::VERSION });
        }
        let v1 = codec::decode_body::<PartRecordV1>(Self::KIND, body)?;
        Ok(PartRecord {
            number: v1.number,
            etag: v1.etag,
            size: v1.size,
            created: v1.created,
            chunks: v1.chunks,
            checksums: v1.checksums,
            lead: None,
        })
    }
}

/// A stored record that could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("{kind:?} record {expected}: content hashes to {actual} (corrupted)")]
    HashMismatch { kind: RecordKind, expected: Hash, actual: Hash },
    #[error("record {hash}: {source}")]
    Decode { hash: Hash, source: DecodeError },
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_blob() -> Blob // A
    {
        Blob {
            bucket: "photos".into(),
            key: "2026/cat.jpg".into(),
            parents: vec![Hash::of(b"parent")],
            created: 1_764_000_000_000_000_000,
            writer: Hash::of(b"node"),
            kind: BlobKind::Version,
            size: 3,
            etag: "abc".into(),
            system_metadata: BTreeMap::from([("content-type".into(), "image/jpeg".into())]),
            user_metadata: BTreeMap::from([("owner".into(), "ann".into())]),
            checksums: BTreeMap::new(),
            chunks: vec![ChunkRef { id: Hash::of(b"c"), offset: 0, len: 3 }],
            part_sizes: vec![],
            null_version: false,
            chunk_lists: vec![],
        }
    }

    #[test]
    fn blob_round_trips_and_its_hash_is_stable() // A
    {
        let blob = sample_blob();
        let (hash, bytes) = blob.encode_with_hash();
        assert_eq!(Blob::decode_verified(&hash, &bytes).unwrap(), blob);
        assert_eq!(blob.hash(), hash, "the same blob must always have the same version id");
    }

    #[test]
    fn truncated_corrupted_and_foreign_records_are_refused_with_the_hash() // A
    {
        let blob = sample_blob();
        let (hash, bytes) = blob.encode_with_hash();
        for cut in [0, 1, 2, 3, bytes.len() / 2, bytes.len() - 1] {
            let error = Blob::decode_verified(&hash, &bytes[..cut]).unwrap_err();
            assert!(error.to_string().contains(&hash.to_hex()), "{error}");
            // Even when the hash check is bypassed, decoding a prefix fails cleanly.
            assert!(codec::decode::<Blob>(&bytes[..cut]).is_err());
        }
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(matches!(Blob::decode_verified(&hash, &flipped), Err(RecordError::HashMismatch { .. })));
        let chunk_bytes = codec::encode(&Chunk {
            id: hash,
            plain_len: 0,
            codec: Codec::Stored,
            stored_len: 0,
            erasure: Erasure::new(1, 0),
            shard_len: 0,
            slices: vec![],
            keys: KeyIndex::default(),
        });
        assert!(matches!(codec::decode::<Blob>(&chunk_bytes), Err(DecodeError::WrongKind { .. })));
    }

    #[test]
    fn a_record_from_a_newer_build_names_its_version() // A
    {
        let mut bytes = codec::encode(&sample_blob());
        bytes[2] = 9;
        let error = codec::decode::<Blob>(&bytes).unwrap_err();
        assert_eq!(error, DecodeError::UnknownVersion { kind: RecordKind::Blob, version: 9, newest: 3 });
    }

    #[test]
    fn a_blob_written_before_null_versions_reads_as_a_null_version() // A
    {
        let blob = sample_blob();
        let v1 = BlobV1 {
            bucket: blob.bucket.clone(),
            key: blob.key.clone(),
            parents: blob.parents.clone(),
            created: blob.created,
            writer: blob.writer,
            kind: blob.kind,
            size: blob.size,
            etag: blob.etag.clone(),
            system_metadata: blob.system_metadata.clone(),
            user_metadata: blob.user_metadata.clone(),
            checksums: blob.checksums.clone(),
            chunks: blob.chunks.clone(),
            part_sizes: blob.part_sizes.clone(),
        };
        let mut bytes = codec::envelope(RecordKind::Blob, 1).to_vec();
        bytes.extend(postcard::to_stdvec(&v1).unwrap());
        let hash = Hash::of(&bytes);
        let decoded = Blob::decode_verified(&hash, &bytes).unwrap();
        assert_eq!(decoded, Blob { null_version: true, ..blob.clone() });

        // Layout 2: layout 1 followed by `null_version`.
        let mut bytes = codec::envelope(RecordKind::Blob, 2).to_vec();
        bytes.extend(postcard::to_stdvec(&(&v1, false)).unwrap());
        let decoded = Blob::decode_verified(&Hash::of(&bytes), &bytes).unwrap();
        assert_eq!(decoded, Blob { null_version: false, ..blob });
    }

    #[test]
    fn a_part_written_before_leads_reads_as_chunked_from_its_start() // A
    {
        let chunk = ChunkRef { id: Hash::of(b"chunk"), offset: 0, len: 5 };
        let v1 = PartRecordV1 {
            number: 3,
            etag: "e".into(),
            size: 5,
            created: 9,
            chunks: vec![chunk],
            checksums: BTreeMap::new(),
        };
        let mut bytes = codec::envelope(RecordKind::Part, 1).to_vec();
        bytes.extend(postcard::to_stdvec(&v1).unwrap());
        let decoded = codec::decode::<PartRecord>(&bytes).unwrap();
        let expected = PartRecord {
            number: 3,
            etag: "e".into(),
            size: 5,
            created: 9,
            chunks: vec![chunk],
            checksums: BTreeMap::new(),
            lead: None,
        };
        assert_eq!(decoded, expected);
        let led = PartRecord { lead: Some(PartLead { from: Hash::of(b"before"), len: 2 }), ..expected };
        assert_eq!(codec::decode::<PartRecord>(&codec::encode(&led)).unwrap(), led);
    }

    #[test]
    fn slices_check_their_hash_and_length() // A
    {
        let slice = SealedSlice::new([7; 12], vec![1; 100]);
        let bytes = slice.encode();
        assert_eq!(SealedSlice::decode_verified(&slice.hash, bytes.clone()).unwrap(), slice);
        let truncated = SealedSlice::decode(&slice.hash, bytes[..20].to_vec());
        assert!(matches!(truncated, Err(SliceDecodeError::Truncated { .. })));
        let mut corrupt = bytes.clone();
        corrupt[50] ^= 0x80;
        assert!(matches!(
            SealedSlice::decode_verified(&slice.hash, corrupt),
            Err(SliceDecodeError::HashMismatch { .. })
        ));
    }

    #[test]
    fn overlapping_chunks_for_ranges() // A
    {
        let mut blob = sample_blob();
        blob.chunks = (0..4).map(|i| ChunkRef { id: Hash::of(&[i]), offset: i as u64 * 10, len: 10 }).collect();
        assert_eq!(blob.chunks_overlapping(0, 40), 0..4);
        assert_eq!(blob.chunks_overlapping(10, 20), 1..2);
        assert_eq!(blob.chunks_overlapping(9, 11), 0..2);
        assert_eq!(blob.chunks_overlapping(39, 40), 3..4);
        assert_eq!(blob.chunks_overlapping(40, 40), 4..4);
    }
}
