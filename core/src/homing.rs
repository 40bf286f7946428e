//! Taking a slice to its home without leaving two of a chunk's slices on
//! one node alone, nor on a node home to both while the chunk is short. Shared by the move pass (`steward`), which moves the
//! slices a change of placement sent elsewhere, and the hand-off of slices
//! a writer had to store on another node than their home
//! (`crate::handoff`). Either removes a copy only once its home holds the
//! slice and no other slice of the chunk depends on the home alone. Repair
//! follows the same rule when it takes a handed-off slice home. Both find
//! a chunk's manifest here (`Homing::find_manifest`) when they need its
//! coding. A node that
//! does not answer is not asked again for the rest of a page or batch, so
//! one unreachable node costs one transport deadline there, not one per
//! slice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::cluster::{GetChunk, GetSlice, HoldsSlices, Message, PutSlice, Transport, TransportError, Unreachable};
use crate::hash::Hash;
use crate::model::{Chunk, NodeId};
use crate::store::{blocking, LocalStore};

/// A slice's place among its chunk's: the chunk, its slices in position
/// order, the slice's position, the homes the layout gives them, and how
/// many of them read the chunk (its k), where the caller knows it.
pub struct SlicePlace<'a> {
    pub chunk: Hash,
    pub slices: &'a [Hash],
    pub index: usize,
    pub homes: &'a [NodeId],
    pub data: Option<usize>,
}

/// What the replicas said about a chunk's manifest.
pub enum Found {
    Manifest(Chunk),
    /// Every replica answered without one (or without one of the sealing asked for).
    Nowhere,
    /// Some replica did not answer.
    Unknown,
}

/// The node doing the moving, for one pass (a page or batch of its work):
/// its id and store (when the transport has it in this process), how it
/// reaches others, and the nodes that did not answer during the pass.
pub struct Homing<'a, T> {
    transport: &'a T,
    local: NodeId,
    store: Option<&'a Arc<LocalStore>>,
    unreachable: Mutex<BTreeSet<NodeId>>,
}

impl<'a, T: Transport> Homing<'a, T> {
    pub fn new(transport: &'a T, local: NodeId, store: Option<&'a Arc<LocalStore>>) -> Self // A
    {
        Homing { transport, local, store, unreachable: Mutex::new(BTreeSet::new()) }
    }

    fn unreachable(&self) -> std::sync::MutexGuard<'_, BTreeSet<NodeId>> // A
    {
        self.unreachable.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A chunk's manifest: this node's, or the first of `replicas` that has
    /// one. With `listing`, only a manifest that lists that slice counts:
    /// two writers racing seal a chunk twice, each sealing with its own
    /// slices, and the manifest that won makes the other's slices orphans
    /// that repair never rebuilds.
    pub async fn find_manifest(&self, replicas: &[NodeId], chunk: Hash, listing: Option<&Hash>) -> Found // PA
    {
        let lists =
            |manifest: &Chunk| manifest.id == chunk && listing.is_none_or(|slice| manifest.slices.contains(slice));
        if let Some(store) = self.store {
            let store = store.clone();
            if let Ok(Ok(Some(manifest))) = blocking(move || store.get_chunk(&chunk)).await {
                if lists(&manifest) {
                    return Found::Manifest(manifest);
                }
            }
        }
        let mut all_answered = true;
        for node in replicas {
            match self.transport.ask(*node, GetChunk { id: chunk }).await {
                Ok(Some(manifest)) if lists(&manifest) => return Found::Manifest(manifest),
                Ok(_) => {}
                Err(_) => all_answered = false,
            }
        }
        if all_answered {
            Found::Nowhere
        } else {
            Found::Unknown
        }
    }

    /// Whether `node` did not answer earlier in this pass.
    pub fn gave_up_on(&self, node: NodeId) -> bool // A
    {
        self.unreachable().contains(&node)
    }

    /// Send `message` to `node`, unless `node` did not answer earlier in
    /// this pass. A node that did not answer within the deadline, or is
    /// seen down, refused the handshake or has no address, is remembered;
    /// a connection that failed is not (a stale pooled connection fails
    /// once and the next one may work).
    pub async fn ask<M: Message>(&self, node: NodeId, message: M) -> Result<M::Answer, TransportError> // PA
    {
        if self.gave_up_on(node) {
            return Err(TransportError::Unreachable { node, cause: Unreachable::EarlierInPass });
        }
        let answer = self.transport.ask(node, message).await;
        if let Err(TransportError::Unreachable { cause, .. }) = &answer {
            if matches!(
                cause,
                Unreachable::TimedOut | Unreachable::SeenDown | Unreachable::Refused | Unreachable::Unknown
            ) {
                self.unreachable().insert(node);
            }
        }
        answer
    }

    /// Whether the slice's home, once it alone holds the slice, would also
    /// be the only holder of another of the chunk's slices that is not at
    /// its own home, on its way there: two slices of one chunk on one node
    /// alone, so that losing that node would cost the chunk two. A move
    /// pass meets this while a change of placement moves a chunk's slices
    /// in more than one step (a slice arrives before the home's old one has
    /// left), and a hand-off when a writer doubled slices up on one home
    /// while their own homes were away. A slice on its way that its own
    /// home lacks is copied there from the home first, so nothing waits on
    /// another node's pass. With fewer nodes than the chunk has slices,
    /// the layout itself makes a home home to two of them; where `data` is
    /// known, a home that holds its other one counts as doubled up too
    /// while the copy alone would keep the chunk readable without the home
    /// (a slice homed elsewhere lost with a node and not rebuilt yet).
    /// Callers that take a slice home in a cluster smaller than its chunk's
    /// slices pass `data`: without it the copy always goes.
    /// Unknown counts as yes: keeping a copy is always safe. An error only
    /// when the home itself did not answer, so that a caller with more for
    /// that home can leave it for later.
    pub async fn home_doubles_up(&self, place: &SlicePlace<'_>) -> Result<bool, TransportError> // PA
    {
        let Some(home) = place.homes.get(place.index).copied() else { return Ok(true) };
        let (shared, passing): (Vec<usize>, Vec<usize>) = (0..place.slices.len())
            .filter(|position| *position != place.index && place.homes.get(*position).is_some())
            .partition(|position| place.homes[*position] == home);
        if passing.is_empty() {
            return Ok(false);
        }
        let hashes: Vec<Hash> = passing.iter().map(|position| place.slices[*position]).collect();
        let at_home = match self.ask(home, HoldsSlices { hashes }).await {
            Ok(held) => held,
            Err(error) if error.unreachable_node().is_some() => return Err(error),
            // It answered, with an error: keep the copy, as for any unknown.
            Err(_) => return Ok(true),
        };
        // Each slice on its way that the home holds must be held at its own home as well.
        let mut elsewhere: BTreeMap<NodeId, Vec<Hash>> = BTreeMap::new();
        for (position, held) in passing.iter().zip(at_home) {
            if held {
                elsewhere.entry(place.homes[*position]).or_default().push(place.slices[*position]);
            }
        }
        for (node, hashes) in elsewhere {
            let held = match self.store.filter(|_| node == self.local) {
                Some(store) => {
                    let (store, asked) = (store.clone(), hashes.clone());
                    blocking(move || store.holds_slices(&asked)).await.ok().and_then(Result::ok)
                }
                None => self.ask(node, HoldsSlices { hashes: hashes.clone() }).await.ok(),
            };
            let Some(held) = held else { return Ok(true) };
            // One not there yet is copied there from the home now: the
            // home's own move pass may not come (its placement is done).
            for (hash, held) in hashes.into_iter().zip(held) {
                if !held && !self.copy_slice(place.chunk, hash, home, node).await {
                    return Ok(true);
                }
            }
        }
        // Fewer nodes than the chunk's slices: the layout makes the home
        // home to another of them too. If it holds that one, losing the
        // home costs the chunk both; while a slice homed elsewhere is
        // missing (its node lost and not rebuilt yet), the copy stays
        // where it is if it alone would keep the chunk readable then.
        let Some(data) = place.data.filter(|_| !shared.is_empty()) else { return Ok(false) };
        let hashes: Vec<Hash> = shared.iter().map(|position| place.slices[*position]).collect();
        match self.ask(home, HoldsSlices { hashes }).await {
            Ok(held) if !held.contains(&true) => Ok(false),
            Ok(_) => {
                let (held, unknown) = self.held_at_homes(place, &passing).await;
                // With every slice homed elsewhere at its home, the home's
                // two slices are the layout's doing, not a move under way.
                let missing = held < passing.len();
                Ok(missing && held < data && held + unknown + 1 >= data)
            }
            Err(error) if error.unreachable_node().is_some() => Err(error),
            Err(_) => Ok(true),
        }
    }

    /// How many of `positions` have their slice at their own home, and of
    /// how many that is not known (a home that did not answer).
    async fn held_at_homes(&self, place: &SlicePlace<'_>, positions: &[usize]) -> (usize, usize) // PA
    {
        let mut by_home: BTreeMap<NodeId, Vec<Hash>> = BTreeMap::new();
        for position in positions {
            if let (Some(home), Some(slice)) = (place.homes.get(*position), place.slices.get(*position)) {
                by_home.entry(*home).or_default().push(*slice);
            }
        }
        let (mut held, mut unknown) = (0, 0);
        for (node, hashes) in by_home {
            let asked = hashes.len();
            let answer = match self.store.filter(|_| node == self.local) {
                Some(store) => {
                    let store = store.clone();
                    blocking(move || store.holds_slices(&hashes)).await.ok().and_then(Result::ok)
                }
                None => self.ask(node, HoldsSlices { hashes }).await.ok(),
            };
            match answer {
                Some(answer) if answer.len() == asked => held += answer.into_iter().filter(|held| *held).count(),
                _ => unknown += asked,
            }
        }
        (held, unknown)
    }

    /// Copy slice `hash` of `chunk` from node `from` to node `to`; whether
    /// `to` stored it.
    pub async fn copy_slice(&self, chunk: Hash, hash: Hash, from: NodeId, to: NodeId) -> bool // PA
    {
        let Ok(Some(slice)) = self.ask(from, GetSlice { hash }).await else { return false };
        slice.hash == hash && self.ask(to, PutSlice { chunk, slice }).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;

    use super::*;
    use crate::cluster::{Call, Request};

    /// A network on which no node answers, counting what it was asked.
    #[derive(Default)]
    struct Silent {
        calls: AtomicUsize,
    }

    impl Transport for Silent {
        fn call(&self, node: NodeId, _request: Request) -> Call // A
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            async move { Err(TransportError::Unreachable { node, cause: Unreachable::TimedOut }) }.boxed()
        }
    }

    #[tokio::test]
    async fn a_home_that_does_not_answer_is_asked_once_per_pass() // A
    {
        let transport = Silent::default();
        let homes: Vec<NodeId> = (1..=3u8).map(|i| Hash::of(&[i])).collect();
        let slices: Vec<Hash> = (10..13u8).map(|i| Hash::of(&[i])).collect();
        let place = SlicePlace { chunk: Hash::of(b"chunk"), slices: &slices, index: 0, homes: &homes, data: Some(2) };
        let homing = Homing::new(&transport, Hash::of(b"local"), None);
        for _ in 0..5 {
            let answer = homing.home_doubles_up(&place).await;
            assert!(matches!(answer, Err(TransportError::Unreachable { .. })), "{answer:?}");
        }
        assert!(!homing.copy_slice(place.chunk, slices[0], homes[0], homes[1]).await);
        assert_eq!(transport.calls.load(Ordering::SeqCst), 1, "a silent home was asked again in one pass");
        // The next pass asks again: the home may be back.
        let next = Homing::new(&transport, Hash::of(b"local"), None);
        assert!(next.home_doubles_up(&place).await.is_err());
        assert_eq!(transport.calls.load(Ordering::SeqCst), 2);
    }
}
