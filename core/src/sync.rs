//! Anti-entropy's vocabulary: what replicas of a metadata partition compare
//! and exchange. Every entry of a partition (a blob, a forgotten blob's
//! tombstone, a row version, a chunk manifest, a freed chunk's tombstone)
//! has an item id and a digest in the store's
//! sync index, under `partition ‖ leaf ‖ id`, so one partition is hashed
//! and scanned without a full scan. A partition's tree has two levels: 256
//! leaves (by the id's second byte), each the hash of its sorted entries,
//! and a root, the hash of the leaves. Replicas compare roots, then leaves,
//! then the entries of the leaves that differ, and send each other the
//! items one lacks. Applying an item is a merge that commutes (a tombstone
//! beats its blob or its chunk's sealing, the newer row version wins, a
//! manifest fills a replica without one), so after an exchange or two
//! both sides hold the same.

use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::model::{Chunk, RowVersion};

/// Leaves of one partition's tree.
pub const LEAVES: usize = 256;

/// What kind of entry a sync index entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum EntryKind {
    Blob = 1,
    Forgotten = 2,
    Row = 3,
    /// A chunk manifest; its item id is the chunk's id.
    Chunk = 4,
    /// A freed sealing of a chunk.
    FreedChunk = 5,
}

impl EntryKind {
    pub fn from_byte(byte: u8) -> Option<Self> // PA
    {
        match byte {
            1 => Some(EntryKind::Blob),
            2 => Some(EntryKind::Forgotten),
            3 => Some(EntryKind::Row),
            4 => Some(EntryKind::Chunk),
            5 => Some(EntryKind::FreedChunk),
            _ => None,
        }
    }
}

/// One entry's place in the tree and its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: Hash,
    pub digest: Hash,
}

/// An entry as one replica sends it to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncItem {
    /// An encoded blob, with the encoded chunk lists it needs (sent ahead
    /// of it, as a write does).
    Blob { bytes: Vec<u8>, chunk_lists: Vec<Vec<u8>> },
    /// A forgotten blob: it never comes back, and children that arrive
    /// later are linked to its parents.
    Forgotten { partition: u8, hash: Hash, forgotten_at: u64, parents: Vec<Hash> },
    /// A row version (tombstones too) of a partitioned table.
    Row { partition: u8, table: u8, key: Vec<u8>, version: RowVersion },
    /// A chunk's manifest: kept where none is held and its sealing was not
    /// freed (`LocalStore::merge_chunk`).
    Chunk { chunk: Chunk },
    /// A sealing of a chunk that garbage collection freed: its manifest
    /// never comes back, as its slices are gone.
    FreedChunk { chunk: Hash, sealing: Hash, freed_at: u64 },
}

/// The leaf of a partition's tree an item id falls in.
pub fn leaf_of(id: &Hash) -> u8 // PA
{
    id.0[1]
}

/// The item id of a row.
pub fn row_id(table: u8, key: &[u8]) -> Hash // PA
{
    Hash::of_parts(&[b"ouroboros row", &[table], key])
}

/// The digest of a blob's entry: the blob's own hash.
pub fn blob_digest(hash: &Hash) -> Hash // PA
{
    *hash
}

/// The digest of a forgotten blob's entry, which differs from the blob's.
pub fn forgotten_digest(hash: &Hash) -> Hash // PA
{
    Hash::of_parts(&[b"ouroboros forgotten", hash.as_bytes()])
}

/// The digest of a manifest's entry, the same for every sealing of the
/// chunk: a replica lacking the manifest is sent one, and one holding
/// another sealing keeps its own (`LocalStore::merge_chunk`).
pub fn manifest_digest(id: &Hash) -> Hash // PA
{
    Hash::of_parts(&[b"ouroboros manifest", id.as_bytes()])
}

/// A sealing of a chunk: the digest of the slices its manifest lists (two
/// manifests of a chunk differ only by their sealing). Tombstones of freed
/// manifests name it.
pub fn sealing_digest(chunk: &Chunk) -> Hash // PA
{
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"ouroboros sealing");
    for slice in &chunk.slices {
        hasher.update(slice.as_bytes());
    }
    Hash(*hasher.finalize().as_bytes())
}

/// The item id of a freed sealing's tombstone, which is also its digest:
/// the tombstone never changes.
pub fn freed_chunk_id(chunk: &Hash, sealing: &Hash) -> Hash // PA
{
    Hash::of_parts(&[b"ouroboros freed chunk", chunk.as_bytes(), sealing.as_bytes()])
}

/// The digest of a row version's entry.
pub fn row_digest(version: &RowVersion) -> Hash // PA
{
    Hash::of(&crate::codec::encode(version))
}

/// A leaf's digest: the hash of its entries in id order (an empty leaf
/// hashes to the same value everywhere).
pub fn leaf_digest(entries: &[Entry]) -> Hash // PA
{
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"ouroboros leaf");
    for entry in entries {
        hasher.update(entry.id.as_bytes());
        hasher.update(entry.digest.as_bytes());
    }
    Hash(*hasher.finalize().as_bytes())
}

/// A partition's root: the hash of its leaves' digests.
pub fn root_digest(leaves: &[Hash]) -> Hash // PA
{
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"ouroboros root");
    for leaf in leaves {
        hasher.update(leaf.as_bytes());
    }
    Hash(*hasher.finalize().as_bytes())
}
