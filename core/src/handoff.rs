//! Handing hints over (`crate::hints`), kept on this node for others that
//! missed them: a metadata write is sent to the replica once it is back; a
//! slice this node holds for another is taken home, and removed here once
//! the home holds it (a hint an earlier version's writer kept names another
//! holder: the slice is fetched from there, and removed there). It needs no
//! key, so every node of a cluster runs it, storage-only nodes too, which
//! take slices for homes that are away. A hint leaves here only when its
//! work is done. A slice whose home the layout has moved since (a node
//! joined, drains or is gone) has its hint kept for the new home instead,
//! once the old home is gone or not seen down (its hints are read only
//! then): this node may have finished its move pass for that layout before
//! the slice reached it, and no pass of its own would take it home until
//! the layout changes again. A target gone from the layout has its missed
//! writes dropped: its replacement takes the partitions from anti-entropy.

use std::sync::Arc;

use crate::cluster::{ClusterView, GetSlice, PutSlice, RemoveSlice, Request, Transport, TransportError};
use crate::hash::Hash;
use crate::hints::{HandedOffSlice, Hinted};
use crate::homing::{Found, Homing, SlicePlace};
use crate::model::NodeId;
use crate::placement;
use crate::store::{blocking, LocalStore, StoreResult};

/// Hints sent per target in one batch.
const BATCH: usize = 100;

/// What one hand-off pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffReport {
    /// Hints whose work is done: writes their targets stored, slices at
    /// their homes.
    pub handed: u64,
    /// Hints kept for targets still unreachable, or slices that cannot go
    /// home yet.
    pub left: u64,
    /// Writes for nodes gone from the layout, hints a target refused (it
    /// answered with an error: it would again), and slices now at their
    /// home or no longer where they were left.
    pub dropped: u64,
    /// Slices whose home moved, their hints now kept for the new home
    /// (also counted in `left`; a pass that reaches the new home's hints
    /// after may hand them over too, and count them again in `handed`).
    pub retargeted: u64,
}

/// What became of one hint.
enum Outcome {
    Done,
    /// The target cannot take it now: it and the target's other hints stay.
    Away,
    /// This one cannot be done now (a slice's holder is away, or the home
    /// would be left alone with two of the chunk's slices): it stays.
    Later,
    /// Never: the hint goes, its work left to anti-entropy or repair.
    Drop,
    /// The slice's home moved: the hint is kept for its new home instead.
    Retarget(NodeId, HandedOffSlice),
}

/// The hand-off of one node: how it reaches the others and sees the layout.
pub struct Handoff<T, V> {
    transport: Arc<T>,
    view: Arc<V>,
}

impl<T: Transport, V: ClusterView> Handoff<T, V> {
    pub fn new(transport: Arc<T>, view: Arc<V>) -> Self // A
    {
        Handoff { transport, view }
    }

    /// Do the work of every hint kept here whose target is not seen down,
    /// or is gone from the layout (its slices go to their new homes); a
    /// target that cannot take a hint now keeps the rest of its hints.
    pub async fn hand_off_hints(&self) -> StoreResult<HandoffReport> // PA
    {
        let mut report = HandoffReport::default();
        let Some(store) = self.transport.local_store(self.view.local_node()) else { return Ok(report) };
        let in_service = self.view.layout().in_service();
        for (target, count) in store.hints().targets() {
            // A target gone from the layout: its missed writes go (its
            // replacement takes the partitions from anti-entropy), and the
            // slices held for it go to their new homes.
            let gone = !in_service.contains(&target);
            if !gone && self.view.is_down(target) {
                report.left += count;
                continue;
            }
            let done_before = report.handed + report.dropped;
            let mut after: Option<Vec<u8>> = None;
            'batches: loop {
                let (store_, after_) = (store.clone(), after.clone());
                let batch = blocking(move || store_.hints().for_node(&target, after_.as_deref(), BATCH)).await??;
                let Some((last, _)) = batch.last() else { break };
                // Hints that stay are passed over, not read again.
                after = Some(last.clone());
                // One per batch: a node that does not answer is asked once.
                let homing = Homing::new(self.transport.as_ref(), self.view.local_node(), Some(&store));
                for (key, hint) in batch {
                    let outcome = match hint {
                        Hinted::Write(_) if gone => Outcome::Drop,
                        Hinted::Write(request) => self.hand_over_write(target, request).await,
                        Hinted::Slice(slice) => self.take_slice_home(&homing, target, slice).await,
                        Hinted::Held(held) => match holds(&store, held.slices.get(held.index as usize)).await {
                            true => self.take_slice_home(&homing, target, held.held_by(self.view.local_node())).await,
                            // Gone already: taken home, or freed.
                            false => Outcome::Drop,
                        },
                    };
                    match outcome {
                        Outcome::Done => report.handed += 1,
                        Outcome::Drop => report.dropped += 1,
                        Outcome::Away => break 'batches,
                        Outcome::Later => continue,
                        Outcome::Retarget(home, slice) => {
                            let (store, hint) = (store.clone(), slice.kept_on(self.view.local_node()));
                            let kept = blocking(move || store.hints().add(home, &hint)).await??;
                            // A full log: this hint stays as it is, to be
                            // pointed again on a later pass.
                            if !kept {
                                continue;
                            }
                            report.retargeted += 1;
                        }
                    }
                    let store = store.clone();
                    blocking(move || store.hints().remove(&key)).await??;
                }
            }
            // A retargeted hint is work still to do: it stays in `left`.
            let done = report.handed + report.dropped - done_before;
            report.left += count.saturating_sub(done);
            if done > 0 {
                tracing::info!(node = %target, hints = done, "missed writes and slices handed over");
            }
        }
        Ok(report)
    }

    async fn hand_over_write(&self, target: NodeId, request: Request) -> Outcome // PA
    {
        match self.transport.call(target, request).await {
            Ok(_) => Outcome::Done,
            Err(error) => waits_or_drops(target, error, Outcome::Away),
        }
    }

    /// Take a handed-off slice to `home` from the node that took it, then
    /// remove it there; not while that would leave the home alone with two
    /// of the chunk's slices. A slice whose home the layout has moved is
    /// not taken anywhere: its hint is for the new home (`Retarget`).
    async fn take_slice_home(&self, homing: &Homing<'_, T>, home: NodeId, hint: HandedOffSlice) -> Outcome // PA
    {
        let HandedOffSlice { chunk, slices, index, holder } = hint;
        let index = index as usize;
        let layout = self.view.layout();
        let homes = placement::slice_homes(&chunk, slices.len(), &layout.placing_members());
        let Some(hash) = slices.get(index).copied() else { return Outcome::Drop };
        let Some(&now_home) = homes.get(index) else { return Outcome::Drop };
        if now_home == holder {
            return Outcome::Drop;
        }
        if !layout.in_service().contains(&holder) {
            return Outcome::Drop;
        }
        if now_home != home {
            let hint = HandedOffSlice { chunk, slices, index: index as u32, holder };
            return Outcome::Retarget(now_home, hint);
        }
        if self.view.is_down(holder) {
            return Outcome::Later;
        }
        // A hint does not carry the chunk's coding (`SlicePlace::data`). In
        // a cluster smaller than the chunk's slices, where the home is home
        // to another slice too, the manifest tells it. A sealing no replica
        // lists (a write cut short, or the loser of two writers racing)
        // holds nothing acknowledged, and repair never rebuilds its missing
        // slices: its copy goes home, or would wait for them forever.
        let data = match homes.iter().filter(|other| **other == home).count() > 1 {
            false => None,
            true => match homing.find_manifest(&layout.hash_replicas(&chunk).all(), chunk, Some(&hash)).await {
                Found::Manifest(manifest) => Some(manifest.erasure.data as usize),
                Found::Nowhere => None,
                Found::Unknown => return Outcome::Later,
            },
        };
        let place = SlicePlace { chunk, slices: &slices, index, homes: &homes, data };
        match homing.home_doubles_up(&place).await {
            Ok(false) => {}
            Ok(true) => return Outcome::Later,
            // The home itself did not answer: its other hints wait with this one.
            Err(error) => return waits_or_drops(home, error, Outcome::Away),
        }
        let slice = match homing.ask(holder, GetSlice { hash }).await {
            Ok(Some(slice)) if slice.hash == hash => slice,
            // No longer there: taken home by repair or a move pass already.
            Ok(_) => return Outcome::Drop,
            Err(error) => return waits_or_drops(holder, error, Outcome::Later),
        };
        if let Err(error) = homing.ask(home, PutSlice { chunk, slice }).await {
            return waits_or_drops(home, error, Outcome::Away);
        }
        if let Err(error) = homing.ask(holder, RemoveSlice { hash }).await {
            tracing::debug!(%chunk, index, node = %holder, %error, "a handed-off copy stays where it was");
        }
        Outcome::Done
    }
}

/// Whether this node's store holds `slice` (one it cannot tell about is
/// taken as held: the hand-off then asks as for any other holder).
async fn holds(store: &Arc<LocalStore>, slice: Option<&Hash>) -> bool // PA
{
    let Some(hash) = slice.copied() else { return false };
    let store = store.clone();
    match blocking(move || store.holds_slices(&[hash])).await {
        Ok(Ok(held)) => held.first().copied().unwrap_or(false),
        Ok(Err(error)) | Err(error) => {
            tracing::debug!(slice = %hash, %error, "a held slice could not be looked up");
            true
        }
    }
}

/// A node unreachable or out of space may take the hint later (`wait`);
/// one that answered with another error would answer so again.
fn waits_or_drops(node: NodeId, error: TransportError, wait: Outcome) -> Outcome // PA
{
    match error {
        TransportError::Unreachable { .. } | TransportError::StorageFull { .. } => {
            tracing::debug!(%node, %error, "hint not handed over yet");
            wait
        }
        error => {
            tracing::warn!(%node, %error, "a hint was refused and is dropped");
            Outcome::Drop
        }
    }
}
