//! The local store of one node, on fjall: chunk manifests, blobs, the
//! indexes derived from blobs (key → heads, key → every version newest
//! first, key → null versions, parent → children, chunk → referencing blobs),
//! the tombstones of forgotten blobs and the slice locations; the slices themselves are
//! appended to segment files (`slicelog`). Writes become durable in groups:
//! concurrent writers share one fsync (`Durability::Sync`). Applying a blob is idempotent and commutative, so replicas that receive the
//! same blobs in any order hold the same indexes.

use std::collections::{BTreeSet, HashMap};
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::hash::Hash;
use crate::hints::{HeldSlice, HintLog, Hinted};
use crate::layout::Layout;
use crate::model::{
    Blob, BucketRecord, Chunk, ChunkList, NodeId, ObjectSummary, RecordError, RowVersion, SealedSlice, SliceSeal,
    VersionEntry,
};
use crate::pace::PassProgress;
use crate::placement;
use crate::slicelog::SliceLog;
pub use crate::store_error::{is_storage_full, StoreError, StoreResult};
use crate::sync::{self, Entry, EntryKind, SyncItem};
use crate::world::{Clock, SystemClock};

/// The key of the layout in the `cluster` partition.
const LAYOUT_KEY: &[u8] = b"layout";
/// Present once the store's manifests are in the sync index.
const MANIFESTS_INDEXED_KEY: &[u8] = b"manifests-indexed";
/// The last scrub that finished: when (UTC milliseconds), slices checked,
/// slices found damaged; three big-endian u64s.
const SCRUB_KEY: &[u8] = b"scrub";
const SCRUB_PROGRESS_KEY: &[u8] = b"scrub-progress";

pub type Summaries = Vec<ObjectSummary>;
type Listing = StoreResult<Summaries>;
/// (slice hash, chunk id) pairs.
type SliceOwners = StoreResult<Vec<(Hash, Hash)>>;

/// A table row: its key and its newest version.
pub type Row = (Vec<u8>, RowVersion);

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

/// A background pass that reports how far it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    Move,
    Repair,
    Scrub,
}

/// What a scrub found of one slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SliceCheck {
    /// Its bytes hash to its name; `len` bytes were read.
    Sound {
        len: u64,
    },
    Damaged {
        reason: String,
    },
    /// Not stored (any more).
    Missing,
}

/// The last scrub a node finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubSummary {
    /// UTC milliseconds.
    pub finished_ms: u64,
    pub slices_checked: u64,
    pub slices_damaged: u64,
}

/// A scrub under way: every slice up to `reached`, in hash order, is
/// checked, with these counts so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubProgress {
    pub reached: Hash,
    pub slices_checked: u64,
    pub slices_damaged: u64,
}

/// The passes under way on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passes {
    pub moving: Option<PassProgress>,
    pub repairing: Option<PassProgress>,
    pub scrubbing: Option<PassProgress>,
}

pub struct LocalStore {
    keyspace: Keyspace,
    slices: SliceLog,
    chunks: PartitionHandle,
    blobs: PartitionHandle,
    heads: PartitionHandle,
    versions: PartitionHandle,
    nulls: PartitionHandle,
    tombstones: PartitionHandle,
    children: PartitionHandle,
    chunk_refs: PartitionHandle,
    /// Chunk id → when it was last stored or claimed by a deduplicating write
    /// (UTC nanoseconds): garbage collection spares recently claimed chunks.
    chunk_claims: PartitionHandle,
    /// Chunk ‖ row id: chunks that table rows (upload parts) reference.
    row_refs: PartitionHandle,
    /// Chunk id ‖ sealing digest → `FreedMark`: tombstones of freed
    /// manifests, published or still pending their free's settling.
    freed_chunks: PartitionHandle,
    /// Chunk ids whose manifest came from another node (anti-entropy, the
    /// move pass) or from a store older than freed sealings' tombstones:
    /// it may be one whose chunk was freed while its sender was away, so a
    /// write checks that its slices are held before reusing it.
    unverified_chunks: PartitionHandle,
    /// Row id → the chunk ids the row references, to drop them with the row.
    row_chunks: PartitionHandle,
    /// Slice hash → the chunk it belongs to ‖ when it was stored.
    slice_owners: PartitionHandle,
    /// Chunk-list records of large blobs, by hash.
    chunk_lists: PartitionHandle,
    /// Chunk list ‖ blob: which blobs use a list, to drop it with the last.
    list_refs: PartitionHandle,
    buckets: PartitionHandle,
    /// Table ‖ row key → the row's newest `RowVersion` (tombstones too).
    rows: PartitionHandle,
    /// Partition ‖ leaf ‖ item id → entry kind ‖ digest ‖ locator: what
    /// anti-entropy compares (`sync`).
    sync_index: PartitionHandle,
    /// This node's cluster state: the layout, the last scrub.
    cluster: PartitionHandle,
    /// Slice hash → its location ‖ why: slices a scrub found damaged and
    /// set aside, their bytes left in place.
    damaged_slices: PartitionHandle,
    /// Metadata writes and slices other nodes missed, kept for them (`hints`).
    hints: HintLog,
    /// The layout as last stored, for placement to read without the disk.
    layout: std::sync::RwLock<Arc<Layout>>,
    /// Serialises layout changes, so none is lost to a concurrent one.
    layout_lock: Mutex<()>,
    /// Digests of the sync trees' leaves and roots computed since they
    /// last changed.
    sync_cache: Mutex<SyncCache>,
    /// Partitions the last anti-entropy round found out of step with a
    /// replica (for `ouroboros status` and garbage collection);
    /// `NO_ROUND_YET` before the first round.
    partitions_unsynced: AtomicUsize,
    /// Slices the last move pass left to move, and their bytes.
    move_backlog: Mutex<Option<(u64, u64)>>,
    /// Chunks the last repair pass left short of slices.
    chunks_degraded: Mutex<Option<u64>>,
    /// The background passes under way, for status.
    passes: Mutex<Passes>,
    /// Wakes the scrubber for a scrub asked for now.
    scrub_wanted: tokio::sync::Notify,
    durability: Durability,
    /// When slices are stored and chunks claimed.
    clock: Arc<dyn Clock>,
    /// Serialises blob application: deciding whether a blob is a head reads
    /// the children index, which a concurrent apply may be changing.
    apply_lock: Mutex<()>,
    /// Serialises claiming and freeing chunks, so a claim is never lost to
    /// a concurrent free.
    claim_lock: Mutex<()>,
    /// Group commit: writes done so far, and how many of them a finished
    /// sync covered.
    writes: AtomicU64,
    synced: Mutex<u64>,
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

/// Where a listing starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListStart {
    /// At the first key of the prefix.
    Beginning,
    /// After this key.
    After(String),
    /// After every key that starts with this (a common prefix already listed).
    AfterPrefix(String),
}

/// The object key of an index entry: the bytes between the bucket and the
/// terminator, unescaped; `suffix` bytes (hash, time) follow the terminator.
fn object_key_of(index: &'static str, bucket: &str, entry: &[u8], suffix: usize) -> StoreResult<String> // PA
{
    let bad = || StoreError::BadIndexEntry { index, len: entry.len() };
    let body = entry.get(bucket.len() + 1..entry.len().checked_sub(suffix + 2).ok_or_else(bad)?).ok_or_else(bad)?;
    let mut key = Vec::with_capacity(body.len());
    let mut bytes = body.iter();
    while let Some(&byte) = bytes.next() {
        if byte == 0 {
            match bytes.next() {
                Some(0xFF) => key.push(0),
                _ => return Err(bad()),
            }
        } else {
            key.push(byte);
        }
    }
    String::from_utf8(key).map_err(|_| bad())
}

/// Bytes after the object key in a `versions` entry: time, then hash.
const VERSION_SUFFIX: usize = 8 + 32;

/// `versions` entries sort newest first within a key: by created time, then
/// by hash, both descending (the order S3 lists versions in, and the order
/// in which reads pick the current version).
fn version_index_key(object: &[u8], created: u64, hash: &Hash) -> Vec<u8> // PA
{
    let mut out = Vec::with_capacity(object.len() + VERSION_SUFFIX);
    out.extend_from_slice(object);
    out.extend_from_slice(&(u64::MAX - created).to_be_bytes());
    out.extend(hash.as_bytes().iter().map(|byte| !byte));
    out
}

/// The version hash at the end of a `versions` entry.
fn version_hash_of(entry: &[u8]) -> StoreResult<Hash> // PA
{
    let bad = || StoreError::BadIndexEntry { index: "versions", len: entry.len() };
    let tail = entry.get(entry.len().checked_sub(32).ok_or_else(bad)?..).ok_or_else(bad)?;
    let bytes: Vec<u8> = tail.iter().map(|byte| !byte).collect();
    Hash::from_slice(&bytes).ok_or_else(bad)
}

fn decode_entry(index: &'static str, bytes: &[u8]) -> StoreResult<VersionEntry> // PA
{
    codec::decode_body(codec::RecordKind::Blob, bytes).map_err(|source| StoreError::BadIndexValue { index, source })
}

fn encode_entry(entry: &VersionEntry) -> Vec<u8> // PA
{
    match postcard::to_stdvec(entry) {
        Ok(bytes) => bytes,
        Err(error) => unreachable!("postcard cannot encode a version entry: {error}"),
    }
}

/// Where a version listing starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionStart {
    Keys(ListStart),
    /// After this version of this key: its place in the listing order.
    AfterVersion {
        key: String,
        created: u64,
        version: Hash,
    },
}

/// A forgotten blob's tombstone: the partition it was in (when known), when
/// it was forgotten, and its parents, to link children that arrive later.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tombstone {
    partition: Option<u8>,
    forgotten_at: u64,
    parents: Vec<Hash>,
}

/// Bytes before the parents in a tombstone: whether the partition is known,
/// the partition, the time.
const TOMBSTONE_HEAD: usize = 10;

impl Tombstone {
    fn encode(&self) -> Vec<u8> // PA
    {
        let mut out = Vec::with_capacity(TOMBSTONE_HEAD + 32 * self.parents.len());
        out.push(u8::from(self.partition.is_some()));
        out.push(self.partition.unwrap_or(0));
        out.extend_from_slice(&self.forgotten_at.to_be_bytes());
        self.parents.iter().for_each(|parent| out.extend_from_slice(parent.as_bytes()));
        out
    }

    /// A tombstone as stored. Older builds stored the parents alone (a
    /// multiple of 32 bytes, which the current layout never is).
    fn decode(bytes: &[u8]) -> StoreResult<Self> // PA
    {
        let bad = || StoreError::BadIndexEntry { index: "tombstones", len: bytes.len() };
        let parents = |body: &[u8]| -> StoreResult<Vec<Hash>> {
            body.chunks(32).map(|p| Hash::from_slice(p).ok_or_else(bad)).collect()
        };
        if bytes.len().is_multiple_of(32) {
            return Ok(Tombstone { partition: None, forgotten_at: 0, parents: parents(bytes)? });
        }
        if bytes.len() < TOMBSTONE_HEAD || !(bytes.len() - TOMBSTONE_HEAD).is_multiple_of(32) {
            return Err(bad());
        }
        let partition = (bytes[0] == 1).then_some(bytes[1]);
        let forgotten_at = u64::from_be_bytes(bytes[2..TOMBSTONE_HEAD].try_into().map_err(|_| bad())?);
        Ok(Tombstone { partition, forgotten_at, parents: parents(&bytes[TOMBSTONE_HEAD..])? })
    }
}

/// A freed sealing's mark: when it was freed here, and, while its free is
/// not settled, the attempt (the free's `claimed_before`) it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FreedMark {
    freed_at: u64,
    attempt: Option<u64>,
}

impl FreedMark {
    /// freed_at ‖ 0, or freed_at ‖ 1 ‖ attempt while pending.
    fn encode(&self) -> Vec<u8> // PA
    {
        let mut out = self.freed_at.to_be_bytes().to_vec();
        match self.attempt {
            None => out.push(0),
            Some(attempt) => {
                out.push(1);
                out.extend_from_slice(&attempt.to_be_bytes());
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> StoreResult<Self> // PA
    {
        let bad = || StoreError::BadIndexEntry { index: "freed_chunks", len: bytes.len() };
        let number = |range: std::ops::Range<usize>| -> StoreResult<u64> {
            Ok(u64::from_be_bytes(bytes.get(range).ok_or_else(bad)?.try_into().map_err(|_| bad())?))
        };
        let freed_at = number(0..8)?;
        match (bytes.get(8), bytes.len()) {
            (Some(0), 9) => Ok(FreedMark { freed_at, attempt: None }),
            (Some(1), 17) => Ok(FreedMark { freed_at, attempt: Some(number(9..17)?) }),
            _ => Err(bad()),
        }
    }
}

/// Digests of sync trees, kept until an entry under them changes.
#[derive(Default)]
struct SyncCache {
    leaves: HashMap<(u8, u8), Hash>,
    roots: HashMap<u8, Hash>,
}

/// Leaves of a partition left to compute above which one pass over the
/// whole partition is cheaper than a scan per leaf.
const WHOLE_PARTITION_SCAN: usize = 16;

/// `partitions_unsynced` before the first anti-entropy round.
const NO_ROUND_YET: usize = usize::MAX;

/// A sync index key: partition ‖ leaf ‖ item id.
fn sync_key(partition: u8, id: &Hash) -> [u8; 34] // PA
{
    let mut out = [0u8; 34];
    out[0] = partition;
    out[1] = sync::leaf_of(id);
    out[2..].copy_from_slice(id.as_bytes());
    out
}

/// A sync index value: entry kind ‖ digest ‖ locator (a row's table ‖ key).
fn sync_value(kind: EntryKind, digest: &Hash, locator: &[u8]) -> Vec<u8> // PA
{
    [&[kind as u8], digest.as_bytes().as_slice(), locator].concat()
}

/// A sync index value read back: kind, digest, locator.
fn parse_sync_value(value: &[u8]) -> StoreResult<(EntryKind, Hash, &[u8])> // PA
{
    let bad = || StoreError::BadIndexEntry { index: "sync_index", len: value.len() };
    let kind = EntryKind::from_byte(*value.first().ok_or_else(bad)?).ok_or_else(bad)?;
    let digest = Hash::from_slice(value.get(1..33).ok_or_else(bad)?).ok_or_else(bad)?;
    Ok((kind, digest, &value[33..]))
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

/// A manifest claimed for a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimed {
    pub chunk: Chunk,
    /// It came from another node and no write has found its slices held
    /// since: reuse it only once they are.
    pub unverified: bool,
}

/// What a replica answers a claim: its manifest, claimed, and the sealings
/// of the chunk it holds tombstones of (published or pending), which no
/// write may reuse whichever replica still holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimAnswer {
    pub held: Option<Claimed>,
    pub freed: Vec<Hash>,
}

/// What freeing a chunk's manifest did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Freed {
    /// Dropped; the slices it lists are garbage.
    Freed(Chunk),
    /// Claimed since the sweep began: kept.
    Claimed,
    /// Not held here; the sealing's pending tombstone is kept all the same.
    Absent,
    /// Another sealing of the chunk is held here: kept.
    OtherSealing,
}

/// The first index entry a listing from `start` may return.
fn list_lower_bound(bucket: &str, scope: &[u8], start: &ListStart) -> Vec<u8> // PA
{
    let lower = match start {
        ListStart::Beginning => scope.to_vec(),
        // Past every `key‖00 01‖…` entry, before `key‖00 FF` (key + "\0").
        ListStart::After(key) => [object_prefix(bucket, key).as_slice(), &[0, 2]].concat(),
        // No escaped UTF-8 byte is 0xFF.
        ListStart::AfterPrefix(group) => [object_prefix(bucket, group).as_slice(), &[0xFF]].concat(),
    };
    lower.max(scope.to_vec())
}

impl LocalStore {
    pub fn open(dir: &Path, durability: Durability) -> StoreResult<Self> // PA
    {
        let keyspace = Config::new(dir.join("meta")).open()?;
        let plain = PartitionCreateOptions::default;
        let slices = SliceLog::open(&dir.join("slices"), keyspace.open_partition("slice_locations", plain())?)?;
        let store = LocalStore {
            slices,
            chunks: keyspace.open_partition("chunks", plain())?,
            blobs: keyspace.open_partition("blobs", plain())?,
            heads: keyspace.open_partition("heads", plain())?,
            versions: keyspace.open_partition("versions", plain())?,
            nulls: keyspace.open_partition("nulls", plain())?,
            tombstones: keyspace.open_partition("tombstones", plain())?,
            children: keyspace.open_partition("children", plain())?,
            chunk_refs: keyspace.open_partition("chunk_refs", plain())?,
            chunk_claims: keyspace.open_partition("chunk_claims", plain())?,
            row_refs: keyspace.open_partition("row_refs", plain())?,
            freed_chunks: keyspace.open_partition("freed_chunks", plain())?,
            unverified_chunks: keyspace.open_partition("unverified_chunks", plain())?,
            row_chunks: keyspace.open_partition("row_chunks", plain())?,
            slice_owners: keyspace.open_partition("slice_owners", plain())?,
            chunk_lists: keyspace.open_partition("chunk_lists", plain())?,
            list_refs: keyspace.open_partition("list_refs", plain())?,
            buckets: keyspace.open_partition("buckets", plain())?,
            rows: keyspace.open_partition("rows", plain())?,
            sync_index: keyspace.open_partition("sync_index", plain())?,
            cluster: keyspace.open_partition("cluster", plain())?,
            damaged_slices: keyspace.open_partition("damaged_slices", plain())?,
            hints: HintLog::open(keyspace.clone(), plain())?,
            layout: std::sync::RwLock::new(Arc::new(Layout::default())),
            layout_lock: Mutex::new(()),
            sync_cache: Mutex::new(SyncCache::default()),
            partitions_unsynced: AtomicUsize::new(NO_ROUND_YET),
            move_backlog: Mutex::new(None),
            chunks_degraded: Mutex::new(None),
            passes: Mutex::new(Passes::default()),
            scrub_wanted: tokio::sync::Notify::new(),
            keyspace,
            durability,
            clock: Arc::new(SystemClock),
            apply_lock: Mutex::new(()),
            claim_lock: Mutex::new(()),
            writes: AtomicU64::new(0),
            synced: Mutex::new(0),
        };
        // Before the version indexes: retiring null versions there writes
        // sync index entries, and an empty index is what marks an old store.
        store.index_unsynced_blobs()?;
        store.rebuild_version_indexes()?;
        store.migrate_unversioned_rows()?;
        store.index_manifests()?;
        store.load_layout()?;
        Ok(store)
    }

    /// The metadata writes other nodes missed, kept here for them.
    pub fn hints(&self) -> &HintLog // A
    {
        &self.hints
    }

    /// The same store on another clock (a test's or a simulation's).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self // A
    {
        LocalStore { clock, ..self }
    }

    /// A store written before the `versions` and `nulls` indexes existed has
    /// blobs but no entries there: derive them from the blobs once, then
    /// apply the null-version rule to every key.
    fn rebuild_version_indexes(&self) -> StoreResult<()> // PA
    {
        if !self.versions.is_empty()? || self.blobs.is_empty()? {
            return Ok(());
        }
        let mut objects = std::collections::BTreeSet::new();
        for entry in self.blobs.iter() {
            let (hash, bytes) = entry?;
            let hash = trailing_hash("blobs", &hash)?;
            let blob = Blob::decode_verified(&hash, &bytes)?;
            let object = object_index_key(&blob.bucket, &blob.key);
            let entry = encode_entry(&VersionEntry::of(&blob));
            self.versions.insert(version_index_key(&object, blob.created, &hash), entry)?;
            if blob.null_version {
                self.nulls.insert([object.as_slice(), hash.as_bytes()].concat(), blob.created.to_be_bytes())?;
            }
            objects.insert(object);
        }
        let _guard = self.apply_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for object in &objects {
            self.retire_null_versions(object)?;
        }
        tracing::info!(objects = objects.len(), "version indexes rebuilt from the stored blobs");
        self.sync()
    }

    /// Make every write done before this call durable (per `Durability`).
    /// Concurrent callers share one fsync: whoever syncs covers all writes
    /// counted so far, and callers already covered return at once.
    fn make_durable(&self) -> StoreResult<()> // PA
    {
        let mine = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.durability == Durability::Flush {
            return Ok(self.keyspace.persist(PersistMode::Buffer)?);
        }
        let mut synced = self.synced.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *synced >= mine {
            return Ok(());
        }
        let target = self.writes.load(Ordering::SeqCst);
        self.slices.sync()?;
        self.keyspace.persist(PersistMode::SyncData)?;
        *synced = target;
        Ok(())
    }

    /// Store a slice of `chunk`; durable when this returns. The owner is
    /// recorded so that a slice whose manifest never got written (a write
    /// cut short) can be found and collected.
    pub fn put_slice(&self, slice: &SealedSlice, chunk: &Hash) -> StoreResult<()> // PA
    {
        self.store_slice(slice, chunk)?;
        self.make_durable()
    }

    /// A slice and its owner, not yet made durable.
    fn store_slice(&self, slice: &SealedSlice, chunk: &Hash) -> StoreResult<()> // PA
    {
        self.slices.put(slice)?;
        let owner = [chunk.as_bytes().as_slice(), &self.clock.now_nanos().to_be_bytes()].concat();
        Ok(self.slice_owners.insert(slice.hash.as_bytes(), owner)?)
    }

    /// Store a slice another node's write could not put at its home, with
    /// a hint for `home` so this node's hand-off pass takes it there; both
    /// are durable when this returns. The slice goes first: a hand-off
    /// pass that reads the hint finds the slice (it drops a hint whose
    /// slice is missing), and a slice that fails to store leaves no hint.
    /// A hint that cannot be kept (the log full) leaves the slice to the
    /// move pass or repair, which is what a crash between the two costs.
    pub fn put_handed_off_slice(&self, slice: &SealedSlice, held: HeldSlice, home: NodeId) -> StoreResult<()> // PA
    {
        if held.slices.get(held.index as usize) != Some(&slice.hash) {
            return Err(StoreError::HandedOffSlice { slice: slice.hash, index: held.index, count: held.slices.len() });
        }
        let chunk = held.chunk;
        self.store_slice(slice, &chunk)?;
        match self.hints.add(home, &Hinted::Held(held)) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(%chunk, slice = %slice.hash, %home, "hint log full: a handed-off slice waits"),
            Err(error) => tracing::warn!(%chunk, slice = %slice.hash, %home, %error, "a handed-off slice's hint lost"),
        }
        self.make_durable()
    }

    /// Up to `max` slices held here, after `after`, stored before
    /// `stored_before`, each with the chunk it belongs to.
    pub fn slices_stored_before(&self, stored_before: u64, after: Option<Hash>, max: usize) -> SliceOwners // PA
    {
        let lower = after.map_or_else(Vec::new, |hash| [hash.as_bytes().as_slice(), &[0]].concat());
        let mut out = Vec::new();
        for entry in self.slice_owners.range(lower..) {
            let (slice, owner) = entry?;
            let bad = || StoreError::BadIndexEntry { index: "slice_owners", len: owner.len() };
            let chunk = Hash::from_slice(owner.get(..32).ok_or_else(bad)?).ok_or_else(bad)?;
            let stored = u64::from_be_bytes(owner.get(32..40).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            if stored < stored_before {
                out.push((trailing_hash("slice_owners", &slice)?, chunk));
                if out.len() == max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Drop a slice and free its space (garbage collection, repair).
    pub fn remove_slice(&self, hash: &Hash) -> StoreResult<()> // PA
    {
        self.slices.remove(hash)?;
        Ok(self.slice_owners.remove(hash.as_bytes())?)
    }

    /// Read a slice back and check that its bytes still hash to the name
    /// it is stored under (scrub). A read that fails counts as damage: the
    /// bytes cannot be served either.
    pub fn check_slice(&self, hash: &Hash) -> SliceCheck // PA
    {
        match self.slices.get(hash) {
            Ok(None) => SliceCheck::Missing,
            Ok(Some(slice)) => {
                let actual = Hash::of_parts(&[&slice.nonce, &slice.payload]);
                let len = (SealedSlice::HEADER_LEN + slice.payload.len()) as u64;
                match actual == *hash {
                    true => SliceCheck::Sound { len },
                    false => SliceCheck::Damaged { reason: format!("its bytes hash to {actual}") },
                }
            }
            Err(error) => SliceCheck::Damaged { reason: error.to_string() },
        }
    }

    /// Set a damaged slice aside: it counts as not held from now on (so
    /// repair stores a sound copy), and its bytes stay where they are,
    /// listed with `reason` among the damaged slices.
    pub fn set_aside_slice(&self, hash: &Hash, reason: &str) -> StoreResult<()> // PA
    {
        let Some(location) = self.slices.set_aside(hash)? else { return Ok(()) };
        self.slice_owners.remove(hash.as_bytes())?;
        self.damaged_slices.insert(hash.as_bytes(), [location.as_slice(), reason.as_bytes()].concat())?;
        self.make_durable()
    }

    /// The last scrub that finished here, if any.
    pub fn last_scrub(&self) -> StoreResult<Option<ScrubSummary>> // PA
    {
        let Some(bytes) = self.cluster.get(SCRUB_KEY)? else { return Ok(None) };
        let field =
            |i: usize| bytes.get(i * 8..i * 8 + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
        match (bytes.len(), field(0), field(1), field(2)) {
            (24, Some(finished_ms), Some(slices_checked), Some(slices_damaged)) => {
                Ok(Some(ScrubSummary { finished_ms, slices_checked, slices_damaged }))
            }
            _ => Err(StoreError::BadIndexEntry { index: "scrub record", len: bytes.len() }),
        }
    }

    /// Record a finished scrub; it is no longer under way.
    pub fn record_scrub(&self, summary: &ScrubSummary) -> StoreResult<()> // PA
    {
        let record =
            [summary.finished_ms, summary.slices_checked, summary.slices_damaged].map(u64::to_be_bytes).concat();
        self.cluster.remove(SCRUB_PROGRESS_KEY)?;
        self.cluster.insert(SCRUB_KEY, record)?;
        Ok(self.keyspace.persist(PersistMode::SyncData)?)
    }

    /// How far the scrub under way here had come, if one is (a node that
    /// stopped during a scrub takes it up again where it was).
    pub fn scrub_progress(&self) -> StoreResult<Option<ScrubProgress>> // PA
    {
        let Some(bytes) = self.cluster.get(SCRUB_PROGRESS_KEY)? else { return Ok(None) };
        let reached = bytes.get(..32).and_then(Hash::from_slice);
        let count = |at: usize| bytes.get(at..at + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
        match (bytes.len(), reached, count(32), count(40)) {
            (48, Some(reached), Some(slices_checked), Some(slices_damaged)) => {
                Ok(Some(ScrubProgress { reached, slices_checked, slices_damaged }))
            }
            _ => Err(StoreError::BadIndexEntry { index: "scrub progress", len: bytes.len() }),
        }
    }

    /// Note how far the scrub under way has come. Not flushed: losing the
    /// last notes only checks a few pages again.
    pub fn record_scrub_progress(&self, progress: &ScrubProgress) -> StoreResult<()> // PA
    {
        let counts = [progress.slices_checked, progress.slices_damaged].map(u64::to_be_bytes).concat();
        Ok(self.cluster.insert(SCRUB_PROGRESS_KEY, [progress.reached.as_bytes().as_slice(), &counts].concat())?)
    }

    pub fn get_slice(&self, hash: &Hash) -> StoreResult<Option<SealedSlice>> // PA
    {
        self.slices.get(hash)
    }

    /// A slice's ciphertext into `ciphertext` (exactly its length), and its
    /// nonce and tag; `None` when not stored or not that long.
    pub fn read_slice_parts(&self, hash: &Hash, ciphertext: &mut [MaybeUninit<u8>]) -> StoreResult<Option<SliceSeal>> // PA
    {
        self.slices.read_parts(hash, ciphertext)
    }

    /// Store a chunk's manifest, replacing one of another sealing: a writer
    /// sends a manifest only after storing its slices, so the newest is
    /// always one whose slices exist, while one held from before may list
    /// slices that garbage collection removed while this node was away. A
    /// sealing garbage collection freed is refused: its slices are gone.
    pub fn put_chunk(&self, chunk: &Chunk) -> StoreResult<()> // PA
    {
        {
            let _guard = self.claim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let sealing = sync::sealing_digest(chunk);
            if self.is_freed(&chunk.id, &sealing)? {
                return Err(StoreError::FreedSealing { chunk: chunk.id });
            }
            let mut batch = self.keyspace.batch();
            let held = self.get_chunk(&chunk.id).ok().flatten();
            if held.is_none_or(|held| held.slices != chunk.slices) {
                self.insert_chunk(&mut batch, chunk);
            }
            // Sent by its writer, or by a writer that found its slices held.
            batch.remove(&self.unverified_chunks, chunk.id.as_bytes());
            batch.insert(&self.chunk_claims, chunk.id.as_bytes(), self.clock.now_nanos().to_be_bytes());
            batch.commit()?;
            self.leaf_changed(placement::partition_of_hash(&chunk.id), &chunk.id);
        }
        self.make_durable()
    }

    /// Store a manifest moved from another node unless one is held, or its
    /// sealing was freed: a manifest held here may be newer than the one
    /// offered, whose slices may be gone. Returns whether it was stored.
    pub fn offer_chunk(&self, chunk: &Chunk) -> StoreResult<bool> // PA
    {
        {
            let _guard = self.claim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let sealing = sync::sealing_digest(chunk);
            if self.get_chunk(&chunk.id)?.is_some() || self.is_freed(&chunk.id, &sealing)? {
                return Ok(false);
            }
            let mut batch = self.keyspace.batch();
            self.insert_chunk(&mut batch, chunk);
            batch.insert(&self.unverified_chunks, chunk.id.as_bytes(), []);
            batch.insert(&self.chunk_claims, chunk.id.as_bytes(), self.clock.now_nanos().to_be_bytes());
            batch.commit()?;
            self.leaf_changed(placement::partition_of_hash(&chunk.id), &chunk.id);
        }
        self.make_durable()?;
        Ok(true)
    }

    /// A manifest and its sync index entry, into `batch`.
    fn insert_chunk(&self, batch: &mut fjall::Batch, chunk: &Chunk) // PA
    {
        let partition = placement::partition_of_hash(&chunk.id);
        let value = sync_value(EntryKind::Chunk, &sync::manifest_digest(&chunk.id), &[]);
        batch.insert(&self.chunks, chunk.id.as_bytes(), codec::encode(chunk));
        batch.insert(&self.sync_index, sync_key(partition, &chunk.id), value);
    }

    /// A manifest, its claim and its sync index entry out, into `batch`.
    fn remove_chunk(&self, batch: &mut fjall::Batch, id: &Hash) // PA
    {
        batch.remove(&self.chunks, id.as_bytes());
        batch.remove(&self.chunk_claims, id.as_bytes());
        batch.remove(&self.unverified_chunks, id.as_bytes());
        batch.remove(&self.sync_index, sync_key(placement::partition_of_hash(id), id));
    }

    /// A freed sealing's published tombstone and its sync index entry, into
    /// `batch`.
    fn insert_freed(&self, batch: &mut fjall::Batch, chunk: &Hash, sealing: &Hash, freed_at: u64) // PA
    {
        let locator = pair_key(chunk, sealing);
        let id = sync::freed_chunk_id(chunk, sealing);
        batch.insert(&self.freed_chunks, locator, FreedMark { freed_at, attempt: None }.encode());
        let value = sync_value(EntryKind::FreedChunk, &id, &locator);
        batch.insert(&self.sync_index, sync_key(placement::partition_of_hash(chunk), &id), value);
    }

    /// Whether this sealing of a chunk was freed, or is being freed.
    fn is_freed(&self, chunk: &Hash, sealing: &Hash) -> StoreResult<bool> // PA
    {
        Ok(self.freed_chunks.contains_key(pair_key(chunk, sealing))?)
    }

    /// The mark of a freed sealing (`chunk ‖ sealing`), if any.
    fn freed_mark(&self, locator: &[u8]) -> StoreResult<Option<FreedMark>> // PA
    {
        self.freed_chunks.get(locator)?.map(|bytes| FreedMark::decode(&bytes)).transpose()
    }

    /// Whether a manifest of chunk `id` is held here.
    pub fn holds_chunk(&self, id: &Hash) -> StoreResult<bool> // PA
    {
        Ok(self.chunks.contains_key(id.as_bytes())?)
    }

    /// Whether each of these slices is held here.
    pub fn holds_slices(&self, hashes: &[Hash]) -> StoreResult<Vec<bool>> // PA
    {
        hashes.iter().map(|hash| Ok(self.slice_owners.contains_key(hash.as_bytes())?)).collect()
    }

    /// A chunk's manifest, claimed for a write that will reference it: the
    /// claim keeps garbage collection away from it for the grace period.
    pub fn claim_chunk(&self, id: &Hash) -> StoreResult<ClaimAnswer> // PA
    {
        let _guard = self.claim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let freed = self
            .freed_chunks
            .prefix(id.as_bytes())
            .map(|entry| trailing_hash("freed_chunks", &entry?.0))
            .collect::<StoreResult<Vec<Hash>>>()?;
        let Some(chunk) = self.get_chunk(id)? else { return Ok(ClaimAnswer { held: None, freed }) };
        self.chunk_claims.insert(id.as_bytes(), self.clock.now_nanos().to_be_bytes())?;
        let unverified = self.unverified_chunks.contains_key(id.as_bytes())?;
        Ok(ClaimAnswer { held: Some(Claimed { chunk, unverified }), freed })
    }

    /// Up to `max` chunks held here, after `after`, last claimed before
    /// `claimed_before` (chunks stored before claims were kept count as
    /// never claimed).
    pub fn unclaimed_chunks(&self, claimed_before: u64, after: Option<Hash>, max: usize) -> StoreResult<Vec<Hash>> // PA
    {
        let lower = after.map_or_else(Vec::new, |hash| [hash.as_bytes().as_slice(), &[0]].concat());
        let mut out = Vec::new();
        for entry in self.chunks.range(lower..) {
            let (id, _) = entry?;
            let id = trailing_hash("chunks", &id)?;
            if self.claimed_at(&id)? < claimed_before {
                out.push(id);
                if out.len() == max {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn claimed_at(&self, id: &Hash) -> StoreResult<u64> // PA
    {
        let Some(bytes) = self.chunk_claims.get(id.as_bytes())? else { return Ok(0) };
        let bytes = <[u8; 8]>::try_from(&bytes[..])
            .map_err(|_| StoreError::BadIndexEntry { index: "chunk_claims", len: bytes.len() })?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// Which of these chunks a blob or a table row held here references.
    pub fn referenced(&self, ids: &[Hash]) -> StoreResult<Vec<Hash>> // PA
    {
        let mut out = Vec::new();
        for id in ids {
            let by_blob = self.chunk_refs.prefix(id.as_bytes()).next().transpose()?.is_some();
            if by_blob || self.row_refs.prefix(id.as_bytes()).next().transpose()?.is_some() {
                out.push(*id);
            }
        }
        Ok(out)
    }

    /// The first step of freeing sealing `sealing` of a chunk: drop its
    /// manifest unless it was claimed at or after `claimed_before`, and,
    /// held or not, keep a pending tombstone of the sealing in the same
    /// batch, which refuses the manifest here but is not synced: the free
    /// may yet fail on other replicas. `settle_free` then publishes the
    /// tombstone, or withdraws it.
    pub fn free_chunk(&self, id: &Hash, claimed_before: u64, sealing: &Hash) -> StoreResult<Freed> // PA
    {
        let freed = {
            let _guard = self.claim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let held = self.get_chunk(id)?;
            let held_sealing = held.as_ref().map(sync::sealing_digest);
            if held_sealing.is_some_and(|held| held != *sealing) {
                return Ok(Freed::OtherSealing);
            }
            if held.is_some() && self.claimed_at(id)? >= claimed_before {
                return Ok(Freed::Claimed);
            }
            let mut batch = self.keyspace.batch();
            if held.is_some() {
                self.remove_chunk(&mut batch, id);
            }
            let locator = pair_key(id, sealing);
            // A published tombstone stays; a pending one of an earlier
            // attempt whose settling never came gives way to this one.
            if self.freed_mark(&locator)?.is_none_or(|mark| mark.attempt.is_some()) {
                let pending = FreedMark { freed_at: self.clock.now_nanos(), attempt: Some(claimed_before) };
                batch.insert(&self.freed_chunks, locator, pending.encode());
            }
            batch.commit()?;
            self.leaf_changed(placement::partition_of_hash(id), id);
            match held {
                Some(chunk) => Freed::Freed(chunk),
                None => Freed::Absent,
            }
        };
        self.make_durable()?;
        Ok(freed)
    }

    /// The second step of a free: `freed` at `freed_at` when the free
    /// reached its quorum with no replica refusing, and the sealing's
    /// tombstone is published (`publish_freed`); otherwise the pending
    /// tombstone of this attempt (`claimed_before`) is withdrawn, so the
    /// manifest comes back from the replicas that kept it.
    pub fn settle_free(&self, id: &Hash, sealing: &Hash, claimed_before: u64, freed: Option<u64>) -> StoreResult<()> // PA
    {
        if let Some(freed_at) = freed {
            return self.publish_freed(id, sealing, freed_at);
        }
        {
            let _guard = self.claim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let locator = pair_key(id, sealing);
            if self.freed_mark(&locator)?.is_none_or(|mark| mark.attempt != Some(claimed_before)) {
                return Ok(());
            }
            self.freed_chunks.remove(locator)?;
        }
        self.make_durable()
    }

    /// Drop a manifest handed to the replicas that now hold it (the move
    /// pass): no tombstone, as the chunk lives on.
    pub fn drop_moved_chunk(&self, id: &Hash) -> StoreResult<()> // PA
    {
        {
            let _guard = self.claim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut batch = self.keyspace.batch();
            self.remove_chunk(&mut batch, id);
            batch.commit()?;
            self.leaf_changed(placement::partition_of_hash(id), id);
        }
        self.make_durable()
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
    /// hash. Storing a blob twice, or one that was forgotten, changes nothing.
    pub fn put_blob(&self, bytes: &[u8]) -> StoreResult<Hash> // PA
    {
        let hash = Hash::of(bytes);
        let blob = Blob::decode_verified(&hash, bytes)?;
        {
            let _guard = self.apply_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if self.blobs.contains_key(hash.as_bytes())? || self.tombstones.contains_key(hash.as_bytes())? {
                return Ok(hash);
            }
            let object = object_index_key(&blob.bucket, &blob.key);
            let entry = encode_entry(&VersionEntry::of(&blob));
            let mut batch = self.keyspace.batch();
            batch.insert(&self.blobs, hash.as_bytes(), bytes);
            batch.insert(&self.versions, version_index_key(&object, blob.created, &hash), entry.as_slice());
            if blob.null_version {
                batch.insert(&self.nulls, [object.as_slice(), hash.as_bytes()].concat(), blob.created.to_be_bytes());
            }
            for parent in self.effective_parents(&blob.parents)? {
                batch.insert(&self.children, pair_key(&parent, &hash), []);
                batch.remove(&self.heads, [object.as_slice(), parent.as_bytes()].concat());
            }
            // A child may have arrived first (replicas see blobs in any order).
            if self.children.prefix(hash.as_bytes()).next().is_none() {
                batch.insert(&self.heads, [object.as_slice(), hash.as_bytes()].concat(), entry.as_slice());
            }
            for chunk in self.blob_chunk_ids(&hash, &blob, true)? {
                batch.insert(&self.chunk_refs, pair_key(&chunk, &hash), []);
            }
            for list in &blob.chunk_lists {
                batch.insert(&self.list_refs, pair_key(&list.hash, &hash), []);
            }
            let partition = crate::placement::partition_of(&blob.bucket, &blob.key);
            let digest = sync::blob_digest(&hash);
            batch.insert(&self.sync_index, sync_key(partition, &hash), sync_value(EntryKind::Blob, &digest, &[]));
            batch.commit()?;
            self.leaf_changed(partition, &hash);
            self.retire_null_versions(&object)?;
        }
        self.make_durable()?;
        Ok(hash)
    }

    /// A key keeps one null version, as S3 does: once a newer null version
    /// exists, an older one that is no longer a head is forgotten. Heads are
    /// kept, so concurrent null writes stay visible as siblings until a
    /// write that names them both replaces them. The rule depends only on
    /// the set of blobs held, so replicas converge whatever the order.
    fn retire_null_versions(&self, object: &[u8]) -> StoreResult<()> // PA
    {
        let mut nulls = Vec::new();
        for entry in self.nulls.prefix(object) {
            let (index_key, created) = entry?;
            let created = <[u8; 8]>::try_from(&created[..])
                .map_err(|_| StoreError::BadIndexEntry { index: "nulls", len: created.len() })?;
            nulls.push((u64::from_be_bytes(created), trailing_hash("nulls", &index_key)?));
        }
        let Some(newest) = nulls.iter().max().copied() else { return Ok(()) };
        for (created, hash) in nulls {
            if (created, hash) == newest || self.heads.contains_key([object, hash.as_bytes()].concat())? {
                continue;
            }
            let forgotten_at = self.clock.now_nanos();
            self.forget_locked(&hash, Tombstone { partition: None, forgotten_at, parents: Vec::new() })?;
        }
        Ok(())
    }

    /// The nearest live ancestors among `parents`: a forgotten parent is
    /// replaced by the parents it had, as its tombstone recorded them.
    fn effective_parents(&self, parents: &[Hash]) -> StoreResult<Vec<Hash>> // PA
    {
        let mut out = Vec::new();
        let mut pending: Vec<Hash> = parents.to_vec();
        let mut seen = std::collections::HashSet::new();
        while let Some(parent) = pending.pop() {
            if !seen.insert(parent) {
                continue;
            }
            match self.tombstones.get(parent.as_bytes())? {
                Some(recorded) => pending.extend(Tombstone::decode(&recorded)?.parents),
                None => out.push(parent),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Forget a blob for good (S3's delete of a specific version, or a null
    /// version replaced): it leaves every index, its children are linked to
    /// its parents so the DAG keeps its shape, a parent left without
    /// children becomes a head again, and a tombstone keeps a late replica
    /// copy from coming back. Its chunks are freed by garbage collection once
    /// nothing references them. Returns the blob, `None` if it was not held.
    pub fn forget_blob(&self, hash: &Hash, partition: u8) -> StoreResult<Option<Blob>> // PA
    {
        let forgotten = {
            let _guard = self.apply_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let forgotten_at = self.clock.now_nanos();
            self.forget_locked(hash, Tombstone { partition: Some(partition), forgotten_at, parents: Vec::new() })?
        };
        self.make_durable()?;
        Ok(forgotten)
    }

    /// Forget a blob, or keep it out if it is not here yet: `unheld` is the
    /// tombstone to keep then (its parents as the forgetting node knew them).
    fn forget_locked(&self, hash: &Hash, unheld: Tombstone) -> StoreResult<Option<Blob>> // PA
    {
        let Some(blob) = self.get_blob(hash)? else {
            if !self.tombstones.contains_key(hash.as_bytes())? {
                // Forgetting before the blob arrives must still keep it out.
                let mut batch = self.keyspace.batch();
                batch.insert(&self.tombstones, hash.as_bytes(), unheld.encode());
                if let Some(partition) = unheld.partition {
                    let digest = sync::forgotten_digest(hash);
                    batch.insert(
                        &self.sync_index,
                        sync_key(partition, hash),
                        sync_value(EntryKind::Forgotten, &digest, &[]),
                    );
                }
                batch.commit()?;
                if let Some(partition) = unheld.partition {
                    self.leaf_changed(partition, hash);
                }
            }
            return Ok(None);
        };
        let object = object_index_key(&blob.bucket, &blob.key);
        let parents = self.effective_parents(&blob.parents)?;
        let children = self.children(hash)?;
        let mut batch = self.keyspace.batch();
        batch.remove(&self.blobs, hash.as_bytes());
        batch.remove(&self.versions, version_index_key(&object, blob.created, hash));
        batch.remove(&self.nulls, [object.as_slice(), hash.as_bytes()].concat());
        batch.remove(&self.heads, [object.as_slice(), hash.as_bytes()].concat());
        for child in &children {
            batch.remove(&self.children, pair_key(hash, child));
        }
        for parent in &parents {
            batch.remove(&self.children, pair_key(parent, hash));
            for child in &children {
                batch.insert(&self.children, pair_key(parent, child), []);
            }
        }
        for chunk in self.blob_chunk_ids(hash, &blob, false)? {
            batch.remove(&self.chunk_refs, pair_key(&chunk, hash));
        }
        for list in &blob.chunk_lists {
            batch.remove(&self.list_refs, pair_key(&list.hash, hash));
        }
        let partition = crate::placement::partition_of(&blob.bucket, &blob.key);
        let tombstone =
            Tombstone { partition: Some(partition), forgotten_at: unheld.forgotten_at, parents: parents.clone() };
        batch.insert(&self.tombstones, hash.as_bytes(), tombstone.encode());
        let digest = sync::forgotten_digest(hash);
        batch.insert(&self.sync_index, sync_key(partition, hash), sync_value(EntryKind::Forgotten, &digest, &[]));
        batch.commit()?;
        self.leaf_changed(partition, hash);
        for list in &blob.chunk_lists {
            if self.list_refs.prefix(list.hash.as_bytes()).next().is_none() {
                self.chunk_lists.remove(list.hash.as_bytes())?;
            }
        }
        for parent in &parents {
            if !children.is_empty() || self.children.prefix(parent.as_bytes()).next().is_some() {
                continue;
            }
            if let Some(parent_blob) = self.get_blob(parent)? {
                let entry = encode_entry(&VersionEntry::of(&parent_blob));
                self.heads.insert([object.as_slice(), parent.as_bytes()].concat(), entry)?;
            }
        }
        Ok(Some(blob))
    }

    /// Every distinct chunk a blob references, inline or through its chunk
    /// lists. A list not held here is an error when `strict`, and skipped
    /// otherwise (forgetting must not fail on it).
    fn blob_chunk_ids(&self, hash: &Hash, blob: &Blob, strict: bool) -> StoreResult<BTreeSet<Hash>> // PA
    {
        let mut ids: BTreeSet<Hash> = blob.chunks.iter().map(|c| c.id).collect();
        for list in &blob.chunk_lists {
            match self.get_chunk_list(&list.hash)? {
                Some(held) => ids.extend(held.chunks.iter().map(|c| c.id)),
                None if strict => return Err(StoreError::MissingChunkList { list: list.hash, blob: *hash }),
                None => tracing::warn!(list = %list.hash, blob = %hash, "chunk list missing; its references stay"),
            }
        }
        Ok(ids)
    }

    /// Store an encoded chunk list (before the blob that uses it).
    pub fn put_chunk_list(&self, bytes: &[u8]) -> StoreResult<Hash> // PA
    {
        let hash = Hash::of(bytes);
        ChunkList::decode_verified(&hash, bytes)?;
        if !self.chunk_lists.contains_key(hash.as_bytes())? {
            self.chunk_lists.insert(hash.as_bytes(), bytes)?;
        }
        self.make_durable()?;
        Ok(hash)
    }

    pub fn get_chunk_list_bytes(&self, hash: &Hash) -> StoreResult<Option<Vec<u8>>> // PA
    {
        Ok(self.chunk_lists.get(hash.as_bytes())?.map(|bytes| bytes.to_vec()))
    }

    fn get_chunk_list(&self, hash: &Hash) -> StoreResult<Option<ChunkList>> // PA
    {
        match self.chunk_lists.get(hash.as_bytes())? {
            Some(bytes) => Ok(Some(ChunkList::decode_verified(hash, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Drop the tombstones of blobs forgotten, rows deleted and sealings
    /// freed before `before` (UTC nanoseconds), with their sync index
    /// entries, and the pending tombstones of frees never settled: by then
    /// anti-entropy has brought them to every replica, and a node away for
    /// longer is past the grace period. Tombstones from before tombstones
    /// carried their time and partition are kept. Returns how many went.
    pub fn purge_tombstones(&self, before: u64) -> StoreResult<usize> // PA
    {
        // Found without the apply lock, so writes go on during the scan;
        // each is checked again under it before it goes.
        let mut expired = Vec::new();
        for entry in self.sync_index.iter() {
            let (key, value) = entry?;
            let (kind, _, locator) = parse_sync_value(&value)?;
            let id = trailing_hash("sync_index", &key)?;
            let partition = key[0];
            if self.tombstone_expired(kind, &id, locator, before)? {
                expired.push((partition, id, kind, locator.to_vec()));
            }
        }
        let mut purged = 0;
        for batch_of in expired.chunks(1000) {
            let _guard = self.apply_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Freed sealings' marks change under the claim lock.
            let _claims = self.claim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut batch = self.keyspace.batch();
            let mut gone = Vec::new();
            for (partition, id, kind, locator) in batch_of {
                if !self.tombstone_expired(*kind, id, locator, before)? {
                    continue;
                }
                match kind {
                    EntryKind::Forgotten => batch.remove(&self.tombstones, id.as_bytes()),
                    EntryKind::FreedChunk => batch.remove(&self.freed_chunks, locator.clone()),
                    EntryKind::Row => batch.remove(&self.rows, locator.clone()),
                    EntryKind::Blob | EntryKind::Chunk => continue,
                }
                batch.remove(&self.sync_index, sync_key(*partition, id));
                gone.push((*partition, *id));
            }
            batch.commit()?;
            for (partition, id) in &gone {
                self.leaf_changed(*partition, id);
            }
            purged += gone.len();
        }
        purged += self.purge_pending_frees(before)?;
        if purged > 0 {
            self.make_durable()?;
            tracing::info!(purged, "tombstones past their grace period purged");
        }
        Ok(purged)
    }

    /// Pending tombstones of frees whose settling never came (the
    /// collector stopped between the two steps), from before `before`.
    fn purge_pending_frees(&self, before: u64) -> StoreResult<usize> // PA
    {
        let expired =
            |mark: Option<FreedMark>| mark.is_some_and(|mark| mark.attempt.is_some() && mark.freed_at < before);
        // Found without the claim lock, and checked again under it.
        let mut found = Vec::new();
        for entry in self.freed_chunks.iter() {
            let (locator, value) = entry?;
            if expired(Some(FreedMark::decode(&value)?)) {
                found.push(locator);
            }
        }
        if found.is_empty() {
            return Ok(0);
        }
        let _guard = self.claim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut batch = self.keyspace.batch();
        let mut purged = 0;
        for locator in found {
            if expired(self.freed_mark(&locator)?) {
                batch.remove(&self.freed_chunks, locator);
                purged += 1;
            }
        }
        batch.commit()?;
        Ok(purged)
    }

    /// A tombstone from before tombstones carried their partition is not in
    /// the sync index, so a replica still holding the blob would send it
    /// every round: once the blob arrives and names its partition, record
    /// the tombstone there, to be sent back instead.
    fn index_legacy_tombstone(&self, hash: &Hash, bytes: &[u8]) -> StoreResult<()> // PA
    {
        let _guard = self.apply_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(recorded) = self.tombstones.get(hash.as_bytes())? else { return Ok(()) };
        let tombstone = Tombstone::decode(&recorded)?;
        if tombstone.partition.is_some() {
            return Ok(());
        }
        let blob = Blob::decode_verified(hash, bytes)?;
        let partition = crate::placement::partition_of(&blob.bucket, &blob.key);
        let upgraded = Tombstone { partition: Some(partition), forgotten_at: self.clock.now_nanos(), ..tombstone };
        let mut batch = self.keyspace.batch();
        batch.insert(&self.tombstones, hash.as_bytes(), upgraded.encode());
        let digest = sync::forgotten_digest(hash);
        batch.insert(&self.sync_index, sync_key(partition, hash), sync_value(EntryKind::Forgotten, &digest, &[]));
        batch.commit()?;
        self.leaf_changed(partition, hash);
        self.make_durable()
    }

    /// Whether a sync index entry is a tombstone older than `before`.
    fn tombstone_expired(&self, kind: EntryKind, id: &Hash, locator: &[u8], before: u64) -> StoreResult<bool> // PA
    {
        Ok(match kind {
            EntryKind::Blob | EntryKind::Chunk => false,
            EntryKind::FreedChunk => self.freed_at(locator)?.is_some_and(|freed_at| freed_at < before),
            EntryKind::Forgotten => match self.tombstones.get(id.as_bytes())? {
                Some(recorded) => {
                    let tombstone = Tombstone::decode(&recorded)?;
                    tombstone.forgotten_at > 0 && tombstone.forgotten_at < before
                }
                None => false,
            },
            EntryKind::Row => self
                .get_row_version(locator)?
                .is_some_and(|version| version.value.is_none() && version.updated < before),
        })
    }

    /// Whether a blob was forgotten here.
    pub fn is_forgotten(&self, hash: &Hash) -> StoreResult<bool> // PA
    {
        Ok(self.tombstones.contains_key(hash.as_bytes())?)
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
    pub fn heads(&self, bucket: &str, key: &str) -> StoreResult<Summaries> // PA
    {
        self.heads
            .prefix(object_index_key(bucket, key))
            .map(|entry| {
                let (index_key, value) = entry?;
                self.summary_of(key.to_string(), trailing_hash("heads", &index_key)?, &value)
            })
            .collect()
    }

    /// A summary from an index value; entries written before values existed
    /// are empty, and fall back to the blob.
    fn summary_of(&self, key: String, version: Hash, value: &[u8]) -> StoreResult<ObjectSummary> // PA
    {
        if !value.is_empty() {
            return Ok(ObjectSummary::from_entry(key, version, decode_entry("heads", value)?));
        }
        match self.get_blob(&version)? {
            Some(blob) => Ok(ObjectSummary::of(version, &blob)),
            None => Err(StoreError::BadIndexEntry { index: "heads", len: 0 }),
        }
    }

    /// Up to `max` keys of `bucket` under `prefix`, in key order from
    /// `start`, each with its newest head (delete markers included).
    pub fn list_keys(&self, bucket: &str, prefix: &str, start: &ListStart, max: usize) -> StoreResult<Summaries> // PA
    {
        let scope = object_prefix(bucket, prefix);
        let lower = list_lower_bound(bucket, &scope, start);
        let mut out: Vec<ObjectSummary> = Vec::new();
        for entry in self.heads.range(lower..) {
            let (index_key, value) = entry?;
            if !index_key.starts_with(&scope) {
                break;
            }
            let key = object_key_of("heads", bucket, &index_key, 32)?;
            let version = trailing_hash("heads", &index_key)?;
            if let Some(last) = out.last_mut() {
                if last.key == key {
                    let summary = self.summary_of(key, version, &value)?;
                    if summary.newer_than(last) {
                        *last = summary;
                    }
                    continue;
                }
            }
            if out.len() == max {
                break;
            }
            out.push(self.summary_of(key, version, &value)?);
        }
        Ok(out)
    }

    /// Up to `max` versions of the keys of `bucket` under `prefix`, keys in
    /// order and each key's versions newest first, from `start`.
    pub fn list_versions(&self, bucket: &str, prefix: &str, start: &VersionStart, max: usize) -> Listing // PA
    {
        let scope = object_prefix(bucket, prefix);
        let lower = match start {
            VersionStart::Keys(start) => list_lower_bound(bucket, &scope, start),
            VersionStart::AfterVersion { key, created, version } => {
                let mut after = version_index_key(&object_index_key(bucket, key), *created, version);
                after.push(0);
                after
            }
        };
        let mut out = Vec::new();
        for entry in self.versions.range(lower.max(scope.clone())..).take(max) {
            let (index_key, value) = entry?;
            if !index_key.starts_with(&scope) {
                break;
            }
            let key = object_key_of("versions", bucket, &index_key, VERSION_SUFFIX)?;
            let version = version_hash_of(&index_key)?;
            out.push(ObjectSummary::from_entry(key, version, decode_entry("versions", &value)?));
        }
        Ok(out)
    }

    /// Keep a bucket record if it is newer than the one held.
    pub fn put_bucket(&self, record: &BucketRecord) -> StoreResult<()> // PA
    {
        {
            let _guard = self.apply_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(held) = self.get_bucket(&record.name)? {
                if !record.supersedes(&held) {
                    return Ok(());
                }
            }
            self.buckets.insert(record.name.as_bytes(), codec::encode(record))?;
        }
        self.make_durable()
    }

    pub fn get_bucket(&self, name: &str) -> StoreResult<Option<BucketRecord>> // PA
    {
        let Some(bytes) = self.buckets.get(name.as_bytes())? else { return Ok(None) };
        codec::decode(&bytes).map(Some).map_err(|source| StoreError::Bucket { name: name.to_string(), source })
    }

    /// Every bucket record held, deleted ones included.
    pub fn list_buckets(&self) -> StoreResult<Vec<BucketRecord>> // PA
    {
        self.buckets
            .iter()
            .map(|entry| {
                let (name, bytes) = entry?;
                codec::decode(&bytes)
                    .map_err(|source| StoreError::Bucket { name: String::from_utf8_lossy(&name).into_owned(), source })
            })
            .collect()
    }

    /// Keep a version of a row of a small metadata table if it supersedes
    /// the one held (last writer wins; a tombstone is a version too).
    /// A live row's chunks are kept from garbage collection until a newer
    /// version replaces it. Returns whether the version was kept.
    /// `partition` is the metadata partition a partitioned table's row
    /// lives in (anti-entropy compares it there); `None` for the registers
    /// every node keeps whole.
    pub fn put_row(&self, table: u8, key: &[u8], version: &RowVersion, partition: Option<u8>) -> StoreResult<bool> // PA
    {
        let row = [&[table], key].concat();
        {
            let _guard = self.apply_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if self.get_row_version(&row)?.is_some_and(|held| !version.supersedes(&held)) {
                return Ok(false);
            }
            let mut batch = self.keyspace.batch();
            self.drop_row_refs(&mut batch, &row)?;
            batch.insert(&self.rows, row.as_slice(), codec::encode(version));
            if version.value.is_some() && !version.chunks.is_empty() {
                let id = Hash::of(&row);
                for chunk in &version.chunks {
                    batch.insert(&self.row_refs, pair_key(chunk, &id), []);
                }
                let list: Vec<u8> = version.chunks.iter().flat_map(|c| *c.as_bytes()).collect();
                batch.insert(&self.row_chunks, row.as_slice(), list);
            }
            let id = sync::row_id(table, key);
            if let Some(partition) = partition {
                let value = sync_value(EntryKind::Row, &sync::row_digest(version), &row);
                batch.insert(&self.sync_index, sync_key(partition, &id), value);
            }
            batch.commit()?;
            if let Some(partition) = partition {
                self.leaf_changed(partition, &id);
            }
        }
        self.make_durable()?;
        Ok(true)
    }

    fn drop_row_refs(&self, batch: &mut fjall::Batch, row: &[u8]) -> StoreResult<()> // PA
    {
        let Some(list) = self.row_chunks.get(row)? else { return Ok(()) };
        let id = Hash::of(row);
        for chunk in list.chunks(32) {
            let chunk =
                Hash::from_slice(chunk).ok_or(StoreError::BadIndexEntry { index: "row_chunks", len: list.len() })?;
            batch.remove(&self.row_refs, pair_key(&chunk, &id));
        }
        batch.remove(&self.row_chunks, row);
        Ok(())
    }

    fn get_row_version(&self, row: &[u8]) -> StoreResult<Option<RowVersion>> // PA
    {
        let Some(bytes) = self.rows.get(row)? else { return Ok(None) };
        codec::decode(&bytes).map(Some).map_err(|source| StoreError::BadIndexValue { index: "rows", source })
    }

    /// The version of a row held here, tombstones included.
    pub fn get_row(&self, table: u8, key: &[u8]) -> StoreResult<Option<RowVersion>> // PA
    {
        self.get_row_version(&[&[table], key].concat())
    }

    /// Up to `max` rows whose key starts with `prefix`, after `after`,
    /// tombstones included (a merge across replicas needs them).
    pub fn scan_rows(&self, table: u8, prefix: &[u8], after: &[u8], max: usize) -> StoreResult<Vec<Row>> // PA
    {
        let scope = [&[table], prefix].concat();
        let lower = [&[table], after, &[0]].concat().max(scope.clone());
        let mut rows = Vec::new();
        for entry in self.rows.range(lower..).take(max) {
            let (key, value) = entry?;
            if !key.starts_with(&scope) {
                break;
            }
            let version =
                codec::decode(&value).map_err(|source| StoreError::BadIndexValue { index: "rows", source })?;
            rows.push((key[1..].to_vec(), version));
        }
        Ok(rows)
    }

    /// Blobs stored before the sync index existed enter it once, so
    /// anti-entropy covers them too.
    fn index_unsynced_blobs(&self) -> StoreResult<()> // PA
    {
        if !self.sync_index.is_empty()? || self.blobs.is_empty()? {
            return Ok(());
        }
        let mut indexed = 0usize;
        for entry in self.blobs.iter() {
            let (hash, bytes) = entry?;
            let hash = trailing_hash("blobs", &hash)?;
            let blob = Blob::decode_verified(&hash, &bytes)?;
            let partition = crate::placement::partition_of(&blob.bucket, &blob.key);
            let value = sync_value(EntryKind::Blob, &sync::blob_digest(&hash), &[]);
            self.sync_index.insert(sync_key(partition, &hash), value)?;
            indexed += 1;
        }
        tracing::info!(blobs = indexed, "stored blobs entered the sync index");
        self.sync()
    }

    /// Manifests stored before they were in the sync index enter it once,
    /// so anti-entropy brings them to every replica of their partition; a
    /// write checks their slices before it first reuses one.
    fn index_manifests(&self) -> StoreResult<()> // PA
    {
        if self.cluster.contains_key(MANIFESTS_INDEXED_KEY)? {
            return Ok(());
        }
        let mut indexed = 0usize;
        for entry in self.chunks.iter() {
            let (id, _) = entry?;
            let id = trailing_hash("chunks", &id)?;
            let chunk = match self.get_chunk(&id) {
                Ok(Some(chunk)) => chunk,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(chunk = %id, %error, "a stored manifest does not read: left out of the sync index");
                    continue;
                }
            };
            let value = sync_value(EntryKind::Chunk, &sync::manifest_digest(&chunk.id), &[]);
            self.sync_index.insert(sync_key(placement::partition_of_hash(&id), &id), value)?;
            // It may be one a free of an older build, which kept no
            // tombstone, missed here.
            self.unverified_chunks.insert(id.as_bytes(), [])?;
            indexed += 1;
        }
        self.cluster.insert(MANIFESTS_INDEXED_KEY, [])?;
        if indexed > 0 {
            tracing::info!(manifests = indexed, "stored manifests entered the sync index");
        }
        self.sync()
    }

    /// Rows written before versions existed (`tables`, a value per key)
    /// become versions from time 0, which any later write supersedes.
    fn migrate_unversioned_rows(&self) -> StoreResult<()> // PA
    {
        let legacy = self.keyspace.open_partition("tables", PartitionCreateOptions::default())?;
        if legacy.is_empty()? {
            return Ok(());
        }
        let mut moved = 0usize;
        for entry in legacy.iter() {
            let (row, value) = entry?;
            let chunks = match self.row_chunks.get(&row)? {
                Some(list) => list.chunks(32).filter_map(Hash::from_slice).collect(),
                None => Vec::new(),
            };
            let version = RowVersion::live(0, value.to_vec(), chunks);
            if self.rows.get(&row)?.is_none() {
                self.rows.insert(row.clone(), codec::encode(&version))?;
            }
            legacy.remove(row)?;
            moved += 1;
        }
        tracing::info!(rows = moved, "table rows given versions");
        self.sync()
    }

    /// A leaf of the sync tree changed: its digest is computed again when
    /// next asked for.
    fn leaf_changed(&self, partition: u8, id: &Hash) // PA
    {
        let mut cache = self.sync_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.leaves.remove(&(partition, sync::leaf_of(id)));
        cache.roots.remove(&partition);
    }

    fn load_layout(&self) -> StoreResult<()> // PA
    {
        if let Some(bytes) = self.cluster.get(LAYOUT_KEY)? {
            let layout: Layout = codec::decode(&bytes).map_err(StoreError::Layout)?;
            *self.layout.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(layout);
        }
        Ok(())
    }

    /// The cluster layout as this node holds it.
    pub fn layout(&self) -> Arc<Layout> // PA
    {
        self.layout.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Apply `change` to the layout; when it says something changed, the
    /// new layout is stored durably before anyone reads it. Returns the
    /// layout as it now stands.
    pub fn update_layout(&self, change: impl FnOnce(&mut Layout) -> bool) -> StoreResult<Arc<Layout>> // PA
    {
        let _serialised = self.layout_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = (*self.layout()).clone();
        if !change(&mut next) {
            return Ok(self.layout());
        }
        self.cluster.insert(LAYOUT_KEY, codec::encode(&next))?;
        self.keyspace.persist(PersistMode::SyncAll)?;
        let next = Arc::new(next);
        *self.layout.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = next.clone();
        Ok(next)
    }

    /// Merge another node's layout into this node's.
    pub fn merge_layout(&self, other: &Layout) -> StoreResult<Arc<Layout>> // PA
    {
        self.update_layout(|layout| layout.merge(other))
    }

    /// What the last move pass left: slices that belong elsewhere, and
    /// their bytes.
    pub fn set_move_backlog(&self, slices: u64, bytes: u64) // A
    {
        *self.move_backlog.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((slices, bytes));
    }

    /// Chunks the last repair pass left short of slices.
    pub fn set_chunks_degraded(&self, chunks: u64) // A
    {
        *self.chunks_degraded.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(chunks);
    }

    /// Chunks the last repair pass left short of slices; `None` before the
    /// first pass (and on a node that does not repair).
    pub fn chunks_degraded(&self) -> Option<u64> // A
    {
        *self.chunks_degraded.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the last move pass left; `None` before the first.
    pub fn move_backlog(&self) -> Option<(u64, u64)> // A
    {
        *self.move_backlog.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How far a background pass is; `None` once it finished.
    pub fn set_pass(&self, kind: PassKind, progress: Option<PassProgress>) // A
    {
        let mut passes = self.passes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match kind {
            PassKind::Move => passes.moving = progress,
            PassKind::Repair => passes.repairing = progress,
            PassKind::Scrub => passes.scrubbing = progress,
        }
    }

    /// Ask for a scrub now; false when one is under way already.
    pub fn request_scrub(&self) -> bool // A
    {
        if self.passes().scrubbing.is_some() {
            return false;
        }
        self.scrub_wanted.notify_one();
        true
    }

    /// Returns once a scrub is asked for.
    pub async fn scrub_requested(&self) // A
    {
        self.scrub_wanted.notified().await
    }

    /// The background passes under way.
    pub fn passes(&self) -> Passes // A
    {
        *self.passes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the last anti-entropy round found: partitions out of step.
    pub fn set_partitions_unsynced(&self, partitions: usize) // A
    {
        self.partitions_unsynced.store(partitions, Ordering::Relaxed);
    }

    /// `None` until this process ran a round.
    pub fn partitions_unsynced(&self) -> Option<usize> // A
    {
        Some(self.partitions_unsynced.load(Ordering::Relaxed)).filter(|n| *n != NO_ROUND_YET)
    }

    /// The entries of one leaf of a partition's sync tree, in id order.
    pub fn sync_entries(&self, partition: u8, leaf: u8) -> StoreResult<Vec<Entry>> // PA
    {
        Self::entries_of(&self.sync_index, partition, leaf)
    }

    fn entries_of(index: &PartitionHandle, partition: u8, leaf: u8) -> StoreResult<Vec<Entry>> // PA
    {
        let mut out = Vec::new();
        for entry in index.prefix([partition, leaf]) {
            let (key, value) = entry?;
            let id = trailing_hash("sync_index", &key)?;
            let (_, digest, _) = parse_sync_value(&value)?;
            out.push(Entry { id, digest });
        }
        Ok(out)
    }

    /// The digests of a partition's 256 leaves.
    pub fn sync_leaves(&self, partition: u8) -> StoreResult<Vec<Hash>> // PA
    {
        // Computed under the lock, so a write that lands meanwhile clears
        // the digest after it is cached, never before.
        let mut cache = self.sync_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Self::leaves_into(&self.sync_index, &mut cache, partition)
    }

    fn leaves_into(index: &PartitionHandle, cache: &mut SyncCache, partition: u8) -> StoreResult<Vec<Hash>> // PA
    {
        let cache = &mut cache.leaves;
        let missing: Vec<u8> =
            (0..sync::LEAVES).map(|leaf| leaf as u8).filter(|leaf| !cache.contains_key(&(partition, *leaf))).collect();
        if missing.len() > WHOLE_PARTITION_SCAN {
            // Many leaves to compute (a first round, an empty partition):
            // one pass over the partition instead of a scan per leaf.
            let mut entries: Vec<Vec<Entry>> = vec![Vec::new(); sync::LEAVES];
            for entry in index.prefix([partition]) {
                let (key, value) = entry?;
                let id = trailing_hash("sync_index", &key)?;
                let (_, digest, _) = parse_sync_value(&value)?;
                entries[usize::from(sync::leaf_of(&id))].push(Entry { id, digest });
            }
            for leaf in missing {
                cache.insert((partition, leaf), sync::leaf_digest(&entries[usize::from(leaf)]));
            }
        } else {
            for leaf in missing {
                cache.insert((partition, leaf), sync::leaf_digest(&Self::entries_of(index, partition, leaf)?));
            }
        }
        Ok((0..sync::LEAVES).map(|leaf| cache.get(&(partition, leaf as u8)).copied().unwrap_or_default()).collect())
    }

    /// The roots of these partitions' sync trees.
    pub fn sync_roots(&self, partitions: &[u8]) -> StoreResult<Vec<(u8, Hash)>> // PA
    {
        let mut cache = self.sync_cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        partitions
            .iter()
            .map(|&partition| {
                if let Some(root) = cache.roots.get(&partition) {
                    return Ok((partition, *root));
                }
                let root = sync::root_digest(&Self::leaves_into(&self.sync_index, &mut cache, partition)?);
                cache.roots.insert(partition, root);
                Ok((partition, root))
            })
            .collect()
    }

    /// The items behind these ids of a partition, as another replica needs
    /// them; ids not held here are skipped, and so are manifests unless
    /// `manifests`.
    pub fn sync_items(&self, partition: u8, ids: &[Hash], manifests: bool) -> StoreResult<Vec<SyncItem>> // PA
    {
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(value) = self.sync_index.get(sync_key(partition, id))? else { continue };
            let (kind, _, locator) = parse_sync_value(&value)?;
            match kind {
                EntryKind::Blob => {
                    let Some(bytes) = self.get_blob_bytes(id)? else { continue };
                    let blob = Blob::decode_verified(id, &bytes)?;
                    let mut chunk_lists = Vec::with_capacity(blob.chunk_lists.len());
                    for list in &blob.chunk_lists {
                        match self.get_chunk_list_bytes(&list.hash)? {
                            Some(list) => chunk_lists.push(list),
                            None => return Err(StoreError::MissingChunkList { list: list.hash, blob: *id }),
                        }
                    }
                    items.push(SyncItem::Blob { bytes, chunk_lists });
                }
                EntryKind::Forgotten => {
                    let Some(recorded) = self.tombstones.get(id.as_bytes())? else { continue };
                    let tombstone = Tombstone::decode(&recorded)?;
                    items.push(SyncItem::Forgotten {
                        partition,
                        hash: *id,
                        forgotten_at: tombstone.forgotten_at,
                        parents: tombstone.parents,
                    });
                }
                EntryKind::Row => {
                    let (&table, key) = locator
                        .split_first()
                        .ok_or(StoreError::BadIndexEntry { index: "sync_index", len: value.len() })?;
                    let Some(version) = self.get_row(table, key)? else { continue };
                    items.push(SyncItem::Row { partition, table, key: key.to_vec(), version });
                }
                EntryKind::Chunk if !manifests => {}
                EntryKind::Chunk => {
                    let Some(chunk) = self.get_chunk(id)? else { continue };
                    items.push(SyncItem::Chunk { chunk });
                }
                EntryKind::FreedChunk => {
                    let bad = || StoreError::BadIndexEntry { index: "sync_index", len: value.len() };
                    let chunk = locator.get(..32).and_then(Hash::from_slice).ok_or_else(bad)?;
                    let sealing = locator.get(32..).and_then(Hash::from_slice).ok_or_else(bad)?;
                    let Some(freed_at) = self.freed_at(locator)? else { continue };
                    items.push(SyncItem::FreedChunk { chunk, sealing, freed_at });
                }
            }
        }
        Ok(items)
    }

    /// Take in what another replica sent: each item merges with what is
    /// held as a write of it would.
    pub fn apply_sync_item(&self, item: SyncItem) -> StoreResult<()> // PA
    {
        match item {
            SyncItem::Blob { bytes, chunk_lists } => {
                // A forgotten blob stays out, and so do the lists it needs.
                let hash = Hash::of(&bytes);
                if self.is_forgotten(&hash)? {
                    return self.index_legacy_tombstone(&hash, &bytes);
                }
                for list in &chunk_lists {
                    self.put_chunk_list(list)?;
                }
                self.put_blob(&bytes).map(drop)
            }
            SyncItem::Forgotten { partition, hash, forgotten_at, parents } => {
                {
                    let _guard = self.apply_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    self.forget_locked(&hash, Tombstone { partition: Some(partition), forgotten_at, parents })?;
                }
                self.make_durable()
            }
            SyncItem::Row { partition, table, key, version } => {
                self.put_row(table, &key, &version, Some(partition)).map(drop)
            }
            SyncItem::Chunk { chunk } => self.merge_chunk(&chunk),
            SyncItem::FreedChunk { chunk, sealing, freed_at } => self.publish_freed(&chunk, &sealing, freed_at),
        }
    }

    /// A manifest from another replica, kept where none is held and its
    /// sealing was not freed. A sealing held here is never replaced by one
    /// from elsewhere, which may be a freed one whose tombstone was never
    /// kept (an older build's free) or is purged: replicas may hold
    /// different sealings of a chunk, as two writers can leave them, and
    /// readers take the first whose slices answer. An arrived manifest
    /// counts as never claimed: the writer's claims are on a write quorum
    /// of the other replicas.
    fn merge_chunk(&self, chunk: &Chunk) -> StoreResult<()> // PA
    {
        {
            let _guard = self.claim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let sealing = sync::sealing_digest(chunk);
            if self.is_freed(&chunk.id, &sealing)? || self.chunks.contains_key(chunk.id.as_bytes())? {
                return Ok(());
            }
            let mut batch = self.keyspace.batch();
            self.insert_chunk(&mut batch, chunk);
            batch.insert(&self.unverified_chunks, chunk.id.as_bytes(), []);
            batch.commit()?;
            self.leaf_changed(placement::partition_of_hash(&chunk.id), &chunk.id);
        }
        self.make_durable()
    }

    /// A freed sealing's tombstone, settled by its free or come from
    /// another replica: kept and synced, and a manifest of that sealing
    /// held here goes. A claim cannot save it: a tombstone is published
    /// only once its free reached a write quorum with no replica refusing,
    /// and a claim and a free never both reach their quorums.
    fn publish_freed(&self, chunk: &Hash, sealing: &Hash, freed_at: u64) -> StoreResult<()> // PA
    {
        {
            let _guard = self.claim_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if self.freed_mark(&pair_key(chunk, sealing))?.is_some_and(|mark| mark.attempt.is_none()) {
                return Ok(());
            }
            let mut batch = self.keyspace.batch();
            if self.get_chunk(chunk)?.is_some_and(|held| sync::sealing_digest(&held) == *sealing) {
                self.remove_chunk(&mut batch, chunk);
            }
            self.insert_freed(&mut batch, chunk, sealing, freed_at);
            batch.commit()?;
            self.leaf_changed(placement::partition_of_hash(chunk), chunk);
            self.leaf_changed(placement::partition_of_hash(chunk), &sync::freed_chunk_id(chunk, sealing));
        }
        self.make_durable()
    }

    /// When a published tombstone of a freed sealing (`chunk ‖ sealing`)
    /// was freed.
    fn freed_at(&self, locator: &[u8]) -> StoreResult<Option<u64>> // PA
    {
        Ok(self.freed_mark(locator)?.filter(|mark| mark.attempt.is_none()).map(|mark| mark.freed_at))
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

    /// Live slice bytes and count.
    pub fn slice_usage(&self) -> StoreResult<(u64, usize)> // A
    {
        self.slices.usage()
    }

    /// Bytes the slice segments occupy on disk.
    pub fn slice_disk_usage(&self) -> StoreResult<u64> // A
    {
        self.slices.disk_usage()
    }

    /// Make everything written so far durable regardless of the mode.
    pub fn sync(&self) -> StoreResult<()> // PA
    {
        self.slices.sync()?;
        Ok(self.keyspace.persist(PersistMode::SyncAll)?)
    }
}

/// Run store work on tokio's blocking pool: it may wait on the disk.
pub async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> StoreResult<R> // A
{
    crate::compute::blocking(work).await.map_err(|error| StoreError::Task(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_indexes_missing_from_an_older_store_are_rebuilt_on_open() // A
    {
        let dir = tempfile::tempdir().unwrap();
        let mut hashes = Vec::new();
        {
            let store = LocalStore::open(dir.path(), Durability::Flush).unwrap();
            let mut blob = crate::model::tests::sample_blob();
            blob.parents.clear();
            blob.null_version = true;
            for (n, created) in [10u64, 20].into_iter().enumerate() {
                let next = Blob { created, parents: hashes.clone(), etag: format!("e{n}"), ..blob.clone() };
                let (hash, bytes) = next.encode_with_hash();
                store.put_blob(&bytes).unwrap();
                hashes.push(hash);
            }
            // What an older build left behind: blobs and heads, no version indexes.
            for partition in [&store.versions, &store.nulls] {
                let keys: Vec<_> = partition.iter().map(|e| e.unwrap().0).collect();
                keys.into_iter().for_each(|k| partition.remove(k).unwrap());
            }
            store.tombstones.iter().map(|e| e.unwrap().0).for_each(|k| store.tombstones.remove(k).unwrap());
            store.sync_index.iter().map(|e| e.unwrap().0).for_each(|k| store.sync_index.remove(k).unwrap());
            let (first, bytes) = Blob { created: 10, parents: vec![], etag: "e0".into(), ..blob }.encode_with_hash();
            store.blobs.insert(first.as_bytes(), bytes).unwrap();
            store.sync().unwrap();
        }
        let store = LocalStore::open(dir.path(), Durability::Flush).unwrap();
        let listed = store.list_versions("photos", "", &VersionStart::Keys(ListStart::Beginning), 10).unwrap();
        let listed: Vec<Hash> = listed.iter().map(|v| v.version).collect();
        assert_eq!(listed, [hashes[1]], "the replaced null version is retired, the current one listed");
        // Both blobs entered the sync index: the current one, and the
        // retired one as a tombstone.
        let partition = crate::placement::partition_of("photos", "2026/cat.jpg");
        for hash in &hashes {
            let entries = store.sync_entries(partition, sync::leaf_of(hash)).unwrap();
            assert!(entries.iter().any(|e| e.id == *hash), "blob {hash} is not in the sync index");
        }
    }

    #[test]
    fn rows_keep_the_newest_version_and_unversioned_rows_are_migrated() // A
    {
        let dir = tempfile::tempdir().unwrap();
        let chunk = Hash::of(b"a part's chunk");
        {
            let store = LocalStore::open(dir.path(), Durability::Flush).unwrap();
            assert!(store.put_row(1, b"k", &RowVersion::live(20, b"new".to_vec(), vec![chunk]), Some(4)).unwrap());
            assert!(!store.put_row(1, b"k", &RowVersion::live(10, b"old".to_vec(), Vec::new()), Some(4)).unwrap());
            assert_eq!(store.get_row(1, b"k").unwrap().and_then(|v| v.value), Some(b"new".to_vec()));
            assert_eq!(store.referenced(&[chunk]).unwrap(), [chunk]);
            // A tombstone wins over older versions and lets the chunk go.
            assert!(store.put_row(1, b"k", &RowVersion::tombstone(30), Some(4)).unwrap());
            assert!(!store.put_row(1, b"k", &RowVersion::live(25, b"late".to_vec(), vec![chunk]), Some(4)).unwrap());
            assert!(store.referenced(&[chunk]).unwrap().is_empty());
            let scanned = store.scan_rows(1, b"", b"", 10).unwrap();
            assert_eq!(scanned, vec![(b"k".to_vec(), RowVersion::tombstone(30))]);

            // What an older build left: a bare value per row.
            let legacy = store.keyspace.open_partition("tables", PartitionCreateOptions::default()).unwrap();
            legacy.insert([&[2u8][..], b"upload"].concat(), b"bare").unwrap();
            store.sync().unwrap();
        }
        let store = LocalStore::open(dir.path(), Durability::Flush).unwrap();
        assert_eq!(store.get_row(2, b"upload").unwrap(), Some(RowVersion::live(0, b"bare".to_vec(), Vec::new())));
        assert_eq!(store.get_row(1, b"k").unwrap(), Some(RowVersion::tombstone(30)));
    }

    #[test]
    fn tombstones_go_after_their_grace_period_and_not_before() // A
    {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::world::ManualClock::starting_at(1_000));
        let store = LocalStore::open(dir.path(), Durability::Flush).unwrap().with_clock(clock.clone());
        let mut blob = crate::model::tests::sample_blob();
        blob.parents.clear();
        let (hash, bytes) = blob.encode_with_hash();
        store.put_blob(&bytes).unwrap();
        let partition = crate::placement::partition_of(&blob.bucket, &blob.key);
        let empty = store.sync_roots(&[255u8.wrapping_sub(partition)]).unwrap()[0].1;
        let before_forget = store.sync_roots(&[partition]).unwrap()[0].1;
        store.forget_blob(&hash, partition).unwrap();
        store.put_row(7, b"gone", &RowVersion::tombstone(2_000), Some(partition)).unwrap();
        store.put_row(7, b"kept", &RowVersion::live(500, b"v".to_vec(), Vec::new()), Some(partition)).unwrap();

        assert_eq!(store.purge_tombstones(1_000).unwrap(), 0, "a tombstone went before its grace period");
        assert!(store.is_forgotten(&hash).unwrap());
        assert_eq!(store.purge_tombstones(2_001).unwrap(), 2);
        assert!(!store.is_forgotten(&hash).unwrap());
        assert_eq!(store.get_row(7, b"gone").unwrap(), None);
        assert!(store.get_row(7, b"kept").unwrap().is_some(), "a live row is not a tombstone");
        // Only the live row is left in the partition's tree.
        store.put_row(7, b"kept", &RowVersion::tombstone(3_000), Some(partition)).unwrap();
        store.purge_tombstones(3_001).unwrap();
        let root = store.sync_roots(&[partition]).unwrap()[0].1;
        assert_eq!(root, empty, "purged entries left the sync tree");
        assert_ne!(root, before_forget);
    }

    /// Two sealings of one chunk, as two writers would leave them.
    fn two_sealings(id: Hash) -> (Chunk, Chunk) // A
    {
        let pair = crate::keys::DataKeyPair::generate();
        let params = crate::seal::SealParams { erasure: crate::model::Erasure::new(2, 1), zstd_level: 1 };
        let seal = || crate::seal::seal_chunk(id, vec![7u8; 5000], params, &[pair.public()]).unwrap().manifest;
        (seal(), seal())
    }

    fn root_of(store: &LocalStore, partition: u8) -> Hash // A
    {
        store.sync_roots(&[partition]).unwrap()[0].1
    }

    #[test]
    fn a_freed_sealing_never_comes_back_and_replica_trees_agree_in_any_order() // A
    {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let clock = Arc::new(crate::world::ManualClock::starting_at(1_000));
        let open = |dir: &tempfile::TempDir| {
            LocalStore::open(dir.path(), Durability::Flush).unwrap().with_clock(clock.clone())
        };
        let (store, other) = (open(&dirs[0]), open(&dirs[1]));
        let id = Hash::of(b"chunk");
        let partition = placement::partition_of_hash(&id);
        let (first, second) = two_sealings(id);
        let digest = sync::sealing_digest;
        let empty = root_of(&store, partition);
        store.put_chunk(&first).unwrap();
        assert_ne!(root_of(&store, partition), empty, "a manifest is in its partition's tree");

        // A free names its sealing: a replica holding another keeps it.
        assert_eq!(store.free_chunk(&id, u64::MAX, &digest(&second)).unwrap(), Freed::OtherSealing);
        // A free withdrawn (another replica refused) lets the manifest
        // come back; its pending tombstone was never synced.
        let attempt = u64::MAX - 1;
        assert_eq!(store.free_chunk(&id, attempt, &digest(&first)).unwrap(), Freed::Freed(first.clone()));
        assert_eq!(root_of(&store, partition), empty, "a pending tombstone is not synced");
        store.apply_sync_item(SyncItem::Chunk { chunk: first.clone() }).unwrap();
        assert_eq!(store.get_chunk(&id).unwrap(), None, "a pending tombstone refuses the manifest");
        assert_eq!(store.claim_chunk(&id).unwrap().freed, vec![digest(&first)], "a claim hears of it");
        store.settle_free(&id, &digest(&first), attempt - 1, None).unwrap();
        assert!(store.is_freed(&id, &digest(&first)).unwrap(), "another attempt's withdrawal took the mark");
        store.settle_free(&id, &digest(&first), attempt, None).unwrap();
        store.apply_sync_item(SyncItem::Chunk { chunk: first.clone() }).unwrap();
        assert_eq!(store.get_chunk(&id).unwrap(), Some(first.clone()), "the withdrawn free kept it out");
        // A free that reached its quorum publishes the tombstone.
        assert_eq!(store.free_chunk(&id, u64::MAX, &digest(&first)).unwrap(), Freed::Freed(first.clone()));
        store.settle_free(&id, &digest(&first), u64::MAX, Some(1_000)).unwrap();
        // The freed sealing never comes back: not by anti-entropy, a move
        // or a late write.
        store.apply_sync_item(SyncItem::Chunk { chunk: first.clone() }).unwrap();
        assert!(!store.offer_chunk(&first).unwrap());
        assert!(matches!(store.put_chunk(&first), Err(StoreError::FreedSealing { .. })));
        assert_eq!(store.get_chunk(&id).unwrap(), None);
        // A replica that missed the free holds the freed sealing, and
        // another sealing came later: given each other's entries in either
        // order, both end with the later sealing and the tombstone.
        other.put_chunk(&first).unwrap();
        store.apply_sync_item(SyncItem::Chunk { chunk: second.clone() }).unwrap();
        let claimed = store.claim_chunk(&id).unwrap().held.expect("held");
        assert!(claimed.unverified, "a manifest that arrived is unverified");
        let ids = |from: &LocalStore| -> Vec<Hash> {
            (0..=u8::MAX).flat_map(|leaf| from.sync_entries(partition, leaf).unwrap()).map(|e| e.id).collect()
        };
        // Two rounds: the replica behind keeps the freed sealing over the
        // later one until the tombstone drops it; the later one then comes.
        for _ in 0..2 {
            for item in store.sync_items(partition, &ids(&store), true).unwrap() {
                other.apply_sync_item(item).unwrap();
            }
            for item in other.sync_items(partition, &ids(&other), true).unwrap() {
                store.apply_sync_item(item).unwrap();
            }
        }
        assert_eq!(root_of(&store, partition), root_of(&other, partition));
        assert_eq!(other.get_chunk(&id).unwrap(), Some(second.clone()), "the freed sealing left the replica behind");
        // A replica holding a sealing keeps it: one from elsewhere may be a
        // freed one whose tombstone is gone. Both trees still agree.
        let (third, _) = two_sealings(id);
        other.put_chunk(&third).unwrap();
        other.apply_sync_item(SyncItem::Chunk { chunk: second.clone() }).unwrap();
        store.apply_sync_item(SyncItem::Chunk { chunk: third.clone() }).unwrap();
        assert_eq!(other.get_chunk(&id).unwrap(), Some(third.clone()));
        assert_eq!(store.get_chunk(&id).unwrap(), Some(second.clone()));
        assert_eq!(root_of(&store, partition), root_of(&other, partition));

        // The tombstone goes after its grace period, with its tree entry.
        assert_eq!(store.purge_tombstones(1_000).unwrap(), 0, "a freed sealing's tombstone went too early");
        assert_eq!(store.purge_tombstones(1_001).unwrap(), 1);
        assert!(ids(&store) == vec![id], "only the manifest is left in the tree");
    }

    #[test]
    fn manifests_stored_before_they_were_synced_enter_the_tree_on_open() // A
    {
        let dir = tempfile::tempdir().unwrap();
        let id = Hash::of(b"old chunk");
        let partition = placement::partition_of_hash(&id);
        let synced_root = {
            let store = LocalStore::open(dir.path(), Durability::Flush).unwrap();
            store.put_chunk(&two_sealings(id).0).unwrap();
            let root = root_of(&store, partition);
            // What an older build left behind: the manifest, no entry.
            store.sync_index.remove(sync_key(partition, &id)).unwrap();
            store.cluster.remove(MANIFESTS_INDEXED_KEY).unwrap();
            store.sync().unwrap();
            root
        };
        let store = LocalStore::open(dir.path(), Durability::Flush).unwrap();
        assert_eq!(root_of(&store, partition), synced_root);
        // A free of the older build may have missed it: a write checks it
        // before reusing it, and stores it again as its own.
        let claimed = store.claim_chunk(&id).unwrap().held.expect("held");
        assert!(claimed.unverified);
        store.put_chunk(&claimed.chunk).unwrap();
        assert!(!store.claim_chunk(&id).unwrap().held.expect("held").unverified);
    }

    /// A handed-off slice is kept with its hint, across a restart; one the
    /// chunk does not list at the position given is refused, and no hint
    /// is kept for it.
    #[test]
    fn a_handed_off_slice_is_kept_with_its_hint_for_its_home() // A
    {
        let dir = tempfile::tempdir().unwrap();
        let (chunk, home) = (Hash::of(b"chunk"), Hash::of(b"home"));
        let slices: Vec<SealedSlice> = (0..3u8).map(|n| SealedSlice::new([n; 12], vec![n; 64])).collect();
        let hashes: Vec<Hash> = slices.iter().map(|slice| slice.hash).collect();
        {
            let store = LocalStore::open(dir.path(), Durability::Flush).unwrap();
            let held = |index| HeldSlice { chunk, slices: hashes.clone(), index };
            let refused = store.put_handed_off_slice(&slices[2], held(1), home);
            assert!(matches!(refused, Err(StoreError::HandedOffSlice { index: 1, count: 3, .. })), "{refused:?}");
            assert!(store.get_slice(&hashes[2]).unwrap().is_none());
            assert!(store.hints().is_empty());
            store.put_handed_off_slice(&slices[1], held(1), home).unwrap();
        }
        let store = LocalStore::open(dir.path(), Durability::Flush).unwrap();
        assert_eq!(store.get_slice(&hashes[1]).unwrap().as_ref(), Some(&slices[1]));
        let kept = store.hints().for_node(&home, None, 10).unwrap();
        assert!(
            matches!(&kept[..], [(_, Hinted::Held(h))] if h.chunk == chunk && h.index == 1 && h.slices == hashes),
            "{kept:?}"
        );
    }

    #[test]
    fn object_keys_sort_like_raw_keys() // A
    {
        let keys = ["", "a", "a\0", "a\0b", "a b", "ab", "b", "é"];
        let encoded: Vec<_> = keys.iter().map(|k| object_index_key("bkt", k)).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        for key in keys {
            let entry = [object_index_key("bkt", key).as_slice(), &[7u8; 32]].concat();
            assert_eq!(object_key_of("heads", "bkt", &entry, 32).unwrap(), key);
        }
        // A key is not a prefix match of a longer key's exact entry.
        assert!(!object_index_key("bkt", "ab").starts_with(&object_index_key("bkt", "a")));
        assert!(object_index_key("bkt", "ab").starts_with(&object_prefix("bkt", "a")));
    }
}
