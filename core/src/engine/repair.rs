//! Repair: bringing every chunk back to all its k+m slices on the homes the
//! layout gives them. A gateway checks the chunks it is the repairer of
//! (below), asks
//! each home whether it holds its slice, and for each one missing: takes it
//! home from wherever it was handed off to, or, when no node has it,
//! rebuilds it by Reed-Solomon from any k others and reseals it with the
//! chunk's own key, so it comes out byte for byte as first sealed. The
//! repairer is the first holding replica of the manifest, not seen down,
//! that can open chunks (a gateway: storage-only nodes hold no key) and
//! holds a manifest of the same sealing: replicas may hold different
//! sealings of one chunk (two writers raced), and each sealing's slices
//! are kept whole, as a move pass waits on them. A handed-off copy is
//! removed only under the move pass's rule against doubling a chunk up
//! (`crate::homing`). A home
//! seen down is left alone (its node may come back; once it is marked gone,
//! the layout names another home).
//!
//! Repair also runs while a node joins or drains. A slice missing at its
//! new home may then be on its way there from its old one: a slice some
//! node in service holds is left where it is (the move pass, or the first
//! repair pass after the move, takes it home), unless that node holds
//! another of the chunk's slices too: losing it would cost the chunk two,
//! and a copy a writer handed off there after the node's move pass ran
//! would wait for the move to end. Such a slice is taken home now. Only a
//! slice no node holds is rebuilt (from wherever the others are); not one
//! whose home before the move is seen down, as a home seen down is left
//! alone. A node
//! lost during a move so costs its chunks redundancy only until the next
//! pass after it is marked gone, not until the move ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{compute, Engine, EngineResult};
use crate::cluster::{
    ClusterView, GetChunk, GetSlice, HoldsSealings, HoldsSlices, PutSlice, RemoveSlice, Transport, UnclaimedChunks,
};
use crate::hash::Hash;
use crate::homing::{Homing, SlicePlace};
use crate::layout::Layout;
use crate::model::{Chunk, NodeId, SealedSlice};
use crate::pace::Pace;
use crate::placement;
use crate::seal;
use crate::store::PassKind;
use crate::sync;

/// Chunks looked at per page.
const PAGE: usize = 500;

/// What one repair pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Chunks this node is the repairer of.
    pub chunks_checked: usize,
    /// Of those, chunks that lacked a slice at a home that answered.
    pub chunks_degraded: usize,
    /// Chunks whose homes could not all be asked (down or failing).
    pub chunks_unknown: usize,
    /// Slices taken home from the node they were handed off to, or, while
    /// the layout moves, from a node holding two of the chunk's slices.
    pub slices_taken_home: usize,
    /// Slices rebuilt from others.
    pub slices_rebuilt: usize,
    /// Chunks still short of slices after the pass.
    pub chunks_left_degraded: usize,
}

/// A chunk short of slices: its manifest, the home of each position, the
/// positions whose home lacks its slice, and where a slice on its way home
/// (while the layout moves) is now.
struct Damaged {
    manifest: Chunk,
    homes: Vec<NodeId>,
    lacking: Vec<usize>,
    on_the_way: Holders,
}

/// A repair pass under way: its pace and what it did so far.
struct Pass {
    pace: Pace,
    report: RepairReport,
}

/// Slices rebuilt, in the order asked for.
type Rebuilt = EngineResult<Vec<SealedSlice>>;

/// A slice a home should hold: chunk, position, slice hash.
type Expected = (Hash, usize, Hash);

/// The positions of each chunk whose home lacks its slice.
type Lacking = HashMap<Hash, Vec<usize>>;

/// A node holding each slice, where one does.
type Holders = HashMap<Hash, NodeId>;

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// One repair pass over the chunks whose manifests this node holds and
    /// is the repairer of.
    pub async fn repair_chunks(&self) -> EngineResult<RepairReport> // PA
    {
        let layout = self.view.layout();
        let store = self.transport.local_store(self.view.local_node());
        let mut pass = Pass { pace: Pace::new(self.config.repair_bytes_per_sec), report: RepairReport::default() };
        let walked = self.walk_chunks(&layout, &mut pass).await;
        if let Some(store) = &store {
            store.set_pass(PassKind::Repair, None);
        }
        walked?;
        let report = pass.report;
        if let Some(store) = &store {
            // A chunk with a slice on a node seen down has lost redundancy too.
            store.set_chunks_degraded((report.chunks_left_degraded + report.chunks_unknown) as u64);
        }
        if report.chunks_degraded > 0 {
            tracing::info!(
                checked = report.chunks_checked,
                degraded = report.chunks_degraded,
                taken_home = report.slices_taken_home,
                rebuilt = report.slices_rebuilt,
                left = report.chunks_left_degraded,
                "chunks repaired"
            );
        }
        Ok(report)
    }

    /// Repair the chunks whose manifests this node holds, a page at a time
    /// in id order.
    async fn walk_chunks(&self, layout: &Layout, pass: &mut Pass) -> EngineResult<()> // PA
    {
        let store = self.transport.local_store(self.view.local_node());
        let mut after = None;
        loop {
            let page = self.ask_local(UnclaimedChunks { claimed_before: u64::MAX, after, max: PAGE }).await?;
            let Some(last) = page.last().copied() else { return Ok(()) };
            after = Some(last);
            let mut held = Vec::new();
            for id in page {
                if let Some(manifest) = self.ask_local(GetChunk { id }).await?.filter(|m| m.id == id) {
                    held.push(manifest);
                }
            }
            let manifests = self.repaired_here(layout, held).await;
            pass.report.chunks_checked += manifests.len();
            self.repair_page(layout, manifests, pass).await;
            pass.pace.reached(&last);
            if let Some(store) = &store {
                store.set_pass(PassKind::Repair, Some(pass.pace.progress()));
            }
        }
    }

    /// The manifests of `held` (those this node holds) this node repairs:
    /// those whose holding replicas ranked before it are all seen down,
    /// unable to open chunks, or without a manifest of the same sealing (a
    /// replica new to the partition, or one holding another writer's
    /// sealing, which repairs its own). One question per earlier replica.
    async fn repaired_here(&self, layout: &Layout, held: Vec<Chunk>) -> Vec<Chunk> // PA
    {
        let local = self.view.local_node();
        if !self.view.opens_chunks(local) {
            return Vec::new();
        }
        let mut asked: BTreeMap<NodeId, Vec<(Hash, Hash)>> = BTreeMap::new();
        let mut mine = Vec::new();
        for manifest in held {
            let replicas = layout.hash_replicas(&manifest.id).holding;
            let Some(position) = replicas.iter().position(|node| *node == local) else { continue };
            let sealing = (manifest.id, sync::sealing_digest(&manifest));
            let earlier =
                replicas[..position].iter().filter(|n| !self.view.is_down(**n) && self.view.opens_chunks(**n));
            for node in earlier {
                asked.entry(*node).or_default().push(sealing);
            }
            mine.push((sealing, manifest));
        }
        let mut taken: BTreeSet<(Hash, Hash)> = BTreeSet::new();
        for (node, sealings) in asked {
            match self.transport.ask(node, HoldsSealings { sealings: sealings.clone() }).await {
                Ok(held) => {
                    taken.extend(sealings.iter().zip(held).filter(|(_, held)| *held).map(|(sealing, _)| *sealing))
                }
                // It did not answer: it may still repair them; leave them to it.
                Err(_) => taken.extend(sealings),
            }
        }
        mine.into_iter().filter(|(sealing, _)| !taken.contains(sealing)).map(|(_, manifest)| manifest).collect()
    }

    /// Ask every home about the slices of a page of chunks at once (one
    /// message per node), then repair the chunks that lack some.
    async fn repair_page(&self, layout: &Layout, manifests: Vec<Chunk>, pass: &mut Pass) // PA
    {
        let placing = layout.placing_members();
        let mut expected: BTreeMap<NodeId, Vec<Expected>> = BTreeMap::new();
        let mut homes_of: HashMap<Hash, Vec<NodeId>> = HashMap::new();
        for manifest in &manifests {
            let homes = placement::slice_homes(&manifest.id, manifest.slices.len(), &placing);
            for (index, (slice, home)) in manifest.slices.iter().zip(&homes).enumerate() {
                expected.entry(*home).or_default().push((manifest.id, index, *slice));
            }
            homes_of.insert(manifest.id, homes);
        }
        // One Homing for the page: a home that does not answer here is not
        // asked again as a holder or rebuild source below.
        let store = self.transport.local_store(self.view.local_node());
        let homing = Homing::new(self.transport.as_ref(), self.view.local_node(), store.as_ref());
        let mut missing: Lacking = HashMap::new();
        let mut unknown: HashMap<Hash, bool> = HashMap::new();
        for (node, slices) in expected {
            let hashes = slices.iter().map(|(_, _, slice)| *slice).collect();
            let held = match self.view.is_down(node) {
                true => None,
                false => homing.ask(node, HoldsSlices { hashes }).await.ok(),
            };
            for (position, (chunk, index, _)) in slices.into_iter().enumerate() {
                match held.as_ref().and_then(|held| held.get(position)) {
                    Some(true) => {}
                    Some(false) => missing.entry(chunk).or_default().push(index),
                    None => {
                        unknown.insert(chunk, true);
                    }
                }
            }
        }
        // While the layout moves, a slice missing at its home may be on its
        // way there: one that some node in service holds is left to the move
        // pass (unless that node holds two of the chunk's slices), and where
        // it is now serves to rebuild the others. One whose
        // home before the move is in service but seen down or silent is left
        // alone, as a home seen down is: its node may come back.
        let mut on_the_way = Holders::new();
        if layout.is_moving() && !missing.is_empty() {
            let mut wanted = Vec::new();
            for manifest in &manifests {
                let lacking = missing.get(&manifest.id).into_iter().flatten();
                wanted.extend(lacking.filter_map(|index| manifest.slices.get(*index).copied()));
            }
            on_the_way = self.holders_in_service(layout, &homing, wanted).await;
            let holding = layout.members(&layout.holding());
            let in_service = layout.in_service();
            let away =
                |node: &NodeId| in_service.contains(node) && (self.view.is_down(*node) || homing.gave_up_on(*node));
            for manifest in &manifests {
                let Some(lacking) = missing.get_mut(&manifest.id) else { continue };
                let homes_before = placement::slice_homes(&manifest.id, manifest.slices.len(), &holding);
                let before_away = |index: &usize| homes_before.get(*index).is_some_and(away);
                if lacking.iter().any(before_away) {
                    unknown.insert(manifest.id, true);
                }
                let holder_of = |index: &usize| manifest.slices.get(*index).and_then(|slice| on_the_way.get(slice));
                let homes = homes_of.get(&manifest.id).map(Vec::as_slice).unwrap_or_default();
                let holds = |node: &NodeId| {
                    let held_at_home = (0..homes.len()).filter(|p| homes[*p] == *node && !lacking.contains(p));
                    held_at_home.count() + lacking.iter().filter(|p| holder_of(p) == Some(node)).count()
                };
                let doubled: Vec<usize> =
                    lacking.iter().copied().filter(|p| holder_of(p).is_some_and(|node| holds(node) >= 2)).collect();
                lacking.retain(|index| match holder_of(index) {
                    // Home since the homes were asked (a move pass or a
                    // hand-off took it there meanwhile).
                    Some(holder) if homes.get(*index) == Some(holder) => false,
                    // A node holding two of the chunk's slices costs it two
                    // if lost: those of them not at their homes go home
                    // now, not at the holder's move pass, which may have
                    // run before they arrived (a writer handed one off).
                    Some(_) => doubled.contains(index),
                    None => !before_away(index),
                });
            }
            missing.retain(|_, lacking| !lacking.is_empty());
        }
        pass.report.chunks_unknown += unknown.len();
        for manifest in manifests {
            let Some(lacking) = missing.remove(&manifest.id) else { continue };
            pass.report.chunks_degraded += 1;
            let homes = homes_of.remove(&manifest.id).unwrap_or_default();
            let on_the_way = manifest.slices.iter().filter_map(|s| on_the_way.get(s).map(|n| (*s, *n))).collect();
            let damaged = Damaged { manifest, homes, lacking, on_the_way };
            if !self.repair_chunk(layout, &homing, damaged, pass).await {
                pass.report.chunks_left_degraded += 1;
            }
        }
    }

    /// A node in service holding each of the `wanted` slices, where one
    /// does: every node not seen down is asked (one message each) for the
    /// slices no node asked before it holds.
    async fn holders_in_service(&self, layout: &Layout, homing: &Homing<'_, T>, wanted: Vec<Hash>) -> Holders // PA
    {
        let mut found = Holders::new();
        for node in layout.in_service().into_iter().filter(|node| !self.view.is_down(*node)) {
            let asked: Vec<Hash> = wanted.iter().filter(|slice| !found.contains_key(*slice)).copied().collect();
            if asked.is_empty() {
                break;
            }
            let Ok(held) = homing.ask(node, HoldsSlices { hashes: asked.clone() }).await else { continue };
            found.extend(asked.into_iter().zip(held).filter(|(_, held)| *held).map(|(slice, _)| (slice, node)));
        }
        found
    }

    /// Bring the slices at the lacking positions home; whether all of them
    /// are. The bytes stored count against the repair rate.
    async fn repair_chunk(&self, layout: &Layout, homing: &Homing<'_, T>, damaged: Damaged, pass: &mut Pass) -> bool // PA
    {
        let Damaged { manifest, homes, lacking, mut on_the_way } = damaged;
        let homes = homes.as_slice();
        let id = manifest.id;
        let in_service = layout.members(&layout.in_service());
        let mut still = Vec::new();
        let mut home_silent = false;
        let mut left_short = false;
        // While the layout moves, every node in service was already asked
        // for the lacking slices (`holders_in_service`): a slice lacking
        // here is on a node holding two of the chunk's slices, where
        // `on_the_way` says, or nowhere.
        let moving = layout.is_moving();
        for index in lacking {
            let (home, hash) = (homes[index], manifest.slices[index]);
            // A home that did not answer on this page takes nothing now.
            if homing.gave_up_on(home) {
                home_silent = true;
                continue;
            }
            let holder = on_the_way.get(&hash).copied();
            let elsewhere = match holder {
                Some(holder) => vec![holder],
                None if moving => {
                    still.push(index);
                    continue;
                }
                None => placement::handoff_order(index, homes, &in_service, |node| self.view.is_down(node)),
            };
            let mut taken = false;
            for node in elsewhere.into_iter().filter(|node| *node != home && !self.view.is_down(*node)) {
                let Ok(Some(slice)) = homing.ask(node, GetSlice { hash }).await else { continue };
                let len = slice.payload.len() as u64;
                if slice.hash != hash || homing.ask(home, PutSlice { chunk: id, slice }).await.is_err() {
                    continue;
                }
                pass.pace.spent(len).await;
                // The copy stays while the home would hold two of the chunk's slices alone.
                let data = Some(manifest.erasure.data as usize);
                let place = SlicePlace { chunk: id, slices: &manifest.slices, index, homes, data };
                if homing.home_doubles_up(&place).await.unwrap_or(true) {
                    tracing::debug!(chunk = %id, index, node = %node, "a handed-off copy stays until the home's other slice moves on");
                } else if let Err(error) = homing.ask(node, RemoveSlice { hash }).await {
                    tracing::debug!(chunk = %id, index, %error, "a handed-off copy stays where it was");
                }
                pass.report.slices_taken_home += 1;
                taken = true;
                break;
            }
            match (taken, holder) {
                // Read from its home from now on, should the others be rebuilt.
                (true, Some(_)) => _ = on_the_way.remove(&hash),
                (true, None) => {}
                // Still where it is, and still a source for the others.
                (false, Some(_)) => left_short = true,
                (false, None) => still.push(index),
            }
        }
        if still.is_empty() {
            return !home_silent && !left_short;
        }
        let sources: Vec<NodeId> = (manifest.slices.iter().zip(homes))
            .map(|(slice, home)| on_the_way.get(slice).copied().unwrap_or(*home))
            .collect();
        match self.rebuild(&manifest, &sources, &still, homing).await {
            Ok(rebuilt) => {
                let mut stored = 0;
                for (index, slice) in still.iter().zip(rebuilt) {
                    let len = slice.payload.len() as u64;
                    match homing.ask(homes[*index], PutSlice { chunk: id, slice }).await {
                        Ok(_) => {
                            stored += 1;
                            pass.pace.spent(len).await;
                        }
                        Err(error) => tracing::warn!(chunk = %id, index, %error, "rebuilt slice not stored"),
                    }
                }
                pass.report.slices_rebuilt += stored;
                stored == still.len() && !home_silent && !left_short
            }
            Err(error) => {
                tracing::warn!(chunk = %id, %error, "chunk not rebuilt");
                false
            }
        }
    }

    /// The slices at `wanted` positions, rebuilt from any k others, each
    /// read from its node in `sources` (its home, or where it is on its way
    /// home from).
    async fn rebuild(&self, manifest: &Chunk, sources: &[NodeId], wanted: &[usize], homing: &Homing<'_, T>) -> Rebuilt // PA
    {
        let k = manifest.erasure.data as usize;
        let mut slices: Vec<Option<SealedSlice>> = vec![None; manifest.slices.len()];
        let mut have = 0;
        for (index, hash) in manifest.slices.iter().enumerate() {
            if have == k {
                break;
            }
            if wanted.contains(&index) || self.view.is_down(sources[index]) {
                continue;
            }
            if let Ok(Some(slice)) = homing.ask(sources[index], GetSlice { hash: *hash }).await {
                if slice.hash == *hash {
                    slices[index] = Some(slice);
                    have += 1;
                }
            }
        }
        let (manifest, keys, wanted) = (manifest.clone(), self.keys.clone(), wanted.to_vec());
        Ok(compute(move || seal::rebuild_slices(&manifest, slices, &wanted, &keys)).await??)
    }
}
