//! Taking a slice to its home without leaving two of a chunk's slices on
//! one node alone. Shared by the move pass (`steward`), which moves the
//! slices a change of placement sent elsewhere, and the hand-off of slices
//! a writer had to store on another node than their home
//! (`engine::handoff`). Either removes a copy only once its home holds the
//! slice and no other slice of the chunk depends on the home alone.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cluster::{GetSlice, HoldsSlices, PutSlice, Transport};
use crate::hash::Hash;
use crate::model::NodeId;
use crate::store::{blocking, LocalStore};

/// A slice's place among its chunk's: the chunk, its slices in position
/// order, the slice's position, and the homes the layout gives them.
pub struct SlicePlace<'a> {
    pub chunk: Hash,
    pub slices: &'a [Hash],
    pub index: usize,
    pub homes: &'a [NodeId],
}

/// The node doing the moving: its id and store, and how it reaches others.
pub struct Homing<'a, T> {
    pub transport: &'a T,
    pub local: NodeId,
    pub store: &'a Arc<LocalStore>,
}

impl<T: Transport> Homing<'_, T> {
    /// Whether the slice's home, once it alone holds the slice, would also
    /// be the only holder of another of the chunk's slices that is not at
    /// its own home, on its way there: two slices of one chunk on one node
    /// alone, so that losing that node would cost the chunk two. A move
    /// pass meets this while a change of placement moves a chunk's slices
    /// in more than one step (a slice arrives before the home's old one has
    /// left), and a hand-off when a writer doubled slices up on one home
    /// while their own homes were away. A slice on its way that its own
    /// home lacks is copied there from the home first, so nothing waits on
    /// another node's pass. Unknown counts as yes: keeping a copy is always
    /// safe.
    pub async fn home_doubles_up(&self, place: &SlicePlace<'_>) -> bool // PA
    {
        let Some(home) = place.homes.get(place.index).copied() else { return true };
        let passing: Vec<usize> = (0..place.slices.len())
            .filter(|position| *position != place.index && place.homes.get(*position).is_some_and(|o| *o != home))
            .collect();
        if passing.is_empty() {
            return false;
        }
        let hashes: Vec<Hash> = passing.iter().map(|position| place.slices[*position]).collect();
        let Ok(at_home) = self.transport.ask(home, HoldsSlices { hashes }).await else { return true };
        // Each slice on its way that the home holds must be held at its own home as well.
        let mut elsewhere: BTreeMap<NodeId, Vec<Hash>> = BTreeMap::new();
        for (position, held) in passing.into_iter().zip(at_home) {
            if held {
                elsewhere.entry(place.homes[position]).or_default().push(place.slices[position]);
            }
        }
        for (node, hashes) in elsewhere {
            let held = if node == self.local {
                let store = self.store.clone();
                let asked = hashes.clone();
                blocking(move || store.holds_slices(&asked)).await.ok().and_then(Result::ok)
            } else {
                self.transport.ask(node, HoldsSlices { hashes: hashes.clone() }).await.ok()
            };
            let Some(held) = held else { return true };
            // One not there yet is copied there from the home now: the
            // home's own move pass may not come (its placement is done).
            for (hash, held) in hashes.into_iter().zip(held) {
                if !held && !self.copy_slice(place.chunk, hash, home, node).await {
                    return true;
                }
            }
        }
        false
    }

    /// Copy slice `hash` of `chunk` from node `from` to node `to`; whether
    /// `to` stored it.
    pub async fn copy_slice(&self, chunk: Hash, hash: Hash, from: NodeId, to: NodeId) -> bool // PA
    {
        let Ok(Some(slice)) = self.transport.ask(from, GetSlice { hash }).await else { return false };
        slice.hash == hash && self.transport.ask(to, PutSlice { chunk, slice }).await.is_ok()
    }
}
