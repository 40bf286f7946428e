//! Hinted handoff: what a node missed while it was away, kept for it by
//! another node until it can take it. Three kinds:
//! - a metadata write a replica missed (`Hinted::Write`), kept on the node
//!   that wrote it: a write still needs its quorum; the hint brings the
//!   replica level as soon as it is back, instead of at the next
//!   anti-entropy round that reaches the partition. Every hinted message
//!   merges (blobs are content-addressed, rows carry versions, tombstones
//!   win over what they remove), so hints are handed over in any order,
//!   any number of times. A slice no node took is kept so too, as the
//!   `PutSlice` for its home;
//! - a slice stored on another node than its home, kept by the node that
//!   took it (`Hinted::Held`), so it is taken home as soon as the home
//!   answers, instead of at the next repair pass. The hint is stored with
//!   the slice, before the writer hears it is stored: a copy and its hint
//!   are kept and lost together, whatever becomes of the writer;
//! - a slice held by another node (`Hinted::Slice`, naming it): writers
//!   before `Request` version 7 kept these for the slices they handed
//!   off, and they are still taken home.
//!
//! Hints live in their own partition of the node's keyspace, keyed by the
//! target node and the hash of the hint, so the same write missed twice
//! is one hint. They are bounded (`MAX_HINT_BYTES`): past that, a missed
//! write is left to anti-entropy and a slice to repair, which is what a
//! lost hint costs anyway.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use serde::{Deserialize, Serialize};

use crate::cluster::Request;
use crate::codec::{self, Record, RecordKind};
use crate::hash::Hash;
use crate::model::NodeId;
use crate::store_error::{StoreError, StoreResult};

/// The most bytes of hints one node keeps.
pub const MAX_HINT_BYTES: u64 = 256 << 20;

/// The partition hints are kept in.
const PARTITION: &str = "hints";

/// What a node keeps for another that missed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Hinted {
    /// A metadata write, sent as it was.
    Write(Request),
    /// A slice stored on another node than its home.
    Slice(HandedOffSlice),
    /// A slice this node holds for another, its home.
    Held(HeldSlice),
}

/// A hint is kept in the record envelope; hints of the first format were
/// the write's `Request` itself (`decode`). A `Write` holds the request's
/// body without the request's own envelope, so a change to the format of
/// `Request` is a new version of `Hinted` too, with a decoder for this one.
impl Record for Hinted {
    const KIND: RecordKind = RecordKind::Hint;
}

/// Where a writer put a slice whose home did not take it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandedOffSlice {
    pub chunk: Hash,
    /// The chunk's slices, in position order (the manifest's list): the
    /// hand-off finds the slice's home from its position and their number,
    /// and checks the chunk's other slices are not left doubled up.
    pub slices: Vec<Hash>,
    pub index: u32,
    /// The node that took it.
    pub holder: NodeId,
}

impl HandedOffSlice {
    /// The hint to keep on `keeper`: `Held` where it holds the slice itself.
    pub fn kept_on(self, keeper: NodeId) -> Hinted // PA
    {
        match self.holder == keeper {
            true => Hinted::Held(HeldSlice { chunk: self.chunk, slices: self.slices, index: self.index }),
            false => Hinted::Slice(self),
        }
    }
}

/// A slice a node took for its home, kept with it there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldSlice {
    pub chunk: Hash,
    /// The chunk's slices, in position order (as in `HandedOffSlice`).
    pub slices: Vec<Hash>,
    pub index: u32,
}

impl HeldSlice {
    /// The same hint, read on `holder`, the node keeping it.
    pub fn held_by(self, holder: NodeId) -> HandedOffSlice // PA
    {
        HandedOffSlice { chunk: self.chunk, slices: self.slices, index: self.index, holder }
    }
}

/// One hint: its key (to remove it once handed over) and what it keeps.
pub type Hint = (Vec<u8>, Hinted);

/// The hints a node keeps for others.
pub struct HintLog {
    keyspace: Keyspace,
    partition: PartitionHandle,
    /// Hints per target node, and the bytes of all of them.
    counts: Mutex<BTreeMap<NodeId, u64>>,
    bytes: AtomicU64,
}

impl HintLog {
    /// The hints kept in `keyspace`.
    pub fn open(keyspace: Keyspace, options: PartitionCreateOptions) -> StoreResult<Self> // PA
    {
        let partition = keyspace.open_partition(PARTITION, options)?;
        let mut counts = BTreeMap::new();
        let mut bytes = 0;
        for entry in partition.iter() {
            let (key, value) = entry?;
            let target = target_of(&key)?;
            *counts.entry(target).or_insert(0) += 1;
            bytes += value.len() as u64;
        }
        Ok(HintLog { keyspace, partition, counts: Mutex::new(counts), bytes: AtomicU64::new(bytes) })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, u64>> // A
    {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keep `hint` for `target`; `false` when the log is full.
    pub fn add(&self, target: NodeId, hint: &Hinted) -> StoreResult<bool> // PA
    {
        let bytes = codec::encode(hint);
        if self.bytes.load(Ordering::Relaxed) + bytes.len() as u64 > MAX_HINT_BYTES {
            return Ok(false);
        }
        let key = [target.as_bytes().as_slice(), Hash::of(&bytes).as_bytes()].concat();
        let mut counts = self.counts();
        if self.partition.contains_key(&key)? {
            return Ok(true);
        }
        self.partition.insert(&key, &bytes)?;
        *counts.entry(target).or_insert(0) += 1;
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        // A lost hint costs only time (anti-entropy brings the replica
        // level), so hints reach the operating system, not the platter.
        self.keyspace.persist(PersistMode::Buffer)?;
        Ok(true)
    }

    /// The nodes hints are kept for, with how many each.
    pub fn targets(&self) -> BTreeMap<NodeId, u64> // A
    {
        self.counts().clone()
    }

    /// How many hints are kept, for all nodes.
    pub fn len(&self) -> u64 // A
    {
        self.counts().values().sum()
    }

    pub fn is_empty(&self) -> bool // A
    {
        self.len() == 0
    }

    /// Up to `max` hints for `target`, in key order, after the hint keyed
    /// `after` when given (so a pass that leaves some hints in place goes
    /// on past them instead of reading them again). One that does not
    /// decode is dropped: anti-entropy and repair do what it would have
    /// done.
    pub fn for_node(&self, target: &NodeId, after: Option<&[u8]>, max: usize) -> StoreResult<Vec<Hint>> // PA
    {
        let mut hints = Vec::new();
        let mut unreadable = Vec::new();
        let start = match after {
            Some(key) if key.starts_with(target.as_bytes()) => Bound::Excluded(key.to_vec()),
            _ => Bound::Included(target.as_bytes().to_vec()),
        };
        let entries = self.partition.range((start, Bound::Unbounded));
        let of_target =
            entries.take_while(|entry| entry.as_ref().map_or(true, |(key, _)| key.starts_with(target.as_bytes())));
        for entry in of_target.take(max) {
            let (key, value) = entry?;
            match decode(&value) {
                Ok(hint) => hints.push((key.to_vec(), hint)),
                Err(error) => {
                    tracing::warn!(node = %target, %error, "an unreadable hint is dropped");
                    unreadable.push(key.to_vec());
                }
            }
        }
        for key in unreadable {
            self.remove(&key)?;
        }
        Ok(hints)
    }

    /// Drop a hint, handed over or no longer wanted.
    pub fn remove(&self, key: &[u8]) -> StoreResult<()> // PA
    {
        let target = target_of(key)?;
        let mut counts = self.counts();
        let Some(value) = self.partition.get(key)? else { return Ok(()) };
        self.partition.remove(key)?;
        self.bytes.fetch_sub(value.len() as u64, Ordering::Relaxed);
        if let Some(count) = counts.get_mut(&target) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&target);
            }
        }
        Ok(())
    }
}

/// A kept hint, of this format or the first (a metadata write's request).
fn decode(value: &[u8]) -> Result<Hinted, codec::DecodeError> // PA
{
    codec::decode::<Hinted>(value).or_else(|error| match codec::decode::<Request>(value) {
        Ok(request) => Ok(Hinted::Write(request)),
        Err(_) => Err(error),
    })
}

/// The target node a hint's key names.
fn target_of(key: &[u8]) -> StoreResult<NodeId> // PA
{
    key.get(..32).and_then(Hash::from_slice).ok_or(StoreError::BadIndexEntry { index: "hint", len: key.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ForgetBlob;

    fn log(dir: &tempfile::TempDir) -> HintLog // A
    {
        let keyspace = fjall::Config::new(dir.path()).open().expect("keyspace");
        HintLog::open(keyspace, PartitionCreateOptions::default()).expect("hint log")
    }

    fn forget() -> Request // A
    {
        ForgetBlob { hash: Hash([7; 32]), partition: 5 }.into()
    }

    /// A forget as session 16 kept it for a replica (the request's own
    /// record: kind 4, version 4, variant 17, the hash, the partition), and
    /// as hints keep it now (kind 13, version 1, variant 0, the request's body).
    fn old_hint() -> Vec<u8> // A
    {
        [&[b'O', 4, 4, 17][..], &[7; 32], &[5]].concat()
    }

    fn new_hint() -> Vec<u8> // A
    {
        [&[b'O', 13, 1, 0, 17][..], &[7; 32], &[5]].concat()
    }

    #[test]
    fn a_hint_of_the_first_format_is_still_handed_over() // A
    {
        let dir = tempfile::tempdir().expect("dir");
        let hints = log(&dir);
        let target = Hash::of(b"replica");
        let key = [target.as_bytes().as_slice(), Hash::of(&old_hint()).as_bytes()].concat();
        hints.partition.insert(&key, old_hint()).expect("insert");
        drop(hints);
        let hints = log(&dir);
        assert_eq!(hints.targets().get(&target), Some(&1));
        let kept = hints.for_node(&target, None, 10).expect("read");
        assert!(
            matches!(&kept[..], [(_, Hinted::Write(Request::ForgetBlob(f)))] if f.hash == Hash([7; 32]) && f.partition == 5)
        );
    }

    /// `Hinted::Write` holds a request's body without its envelope: when
    /// this fails, the request's format changed (its version, or the bytes
    /// of a forget), and `Hinted` needs a new version with a decoder for
    /// the one these bytes show.
    #[test]
    fn hints_and_requests_keep_the_format_hints_were_written_in() // A
    {
        // Any change to a request's format gives `Request` a new version.
        // Version 5 changed only the layout `ShareLayout` carries, and
        // version 6 only `FreeChunk` and the sync items, none of them ever
        // hinted, and versions 7 and 8 only added a message after the
        // others: the requests hints keep read as they were written.
        assert_eq!(Request::VERSION, 8, "Request's format changed: version Hinted with it");
        let body = |record: &[u8]| record[codec::ENVELOPE_LEN..].to_vec();
        assert_eq!(body(&codec::encode(&forget())), body(&old_hint()), "Request's format changed: version Hinted");
        assert!(matches!(codec::decode::<Request>(&old_hint()), Ok(Request::ForgetBlob(_))));
        assert_eq!(codec::encode(&Hinted::Write(forget())), new_hint(), "Hinted's format changed");
        assert!(matches!(decode(&new_hint()), Ok(Hinted::Write(Request::ForgetBlob(_)))));
    }

    #[test]
    fn a_pass_goes_on_past_the_hints_it_leaves() // A
    {
        let dir = tempfile::tempdir().expect("dir");
        let hints = log(&dir);
        // Another target's hints sort after this one's, and before.
        let (before, target, other) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
        for partition in 0..10u8 {
            let write = Hinted::Write(ForgetBlob { hash: Hash([partition; 32]), partition }.into());
            for node in [before, target, other] {
                assert!(hints.add(node, &write).expect("add"));
            }
        }
        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = hints.for_node(&target, after.as_deref(), 3).expect("read");
            let Some((last, _)) = batch.last() else { break };
            after = Some(last.clone());
            assert!(batch.len() <= 3);
            seen.extend(batch.into_iter().map(|(key, _)| key));
        }
        assert_eq!(seen.len(), 10, "each of the target's hints once, none of another's");
        assert!(seen.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(seen.iter().all(|key| key.starts_with(target.as_bytes())));
        // A key of another target starts at the target's first hint.
        let other_key = hints.for_node(&other, None, 1).expect("read").remove(0).0;
        let from_other = hints.for_node(&target, Some(&other_key), 100).expect("read");
        assert_eq!(from_other.into_iter().map(|(key, _)| key).collect::<Vec<_>>(), seen);
        assert_eq!(hints.targets().values().sum::<u64>(), 30);
    }
}
