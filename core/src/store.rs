//! The local store of one node, on fjall: sealed slices, chunk manifests,
//! blobs, and the indexes derived from blobs (key → heads, parent → children,
//! chunk → referencing blobs). Applying a blob is idempotent and commutative,
//! so replicas that receive the same blobs in any order hold the same indexes.

use std::path::Path;
use std::sync::Mutex;

use fjall::{Config, Keyspace, KvSeparationOptions, PartitionCreateOptions, PartitionHandle, PersistMode};

use crate::codec::{self, DecodeError};
use crate::hash::Hash;
use crate::model::{Blob, Chunk, RecordError, SealedSlice, SliceDecodeError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("local store I/O: {0}")]
    Io(#[from] fjall::Error),
    #[error("local store: {0}")]
    Slice(#[from] SliceDecodeError),
    #[error("local store: {0}")]
    Record(#[from] RecordError),
    #[error("local store: chunk manifest {hash}: {source}")]
    Chunk { hash: Hash, source: DecodeError },
    #[error("local store: index entry of {len} bytes in {index} is malformed")]
    BadIndexEntry { index: &'static str, len: usize },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// When a write reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Each acknowledged blob is fsynced with everything written before it:
    /// survives power loss.
    Sync,
    /// Handed to the operating system: survives a killed process, not a
    /// power cut. For tests and benchmarks.
    Flush,
}

pub struct LocalStore {
    keyspace: Keyspace,
    slices: PartitionHandle,
    chunks: PartitionHandle,
    blobs: PartitionHandle,
    heads: PartitionHandle,
    children: PartitionHandle,
    chunk_refs: PartitionHandle,
    durability: Durability,
    /// Serialises blob application: deciding whether a blob is a head reads
    /// the children index, which a concurrent apply may be changing.
    apply_lock: Mutex<()>,
}

/// Sorts as `bucket`, then `key`, then whatever follows, with keys of any
/// bytes: 0x00 inside a key is escaped as 0x00 0xFF and the key ends with
/// 0x00 0x01, so "a" < "a\0" < "a\0b" < "ab" holds as for the raw keys.
pub fn object_index_key(bucket: &str, key: &str) -> Vec<u8> // PA
{
    let mut out = object_prefix(bucket, key);
    out.extend_from_slice(&[0, 1]);
    out
}

/// The index prefix shared by every key of `bucket` that starts with `prefix`.
pub fn object_prefix(bucket: &str, prefix: &str) -> Vec<u8> // PA
{
    let mut out = Vec::with_capacity(bucket.len() + prefix.len() + 36);
    out.extend_from_slice(bucket.as_bytes());
    out.push(0);
    for &byte in prefix.as_bytes() {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
    out
}

fn pair_key(first: &Hash, second: &Hash) -> [u8; 64] // PA
{
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(first.as_bytes());
    out[32..].copy_from_slice(second.as_bytes());
    out
}

fn trailing_hash(index: &'static str, key: &[u8]) -> StoreResult<Hash> // PA
{
    key.len()
        .checked_sub(32)
        .and_then(|start| Hash::from_slice(&key[start..]))
        .ok_or(StoreError::BadIndexEntry { index, len: key.len() })
}

impl LocalStore {
    pub fn open(dir: &Path, durability: Durability) -> StoreResult<Self> // PA
    {
        let keyspace = Config::new(dir).open()?;
        let plain = PartitionCreateOptions::default;
        // Slices are large: keep them in value logs, out of the LSM tree's
        // compactions.
        let slices = keyspace.open_partition("slices", plain().with_kv_separation(KvSeparationOptions::default()))?;
        Ok(LocalStore {
            chunks: keyspace.open_partition("chunks", plain())?,
            blobs: keyspace.open_partition("blobs", plain())?,
            heads: keyspace.open_partition("heads", plain())?,
            children: keyspace.open_partition("children", plain())?,
            chunk_refs: keyspace.open_partition("chunk_refs", plain())?,
            slices,
            keyspace,
            durability,
            apply_lock: Mutex::new(()),
        })
    }

    fn persist(&self) -> StoreResult<()> // PA
    {
        let mode = match self.durability {
            Durability::Sync => PersistMode::SyncData,
            Durability::Flush => PersistMode::Buffer,
        };
        Ok(self.keyspace.persist(mode)?)
    }

    /// Slices and manifests become durable with the blob that references them
    /// (one journal, persisted in order).
    pub fn put_slice(&self, slice: &SealedSlice) -> StoreResult<()> // PA
    {
        if !self.slices.contains_key(slice.hash.as_bytes())? {
            self.slices.insert(slice.hash.as_bytes(), slice.encode())?;
        }
        Ok(())
    }

    /// Drop a slice (garbage collection, repair of a damaged copy).
    pub fn remove_slice(&self, hash: &Hash) -> StoreResult<()> // PA
    {
        Ok(self.slices.remove(hash.as_bytes())?)
    }

    pub fn get_slice(&self, hash: &Hash) -> StoreResult<Option<SealedSlice>> // PA
    {
        match self.slices.get(hash.as_bytes())? {
            Some(bytes) => Ok(Some(SealedSlice::decode(hash, &bytes)?)),
            None => Ok(None),
        }
    }

    pub fn put_chunk(&self, chunk: &Chunk) -> StoreResult<()> // PA
    {
        if !self.chunks.contains_key(chunk.id.as_bytes())? {
            self.chunks.insert(chunk.id.as_bytes(), codec::encode(chunk))?;
        }
        Ok(())
    }

    pub fn get_chunk(&self, id: &Hash) -> StoreResult<Option<Chunk>> // PA
    {
        let Some(bytes) = self.chunks.get(id.as_bytes())? else { return Ok(None) };
        let chunk: Chunk = codec::decode(&bytes).map_err(|source| StoreError::Chunk { hash: *id, source })?;
        if chunk.id != *id {
            return Err(StoreError::Record(RecordError::HashMismatch {
                kind: codec::RecordKind::Chunk,
                expected: *id,
                actual: chunk.id,
            }));
        }
        Ok(Some(chunk))
    }

    /// Store an encoded blob and update the indexes it implies; returns its
    /// hash. Storing a blob twice changes nothing.
    pub fn put_blob(&self, bytes: &[u8]) -> StoreResult<Hash> // PA
    {
        let hash = Hash::of(bytes);
        let blob = Blob::decode_verified(&hash, bytes)?;
        {
            let _guard = self.apply_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if self.blobs.contains_key(hash.as_bytes())? {
                return Ok(hash);
            }
            let object = object_index_key(&blob.bucket, &blob.key);
            let mut batch = self.keyspace.batch();
            batch.insert(&self.blobs, hash.as_bytes(), bytes);
            for parent in &blob.parents {
                batch.insert(&self.children, pair_key(parent, &hash), []);
                batch.remove(&self.heads, [object.as_slice(), parent.as_bytes()].concat());
            }
            // A child may have arrived first (replicas see blobs in any order).
            if self.children.prefix(hash.as_bytes()).next().is_none() {
                batch.insert(&self.heads, [object.as_slice(), hash.as_bytes()].concat(), []);
            }
            for chunk in &blob.chunks {
                batch.insert(&self.chunk_refs, pair_key(&chunk.id, &hash), []);
            }
            batch.commit()?;
        }
        self.persist()?;
        Ok(hash)
    }

    /// The stored encoding of a blob (callers verify it against `hash`).
    pub fn get_blob_bytes(&self, hash: &Hash) -> StoreResult<Option<Vec<u8>>> // PA
    {
        Ok(self.blobs.get(hash.as_bytes())?.map(|bytes| bytes.to_vec()))
    }

    pub fn get_blob(&self, hash: &Hash) -> StoreResult<Option<Blob>> // PA
    {
        match self.blobs.get(hash.as_bytes())? {
            Some(bytes) => Ok(Some(Blob::decode_verified(hash, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The current heads of an object key (versions with no children).
    pub fn heads(&self, bucket: &str, key: &str) -> StoreResult<Vec<Hash>> // PA
    {
        self.heads.prefix(object_index_key(bucket, key)).map(|entry| trailing_hash("heads", &entry?.0)).collect()
    }

    pub fn children(&self, parent: &Hash) -> StoreResult<Vec<Hash>> // PA
    {
        self.children.prefix(parent.as_bytes()).map(|entry| trailing_hash("children", &entry?.0)).collect()
    }

    /// Blobs that reference a chunk.
    pub fn chunk_referrers(&self, chunk: &Hash) -> StoreResult<Vec<Hash>> // PA
    {
        self.chunk_refs.prefix(chunk.as_bytes()).map(|entry| trailing_hash("chunk_refs", &entry?.0)).collect()
    }

    /// Bytes the store occupies on disk.
    pub fn disk_space(&self) -> u64 // A
    {
        self.keyspace.disk_space()
    }

    /// Total bytes of sealed slices held (payload and nonce).
    pub fn slice_bytes(&self) -> StoreResult<u64> // A
    {
        let mut total = 0u64;
        for entry in self.slices.iter() {
            total += entry?.1.len() as u64;
        }
        Ok(total)
    }

    pub fn slice_count(&self) -> StoreResult<usize> // A
    {
        Ok(self.slices.len()?)
    }

    /// Make everything written so far durable regardless of the mode.
    pub fn sync(&self) -> StoreResult<()> // PA
    {
        Ok(self.keyspace.persist(PersistMode::SyncAll)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_sort_like_raw_keys() // A
    {
        let keys = ["", "a", "a\0", "a\0b", "a b", "ab", "b", "é"];
        let encoded: Vec<_> = keys.iter().map(|k| object_index_key("bkt", k)).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        // A key is not a prefix match of a longer key's exact entry.
        assert!(!object_index_key("bkt", "ab").starts_with(&object_index_key("bkt", "a")));
        assert!(object_index_key("bkt", "ab").starts_with(&object_prefix("bkt", "a")));
    }
}
