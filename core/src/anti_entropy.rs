//! Anti-entropy: each round, a node compares the sync trees of the
//! metadata partitions it replicates with every other replica of them, and
//! the two exchange the entries one lacks or holds in another version
//! (`sync`). When replicas agree, a round costs one message per peer,
//! carrying a root per shared partition. It runs on every node, gateway or
//! storage-only, and needs no key: it moves blobs, manifests, tombstones
//! and rows as they are stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::cluster::{
    ClusterView, GetSyncItems, PutSyncItems, Stored, SyncEntries, SyncLeaves, SyncRoots, Transport, TransportError,
};
use crate::hash::Hash;
use crate::model::NodeId;
use crate::sync::Entry;

/// Items asked for or sent in one message.
const ITEM_BATCH: usize = 128;

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Peers compared with.
    pub peers: usize,
    /// Peers that could not be reached (or failed part way).
    pub unreachable: usize,
    /// Peers left out because the failure detector sees them down.
    pub peers_down: usize,
    /// Partitions that differed from some replica at the round's start,
    /// or could not be compared with one.
    pub partitions_unsynced: usize,
    /// (peer, partition) pairs whose roots differed when compared.
    pub partitions_differing: usize,
    pub items_received: usize,
    pub items_sent: usize,
}

impl SyncReport {
    /// Whether every replica of every partition this node holds was
    /// compared, and every difference exchanged both ways: whatever any
    /// replica held when the round began, this node now holds, and it has
    /// handed every replica what it held.
    pub fn complete(&self) -> bool // PA
    {
        self.unreachable == 0 && self.peers_down == 0
    }
}

/// The sync trees of partitions that differed, as two replicas saw them.
type Roots = BTreeMap<u8, Hash>;

pub struct AntiEntropy<T, V> {
    transport: Arc<T>,
    view: Arc<V>,
}

impl<T: Transport, V: ClusterView> AntiEntropy<T, V> {
    pub fn new(transport: Arc<T>, view: Arc<V>) -> Self // A
    {
        AntiEntropy { transport, view }
    }

    /// The partitions this node replicates, by the other replica that holds
    /// each, and the peers left for a later round as seen down. While the
    /// layout moves, a partition's replicas are those of both its sets, so
    /// data flows from the nodes holding it to the nodes taking it over.
    fn shared_partitions(&self) -> (BTreeMap<NodeId, Vec<u8>>, BTreeSet<NodeId>) // PA
    {
        let local = self.view.local_node();
        let layout = self.view.layout();
        let mut shared: BTreeMap<NodeId, Vec<u8>> = BTreeMap::new();
        let mut down = BTreeSet::new();
        for partition in 0..=u8::MAX {
            let replicas = layout.partition_replicas(partition).all();
            if !replicas.contains(&local) {
                continue;
            }
            for peer in replicas.into_iter().filter(|node| *node != local) {
                if self.view.is_down(peer) {
                    down.insert(peer);
                } else {
                    shared.entry(peer).or_default().push(partition);
                }
            }
        }
        (shared, down)
    }

    /// One round with every peer that shares a partition with this node.
    pub async fn round(&self) -> SyncReport // PA
    {
        let mut report = SyncReport::default();
        let mut differing = BTreeSet::new();
        let (shared, down) = self.shared_partitions();
        report.peers_down = down.len();
        for (peer, partitions) in shared {
            report.peers += 1;
            match self.sync_with(peer, partitions.clone(), &mut report).await {
                Ok(found) => differing.extend(found),
                Err(error) => {
                    // Not known to be in step: an exchange cut short counts
                    // every partition it was to compare.
                    report.unreachable += 1;
                    differing.extend(partitions);
                    tracing::debug!(peer = %peer, %error, "anti-entropy with a peer stopped");
                }
            }
        }
        // Partitions that differed from some replica at this round's start,
        // or could not be compared with one that answers gossip: 0 once the
        // replicas this node can reach agree.
        report.partitions_unsynced = differing.len();
        if let Some(store) = self.transport.local_store(self.view.local_node()) {
            store.set_partitions_unsynced(differing.len());
        }
        if report.items_received > 0 || report.items_sent > 0 {
            tracing::info!(
                differing = report.partitions_differing,
                received = report.items_received,
                sent = report.items_sent,
                "replicas brought up to date"
            );
        }
        report
    }

    /// Compare and exchange every partition shared with `peer`; returns the
    /// partitions whose roots differed.
    async fn sync_with(&self, peer: NodeId, partitions: Vec<u8>, report: &mut SyncReport) -> SyncResult // PA
    {
        let local = self.view.local_node();
        let theirs: Roots =
            self.transport.ask(peer, SyncRoots { partitions: partitions.clone() }).await?.into_iter().collect();
        let ours: Roots = self.transport.ask(local, SyncRoots { partitions }).await?.into_iter().collect();
        let differing: Vec<u8> =
            ours.iter().filter(|(partition, root)| theirs.get(partition) != Some(root)).map(|(p, _)| *p).collect();
        report.partitions_differing += differing.len();
        for &partition in &differing {
            self.sync_partition(peer, partition, report).await?;
        }
        Ok(differing)
    }

    /// Descend into the leaves of one partition that differ and exchange
    /// their entries both ways. Manifests go only to the nodes the layout
    /// places the partition on: a node leaving it hands its manifests to
    /// them in the move pass and drops them, and must not be sent them back.
    async fn sync_partition(&self, peer: NodeId, partition: u8, report: &mut SyncReport) -> Result<(), TransportError> // PA
    {
        let local = self.view.local_node();
        let placing = self.view.layout().partition_replicas(partition).placing;
        let takes_manifests = |node: NodeId| placing.is_empty() || placing.contains(&node);
        let theirs = self.transport.ask(peer, SyncLeaves { partition }).await?;
        let ours = self.transport.ask(local, SyncLeaves { partition }).await?;
        for (leaf, (their_leaf, our_leaf)) in theirs.iter().zip(ours.iter()).enumerate() {
            if their_leaf == our_leaf {
                continue;
            }
            let leaf = leaf as u8;
            let their_entries = self.transport.ask(peer, SyncEntries { partition, leaf }).await?;
            let our_entries = self.transport.ask(local, SyncEntries { partition, leaf }).await?;
            let wanted = missing_from(&our_entries, &their_entries);
            let offered = missing_from(&their_entries, &our_entries);
            report.items_received += self.copy(peer, local, partition, wanted, takes_manifests(local)).await?;
            report.items_sent += self.copy(local, peer, partition, offered, takes_manifests(peer)).await?;
        }
        Ok(())
    }

    /// Copy the items behind `ids` from one node to another, in batches,
    /// manifests only when `manifests`.
    async fn copy(&self, from: NodeId, to: NodeId, partition: u8, ids: Vec<Hash>, manifests: bool) -> Copied // PA
    {
        let mut copied = 0;
        for batch in ids.chunks(ITEM_BATCH) {
            let items = self.transport.ask(from, GetSyncItems { partition, ids: batch.to_vec(), manifests }).await?;
            if items.is_empty() {
                continue;
            }
            copied += items.len();
            let Stored = self.transport.ask(to, PutSyncItems { items }).await?;
        }
        Ok(copied)
    }
}

/// The ids in `other` whose entry `held` lacks or holds with another digest.
fn missing_from(held: &[Entry], other: &[Entry]) -> Vec<Hash> // PA
{
    let held: HashMap<Hash, Hash> = held.iter().map(|entry| (entry.id, entry.digest)).collect();
    other.iter().filter(|entry| held.get(&entry.id) != Some(&entry.digest)).map(|entry| entry.id).collect()
}

type SyncResult = Result<Vec<u8>, TransportError>;
type Copied = Result<usize, TransportError>;
