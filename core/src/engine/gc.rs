//! Garbage collection: chunks that no blob and no table row references,
//! and that no write claimed lately, lose their manifests on every replica
//! and then their slices; slices that no manifest lists are removed once
//! old enough. Nothing is freed unless every node that might reference it
//! answered.

use std::collections::{BTreeMap, HashSet};

use super::calls::Query;
use super::{Engine, EngineResult, GcReport};
use crate::cluster::{
    ClusterView, FreeChunk, GetChunk, Message, Referenced, RemoveSlice, SlicesStoredBefore, Stored, Transport,
    UnclaimedChunks,
};
use crate::hash::Hash;
use crate::model::NodeId;
use crate::placement;
use crate::store::Freed;

impl<T: Transport, V: ClusterView> Engine<T, V> {
    /// One garbage-collection pass over the chunks whose manifests this node
    /// is the first replica of: a chunk that no blob and no upload part
    /// references anywhere, and that no write claimed since
    /// `claimed_before`, loses its manifest on every replica and then its
    /// slices. Slices are removed only once every replica dropped the
    /// manifest, so a racing write that claimed it on any replica keeps it.
    pub async fn collect_garbage(&self, claimed_before: u64) -> EngineResult<GcReport> // PA
    {
        let local = self.view.local_node();
        let members = self.view.members();
        let mut report = GcReport::default();
        let mut after = None;
        loop {
            let unclaimed = UnclaimedChunks { claimed_before, after, max: 1000 };
            let page = self.ask_local(unclaimed).await?;
            let Some(last) = page.last().copied() else { break };
            after = Some(last);
            let mine: Vec<Hash> =
                page.into_iter().filter(|id| self.hash_replicas(id, &members).first() == Some(&local)).collect();
            if mine.is_empty() {
                continue;
            }
            // Every member must answer: a reference held by a node that is
            // down would otherwise go unseen.
            let query = Query::new("chunk references", members.clone(), Referenced { ids: mine.clone() });
            let referenced: HashSet<Hash> =
                self.ask_every(query).await?.into_iter().flat_map(|(_, referenced)| referenced).collect();
            for id in mine.into_iter().filter(|id| !referenced.contains(id)) {
                match self.free_chunk(&id, claimed_before, &members).await {
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
                "garbage collected"
            );
        }
        Ok(report)
    }

    /// Every slice the manifests of `chunk` list, over all its replicas;
    /// `None` unless every replica answered.
    async fn slices_listed_for(&self, chunk: &Hash, members: &[NodeId]) -> Option<Vec<Hash>> // PA
    {
        let query = Query::new(
            format!("manifest of chunk {chunk}"),
            self.hash_replicas(chunk, members),
            GetChunk { id: *chunk },
        );
        let manifests = self.ask_every(query).await.ok()?;
        Some(manifests.into_iter().filter_map(|(_, manifest)| manifest).flat_map(|m| m.slices).collect())
    }

    /// Remove this node's slices, stored before `stored_before`, that no
    /// replica's manifest of their chunk lists; every replica must answer.
    async fn collect_orphan_slices(&self, stored_before: u64) -> EngineResult<usize> // PA
    {
        let local = self.view.local_node();
        let members = self.view.members();
        let mut removed = 0;
        let mut after = None;
        loop {
            let page = self.ask_local(SlicesStoredBefore { stored_before, after, max: 1000 }).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            let mut listed: BTreeMap<Hash, Vec<Hash>> = BTreeMap::new();
            for (slice, chunk) in page {
                if let std::collections::btree_map::Entry::Vacant(entry) = listed.entry(chunk) {
                    match self.slices_listed_for(&chunk, &members).await {
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

    /// Free one unreferenced chunk; the number of slices removed, or `None`
    /// if a replica kept its manifest.
    async fn free_chunk(&self, id: &Hash, claimed_before: u64, members: &[NodeId]) -> Option<usize> // PA
    {
        let replicas = self.hash_replicas(id, members);
        let calls = replicas.iter().map(|node| self.transport.ask(*node, FreeChunk { id: *id, claimed_before }));
        let mut manifest = None;
        for answer in futures::future::join_all(calls).await {
            match answer {
                Ok(Freed::Freed(chunk)) => manifest = Some(chunk),
                Ok(Freed::Absent) => {}
                Ok(Freed::Claimed) => return None,
                Err(error) => {
                    tracing::warn!(chunk = %id, %error, "chunk kept: a replica did not free it");
                    return None;
                }
            }
        }
        let manifest = manifest?;
        let ranked = placement::rank(id, members);
        let mut removed = 0;
        for (index, slice) in manifest.slices.iter().enumerate() {
            let Some(node) = ranked.get(index % ranked.len().max(1)) else { break };
            match self.transport.ask(*node, RemoveSlice { hash: *slice }).await {
                Ok(Stored) => removed += 1,
                Err(error) => tracing::warn!(chunk = %id, index, %error, "slice not removed"),
            }
        }
        Some(removed)
    }

    /// Ask this node's own store.
    async fn ask_local<M: Message>(&self, message: M) -> EngineResult<M::Answer> // PA
    {
        Ok(self.transport.ask(self.view.local_node(), message).await?)
    }
}
