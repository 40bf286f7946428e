//! Garbage collection: chunks that no blob and no table row references,
//! and that no write claimed lately, lose their manifests and then their
//! slices; slices that no manifest lists are removed once old enough.
//!
//! It goes on while a node is down. References are read from a read quorum
//! of every metadata partition, which meets every acknowledged write of a
//! blob or row; with a member out of reach, only once every member that
//! answers has found its partitions in step with their replicas (so a
//! replica new to a partition holds what it should). A chunk is freed once
//! a write quorum of its manifest replicas dropped the manifest and none
//! had it claimed; the freed sealing's tombstone is then published, and
//! anti-entropy takes it to the replicas that were away, which drop the
//! stale manifest. A write deduplicates against a chunk only when a write
//! quorum holds its manifest, and checks the slices of one that came from
//! another node, so a stale manifest is never enough to reuse a chunk
//! whose slices are gone; readers pass over a manifest whose slices cannot
//! be found. A free that a replica refused is not tried again until the
//! claim that refused it is older than the cutoff (`RefusedFrees`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use super::calls::{keep_hints, partitions_without_quorum, Query};
use super::{Engine, EngineResult, GcReport};
use crate::cluster::{
    ClusterView, FreeChunk, GetChunk, PartitionsUnsynced, Referenced, RemoveSlice, SettleFree, SlicesStoredBefore,
    Stored, Transport, UnclaimedChunks,
};
use crate::hash::Hash;
use crate::hints::Hinted;
use crate::layout::Layout;
use crate::model::NodeId;
use crate::placement;
use crate::store::Freed;
use crate::sync;

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// One garbage-collection pass over the chunks whose manifests this node
    /// holds and is the first replica not seen down of: a chunk that no
    /// blob and no upload part references, and that no write claimed since
    /// `claimed_before`, loses its manifest on a write quorum of its
    /// replicas and then its slices. A replica that had it claimed keeps
    /// the chunk whole.
    pub async fn collect_garbage(&self, claimed_before: u64) -> EngineResult<GcReport> // PA
    {
        let local = self.view.local_node();
        let layout = self.view.layout();
        let mut report = GcReport::default();
        if layout.is_moving() {
            // A chunk's manifests and slices may be on their way to new
            // homes, where a free would miss them.
            tracing::debug!("garbage collection waits for the layout to settle");
            return Ok(report);
        }
        let mut after = None;
        // Whether the answering members are in step, asked once a pass.
        let mut in_step = None;
        self.refused_frees.forget_before(claimed_before);
        loop {
            let unclaimed = UnclaimedChunks { claimed_before, after, max: 1000 };
            let page = self.ask_local(unclaimed).await?;
            let Some(last) = page.last().copied() else { break };
            after = Some(last);
            let mut mine: Vec<Hash> =
                page.into_iter().filter(|id| self.sweeper_of(id, &layout) == Some(local)).collect();
            let before = mine.len();
            mine.retain(|id| !self.refused_frees.holds(id));
            report.chunks_kept += before - mine.len();
            if mine.is_empty() {
                continue;
            }
            let Some(referenced) = self.references_among(&mine, &layout, &mut in_step).await? else {
                report.chunks_kept += mine.len();
                continue;
            };
            for id in mine.into_iter().filter(|id| !referenced.contains(id)) {
                match self.free_chunk(&id, claimed_before, &layout).await {
                    Some(slices) => {
                        report.chunks_freed += 1;
                        report.slices_removed += slices;
                    }
                    None => report.chunks_kept += 1,
                }
            }
        }
        report.orphan_slices_removed = self.collect_orphan_slices(claimed_before).await?;
        if report.chunks_freed > 0 || report.orphan_slices_removed > 0 {
            tracing::info!(
                freed = report.chunks_freed,
                slices = report.slices_removed,
                orphans = report.orphan_slices_removed,
                kept = report.chunks_kept,
                "garbage collected"
            );
        }
        Ok(report)
    }

    /// The node that sweeps a chunk: the first of its manifest replicas that
    /// the failure detector does not see down.
    fn sweeper_of(&self, chunk: &Hash, layout: &Layout) -> Option<NodeId> // PA
    {
        layout.hash_replicas(chunk).holding.into_iter().find(|node| !self.view.is_down(*node))
    }

    /// Which of `ids` a blob or table row references anywhere; `None` when
    /// that cannot be known now (a partition without a read quorum among
    /// the answers, or, with a member out of reach, an answering member
    /// whose partitions may not be in step with their replicas).
    async fn references_among(&self, ids: &[Hash], layout: &Layout, in_step: &mut Option<bool>) -> Referrers // PA
    {
        let members = layout.in_service();
        let query = Query::new("chunk references", members.clone(), Referenced { ids: ids.to_vec() });
        let answers = self.ask_all(query).await?;
        let answered: BTreeSet<NodeId> = answers.iter().map(|(node, _)| *node).collect();
        if answered.len() < members.len() {
            if !partitions_without_quorum(layout, &answered).is_empty() {
                return Ok(None);
            }
            if in_step.is_none() {
                let query = Query::new("anti-entropy state", answered.iter().copied().collect(), PartitionsUnsynced {});
                let states = self.ask_all(query).await?;
                *in_step = Some(states.len() == answered.len() && states.iter().all(|(_, n)| *n == Some(0)));
            }
            if *in_step != Some(true) {
                tracing::debug!("chunks kept: a member is out of reach and replicas are not known to be in step");
                return Ok(None);
            }
        }
        Ok(Some(answers.into_iter().flat_map(|(_, referenced)| referenced).collect()))
    }

    /// Every slice the manifests of `chunk` list, over all its replicas;
    /// `None` unless every replica answered.
    async fn slices_listed_for(&self, chunk: &Hash, layout: &Layout) -> Option<Vec<Hash>> // PA
    {
        let replicas = layout.hash_replicas(chunk).all();
        let query = Query::new(format!("manifest of chunk {chunk}"), replicas, GetChunk { id: *chunk });
        let manifests = self.ask_every(query).await.ok()?;
        Some(manifests.into_iter().filter_map(|(_, manifest)| manifest).flat_map(|m| m.slices).collect())
    }

    /// Remove this node's slices, stored before `stored_before`, that no
    /// replica's manifest of their chunk lists; every replica must answer.
    async fn collect_orphan_slices(&self, stored_before: u64) -> EngineResult<usize> // PA
    {
        let local = self.view.local_node();
        let layout = self.view.layout();
        let mut removed = 0;
        let mut after = None;
        loop {
            let page = self.ask_local(SlicesStoredBefore { stored_before, after, max: 1000 }).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            let mut listed: BTreeMap<Hash, Vec<Hash>> = BTreeMap::new();
            for (slice, chunk) in page {
                if let std::collections::btree_map::Entry::Vacant(entry) = listed.entry(chunk) {
                    match self.slices_listed_for(&chunk, &layout).await {
                        Some(slices) => entry.insert(slices),
                        // A replica did not answer: nothing is removed.
                        None => continue,
                    };
                }
                if listed.get(&chunk).is_some_and(|slices| !slices.contains(&slice)) {
                    match self.transport.ask(local, RemoveSlice { hash: slice }).await {
                        Ok(Stored) => removed += 1,
                        Err(error) => tracing::warn!(%slice, %error, "orphan slice not removed"),
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Free one unreferenced chunk's sealing, in two steps (`FreeChunk`,
    /// then `SettleFree`); the number of slices removed, or `None` if a
    /// replica kept it (claimed, or holding another sealing), too few
    /// dropped it, or its tombstone was published on too few.
    async fn free_chunk(&self, id: &Hash, claimed_before: u64, layout: &Layout) -> Option<usize> // PA
    {
        // The sealing this node holds is the one freed: every replica keeps
        // a tombstone of it (pending until the free settles), and one
        // holding another sealing keeps the chunk.
        let sealing = match self.ask_local(GetChunk { id: *id }).await {
            Ok(Some(held)) => sync::sealing_digest(&held),
            Ok(None) => return None,
            Err(error) => {
                tracing::debug!(chunk = %id, %error, "manifest to free not read");
                return None;
            }
        };
        let replicas = layout.hash_replicas(id).holding;
        let needed = placement::write_quorum(replicas.len());
        let free = FreeChunk { id: *id, claimed_before, sealing };
        let calls = replicas.iter().map(|node| self.transport.ask(*node, free.clone()));
        let mut manifest = None;
        let (mut dropped, mut refused) = (0, false);
        for answer in futures::future::join_all(calls).await {
            match answer {
                Ok(Freed::Freed(chunk)) => {
                    dropped += 1;
                    manifest = Some(chunk);
                }
                Ok(Freed::Absent) => dropped += 1,
                Ok(Freed::Claimed | Freed::OtherSealing) => refused = true,
                Err(error) => tracing::debug!(chunk = %id, %error, "a manifest replica did not answer a free"),
            }
        }
        // The replicas that dropped the manifest keep a pending tombstone:
        // published once the free reached its quorum with no replica
        // refusing, withdrawn otherwise. A replica out of reach gets a hint
        // either way.
        if refused {
            self.refused_frees.record(*id, self.world.now_nanos());
        }
        let freed = !refused && dropped >= needed && manifest.is_some();
        let settle = SettleFree { id: *id, sealing, claimed_before, freed: freed.then(|| self.world.now_nanos()) };
        let published = self.settle_free(&replicas, settle).await;
        let Some(manifest) = manifest.filter(|_| freed) else {
            if !refused {
                tracing::warn!(chunk = %id, dropped, needed, "chunk kept: too few replicas dropped its manifest");
            }
            return None;
        };
        if published < needed {
            // The published tombstones spread by anti-entropy, and the
            // slices go as orphans once no replica lists them.
            tracing::warn!(chunk = %id, published, needed, "slices kept: the freed sealing's tombstone reached too few replicas");
            return None;
        }
        let mut removed = 0;
        let homes = placement::slice_homes(id, manifest.slices.len(), &layout.placing_members());
        for (index, slice) in manifest.slices.iter().enumerate() {
            let Some(node) = homes.get(index) else { break };
            match self.transport.ask(*node, RemoveSlice { hash: *slice }).await {
                Ok(Stored) => removed += 1,
                Err(error) => tracing::warn!(chunk = %id, index, %error, "slice not removed"),
            }
        }
        Some(removed)
    }
}

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// Send a free's settling to every replica; how many stored it. A
    /// replica out of reach gets a hint, so a pending tombstone is
    /// published or withdrawn once it is back.
    async fn settle_free(&self, replicas: &[NodeId], settle: SettleFree) -> usize // PA
    {
        let calls = replicas.iter().map(|node| self.transport.ask(*node, settle.clone()));
        let answers = futures::future::join_all(calls).await;
        let away: Vec<NodeId> = answers.iter().filter_map(|answer| answer.as_ref().err()?.unreachable_node()).collect();
        if let (false, Some(store)) = (away.is_empty(), self.transport.local_store(self.view.local_node())) {
            keep_hints(store, away, Hinted::Write(settle.into()));
        }
        answers.iter().filter(|answer| answer.is_ok()).count()
    }
}

/// Chunks whose free a replica refused (a claim, or another sealing), by
/// when the sweeper was refused. Trying again at once would drop the
/// manifest again on the replicas without the claim (a manifest that came
/// by anti-entropy counts as never claimed), only for anti-entropy to bring
/// it back: every pass would churn the manifest, and the replicas' trees
/// would never be seen in step, until the claim ages past the cutoff. So a
/// refused chunk waits until the cutoff passes the refusal, when any claim
/// that refused it is older than the cutoff too. Kept in memory: a sweeper
/// that restarts tries each once more.
#[derive(Default)]
pub(super) struct RefusedFrees {
    refused_at: Mutex<HashMap<Hash, u64>>,
}

impl RefusedFrees {
    fn record(&self, chunk: Hash, at: u64) // PA
    {
        self.refused_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(chunk, at);
    }

    /// Whether a free of `chunk` was refused after the current cutoff.
    fn holds(&self, chunk: &Hash) -> bool // PA
    {
        self.refused_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains_key(chunk)
    }

    /// Drop the refusals the cutoff `claimed_before` has passed.
    fn forget_before(&self, claimed_before: u64) // PA
    {
        let mut refused = self.refused_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        refused.retain(|_, at| *at >= claimed_before);
    }
}

/// The chunks referenced among those asked about, or `None` when that
/// cannot be known now.
type Referrers = EngineResult<Option<HashSet<Hash>>>;
