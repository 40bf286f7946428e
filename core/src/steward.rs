//! The layout steward: what each node does, every few seconds, to keep the
//! layout true and the data where it says. It
//! - enters this node in the layout (joining) the first time;
//! - exchanges layouts with every node in service and every node gossip
//!   knows, and records that this node has taken the result in;
//! - marks gone a node the failure detector has seen down for longer than
//!   `dead_after` (marks from several nodes merge to the same result);
//! - moves this node on: joining → active once every node writes to it and
//!   an anti-entropy round begun after that compared every partition it
//!   replicates with every replica and exchanged all differences; draining
//!   → gone once, in the same way, its partitions are level with their new
//!   replicas and a move pass left nothing here;
//! - in its own loop (`move_if_needed`), moves the slices and manifests
//!   this node holds to the homes the layout gives them, after each change
//!   of placement: a slice is removed here only once its home has stored
//!   it, and not while the home would then be the only holder of two of
//!   the chunk's slices (one of them still on its way to its own home).
//!
//! No key is needed: slices move sealed, manifests as they are.

use std::collections::HashMap;

use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::anti_entropy::{AntiEntropy, SyncReport};
use crate::cluster::{ClusterView, OfferChunk, PutSlice, ShareLayout, Transport};
use crate::hash::Hash;
use crate::homing::{Found, Homing, SlicePlace};
use crate::layout::{Layout, NodeState, Place};
use crate::model::NodeId;
use crate::pace::Pace;
use crate::placement;
use crate::store::{blocking, LocalStore, PassKind, StoreResult};
use crate::world::World;

/// Records looked at per page while moving data.
const PAGE: usize = 500;

/// How long a layout exchange waits for one node.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the steward behaves.
#[derive(Debug, Clone)]
pub struct StewardSettings {
    /// A node seen down for longer than this is marked gone.
    pub dead_after: Duration,
    /// Whether this node may become active without having heard another
    /// node's layout: a node started alone, with no address to join.
    pub may_stand_alone: bool,
    /// Bytes of slices moved per second at most, so clients keep their speed.
    pub move_bytes_per_sec: u64,
    /// This node's zone and capacity, given to the layout when it joins.
    pub place: Place,
}

impl Default for StewardSettings {
    fn default() -> Self // A
    {
        StewardSettings {
            dead_after: Duration::from_secs(30 * 60),
            may_stand_alone: true,
            move_bytes_per_sec: 64 << 20,
            place: Place::default(),
        }
    }
}

/// What one move pass did and left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveReport {
    pub slices_moved: usize,
    pub manifests_moved: usize,
    /// Slices and manifests that belong elsewhere and could not be moved
    /// yet (their home is down or failed), and the slices' bytes.
    pub slices_left: usize,
    pub manifests_left: usize,
    pub bytes_left: u64,
}

impl MoveReport {
    pub fn complete(&self) -> bool // A
    {
        self.slices_left == 0 && self.manifests_left == 0
    }
}

/// What one step of the steward did.
#[derive(Debug, Clone, Default)]
pub struct TendReport {
    /// This node's state after the step.
    pub state: Option<NodeState>,
    pub marked_gone: Vec<NodeId>,
    /// The anti-entropy round run to move this node on, if one was.
    pub round: Option<SyncReport>,
}

pub struct Steward<T, V> {
    transport: Arc<T>,
    view: Arc<V>,
    store: Arc<LocalStore>,
    syncer: AntiEntropy<T, V>,
    settings: StewardSettings,
    world: World,
    /// Whether another node's layout has reached this one.
    heard_from_peer: AtomicBool,
    /// The placement the last complete move pass was for.
    moved_for: Mutex<Option<Hash>>,
}

impl<T: Transport, V: ClusterView> Steward<T, V> {
    /// The steward of the node whose store is `store`.
    pub fn new(transport: Arc<T>, view: Arc<V>, store: Arc<LocalStore>, settings: StewardSettings) -> Self // A
    {
        let syncer = AntiEntropy::new(transport.clone(), view.clone());
        Steward {
            transport,
            view,
            store,
            syncer,
            settings,
            world: World::real(),
            heard_from_peer: AtomicBool::new(false),
            moved_for: Mutex::new(None),
        }
    }

    /// The same steward on another clock.
    pub fn with_world(self, world: World) -> Self // A
    {
        Steward { world, ..self }
    }

    fn homing(&self) -> Homing<'_, T> // A
    {
        Homing::new(self.transport.as_ref(), self.view.local_node(), Some(&self.store))
    }

    fn now_ms(&self) -> u64 // A
    {
        self.world.now_nanos() / 1_000_000
    }

    /// Change this node's layout on the blocking pool (it may fsync).
    async fn update(&self, change: impl FnOnce(&mut Layout) -> bool + Send + 'static) -> Option<Arc<Layout>> // PA
    {
        let store = self.store.clone();
        match crate::compute::blocking(move || store.update_layout(change)).await {
            Ok(Ok(layout)) => Some(layout),
            Ok(Err(error)) => {
                tracing::warn!(%error, "layout not stored");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "layout update stopped");
                None
            }
        }
    }

    /// The layout as this node holds it.
    pub fn layout(&self) -> Arc<Layout> // A
    {
        self.store.layout()
    }

    /// Move `node` to `state` in this node's layout, and tell every node in
    /// service at once (an operator's drain or remove).
    pub async fn set_state(&self, node: NodeId, state: NodeState) -> Option<Arc<Layout>> // PA
    {
        let (local, now) = (self.view.local_node(), self.now_ms());
        let layout = self.update(move |layout| layout.advance(node, state, local, now)).await?;
        tracing::info!(node = %node, state = state.as_str(), "layout changed");
        self.exchange(&[]).await;
        Some(layout)
    }

    /// Send this node's layout to every node in service and to `peers`, and
    /// merge each answer; whether any node answered.
    pub async fn exchange(&self, peers: &[NodeId]) -> bool // PA
    {
        let local = self.view.local_node();
        let layout = self.store.layout();
        let mut targets = layout.in_service();
        for peer in peers {
            if !targets.contains(peer) {
                targets.push(*peer);
            }
        }
        targets.retain(|node| *node != local && !self.view.is_down(*node));
        let message = ShareLayout { layout: (*layout).clone() };
        // Each answer is merged as it comes, and a node that does not answer
        // soon (down but not yet seen so) holds up no other.
        let mut calls: FuturesUnordered<_> = targets
            .iter()
            .map(|node| tokio::time::timeout(EXCHANGE_TIMEOUT, self.transport.ask(*node, message.clone())))
            .collect();
        let mut heard = false;
        while let Some(answer) = calls.next().await {
            if let Ok(Ok(theirs)) = answer {
                heard = true;
                self.heard_from_peer.store(true, Ordering::Relaxed);
                self.update(move |layout| layout.merge(&theirs)).await;
            }
        }
        heard
    }

    /// Whether another node's layout has reached this one since it started.
    pub fn has_heard_from_peer(&self) -> bool // A
    {
        self.heard_from_peer.load(Ordering::Relaxed)
    }

    /// One step (see the module's summary), moving no data (`move_data`
    /// does, in its own loop). `peers` are the nodes gossip knows alive,
    /// which a joining node may not have in its layout yet.
    pub async fn tend(&self, peers: &[NodeId]) -> TendReport // PA
    {
        let local = self.view.local_node();
        let now = self.now_ms();
        let mut report = TendReport::default();
        let place = self.settings.place.clone();
        self.update(move |layout| {
            layout.state_of(&local).is_none()
                && layout.set_place(local, place) | layout.advance(local, NodeState::Joining, local, now)
        })
        .await;
        let before = self.store.layout();
        self.exchange(peers).await;
        self.update(move |layout| layout.acknowledge(local)).await;
        report.marked_gone = self.mark_dead_nodes().await;

        let layout = self.store.layout();
        match layout.state_of(&local) {
            Some(NodeState::Joining) if layout.settled(&local) && self.may_go_active() => {
                let round = self.syncer.round().await;
                if round.complete() {
                    self.update(move |layout| layout.advance(local, NodeState::Active, local, now)).await;
                    tracing::info!("this node holds its share of the metadata and is active");
                }
                report.round = Some(round);
            }
            Some(NodeState::Draining) if layout.settled(&local) => {
                let round = self.syncer.round().await;
                let moved_off = self.last_move_complete_for(&layout);
                if round.complete() && moved_off {
                    self.update(move |layout| layout.advance(local, NodeState::Gone, local, now)).await;
                    tracing::info!("this node has handed over all it held and left the layout");
                }
                report.round = Some(round);
            }
            Some(NodeState::Gone) if before.state_of(&local) != Some(NodeState::Gone) => {
                tracing::error!(
                    "this node is gone from the layout: the cluster no longer counts on its data; \
                     start it on an empty data directory to join again"
                );
            }
            _ => {}
        }
        let after = self.store.layout();
        if after.nodes.iter().any(|(node, entry)| before.state_of(node) != Some(entry.state)) {
            self.exchange(&[]).await;
        }
        report.state = self.store.layout().state_of(&local);
        report
    }

    /// Run a move pass if placement changed since the last complete one, or
    /// while this node drains; `None` when none was due.
    pub async fn move_if_needed(&self) -> Option<MoveReport> // PA
    {
        let layout = self.store.layout();
        let draining = layout.state_of(&self.view.local_node()) == Some(NodeState::Draining);
        if !draining && self.last_move_complete_for(&layout) {
            return None;
        }
        let placement = placement_key(&layout);
        let moved = self.move_data(&layout).await;
        if moved.complete() {
            *self.moved_for.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(placement);
        }
        Some(moved)
    }

    /// Whether a move pass for the layout's current placement has
    /// completed, leaving nothing here that belongs elsewhere.
    fn last_move_complete_for(&self, layout: &Layout) -> bool // PA
    {
        *self.moved_for.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) == Some(placement_key(layout))
    }

    fn may_go_active(&self) -> bool // A
    {
        self.settings.may_stand_alone || self.heard_from_peer.load(Ordering::Relaxed)
    }

    /// Mark gone every node in service the failure detector has seen down
    /// for longer than `dead_after`; only while this node sees a majority
    /// of the nodes in service up (itself included), so a node cut off from
    /// the others does not mark them all gone, and never the last node new
    /// data could be placed on.
    async fn mark_dead_nodes(&self) -> Vec<NodeId> // PA
    {
        let local = self.view.local_node();
        let now = self.now_ms();
        let layout = self.store.layout();
        let in_service = layout.in_service();
        let up = in_service.iter().filter(|node| **node == local || !self.view.is_down(**node)).count();
        if up * 2 <= in_service.len() {
            return Vec::new();
        }
        let mut placing = layout.placing();
        let mut dead = Vec::new();
        for node in in_service.into_iter().filter(|node| *node != local) {
            if self.view.down_for(node).is_none_or(|down| down < self.settings.dead_after) {
                continue;
            }
            placing.retain(|other| *other != node);
            if placing.is_empty() {
                break;
            }
            dead.push(node);
        }
        for node in &dead {
            let node = *node;
            self.update(move |layout| layout.advance(node, NodeState::Gone, local, now)).await;
            tracing::warn!(node = %node, after = ?self.settings.dead_after, "node down too long: marked gone");
        }
        dead
    }

    /// Move what this node holds and the layout puts elsewhere: manifests
    /// of chunks it no longer replicates go to the replicas that lack one
    /// (and leave here once they all hold one), slices go to their homes
    /// (and leave here once stored there). Manifests move only while a node
    /// joins or drains, when garbage collection waits: a manifest moved
    /// while a free is under way could come back with its slices gone.
    pub async fn move_data(&self, layout: &Layout) -> MoveReport // PA
    {
        let mut report = MoveReport::default();
        if !layout.is_moving() {
            // Nothing to move: no node stopped replicating a partition.
        } else if let Err(error) = self.move_manifests(layout, &mut report).await {
            tracing::warn!(%error, "manifests not moved");
            report.manifests_left += 1;
        }
        let moved = self.move_slices(layout, &mut report).await;
        self.store.set_pass(PassKind::Move, None);
        if let Err(error) = moved {
            tracing::warn!(%error, "slices not moved");
            report.slices_left += 1;
        }
        self.store.set_move_backlog(report.slices_left as u64, report.bytes_left);
        if report.slices_moved > 0 || report.manifests_moved > 0 || !report.complete() {
            tracing::info!(
                slices = report.slices_moved,
                manifests = report.manifests_moved,
                slices_left = report.slices_left,
                manifests_left = report.manifests_left,
                "data moved to where the layout puts it"
            );
        }
        report
    }

    async fn move_manifests(&self, layout: &Layout, report: &mut MoveReport) -> StoreResult<()> // PA
    {
        let local = self.view.local_node();
        let mut after = None;
        loop {
            let store = self.store.clone();
            let page = blocking(move || store.unclaimed_chunks(u64::MAX, after, PAGE)).await??;
            let Some(last) = page.last().copied() else { break };
            after = Some(last);
            for id in page {
                let replicas = layout.hash_replicas(&id).placing;
                if replicas.contains(&local) {
                    continue;
                }
                if replicas.is_empty() {
                    report.manifests_left += 1;
                    continue;
                }
                let store = self.store.clone();
                let Some(chunk) = blocking(move || store.get_chunk(&id)).await?? else { continue };
                let offers = replicas.iter().map(|node| self.transport.ask(*node, OfferChunk { chunk: chunk.clone() }));
                let held = futures::future::join_all(offers).await.iter().filter(|answer| answer.is_ok()).count();
                if held < replicas.len() {
                    report.manifests_left += 1;
                    continue;
                }
                let store = self.store.clone();
                blocking(move || store.drop_moved_chunk(&id)).await??;
                report.manifests_moved += 1;
            }
        }
        Ok(())
    }

    async fn move_slices(&self, layout: &Layout, report: &mut MoveReport) -> StoreResult<()> // PA
    {
        let local = self.view.local_node();
        let placing = layout.placing_members();
        let mut manifests: HashMap<Hash, Found> = HashMap::new();
        let mut after = None;
        let mut pace = Pace::new(self.settings.move_bytes_per_sec);
        loop {
            let store = self.store.clone();
            let page = blocking(move || store.slices_stored_before(u64::MAX, after, PAGE)).await??;
            // One per page: a home that does not answer is not asked again
            // for this page, and is asked again on the next.
            let homing = self.homing();
            let Some(last) = page.last() else { break };
            let last_slice = last.0;
            after = Some(last_slice);
            for (slice, chunk) in page {
                if let std::collections::hash_map::Entry::Vacant(entry) = manifests.entry(chunk) {
                    entry.insert(homing.find_manifest(&layout.hash_replicas(&chunk).all(), chunk, None).await);
                }
                let manifest = match manifests.get(&chunk) {
                    Some(Found::Manifest(manifest)) => manifest,
                    // No manifest lists it: a write cut short; garbage collection's.
                    Some(Found::Nowhere) => continue,
                    // Not known now: it stays, and the pass is not complete.
                    _ => {
                        report.slices_left += 1;
                        continue;
                    }
                };
                let Some(index) = manifest.slices.iter().position(|hash| *hash == slice) else { continue };
                let homes = placement::slice_homes(&chunk, manifest.slices.len(), &placing);
                let Some(home) = homes.get(index).copied() else {
                    report.slices_left += 1;
                    continue;
                };
                if home == local {
                    continue;
                }
                let store = self.store.clone();
                let Some(sealed) = blocking(move || store.get_slice(&slice)).await?? else { continue };
                let len = sealed.payload.len() as u64;
                if self.view.is_down(home) {
                    report.slices_left += 1;
                    report.bytes_left += len;
                    continue;
                }
                let data = Some(manifest.erasure.data as usize);
                let place = SlicePlace { chunk, slices: &manifest.slices, index, homes: &homes, data };
                match homing.ask(home, PutSlice { chunk, slice: sealed }).await {
                    Ok(_) if homing.home_doubles_up(&place).await.unwrap_or(true) => {
                        // Ours stays until the home's other slice has moved on.
                        report.slices_left += 1;
                        report.bytes_left += len;
                        pace.spent(len).await;
                    }
                    Ok(_) => {
                        let store = self.store.clone();
                        blocking(move || store.remove_slice(&slice)).await??;
                        report.slices_moved += 1;
                        pace.spent(len).await;
                    }
                    Err(error) => {
                        tracing::debug!(%slice, home = %home, %error, "slice not moved");
                        report.slices_left += 1;
                        report.bytes_left += len;
                    }
                }
            }
            pace.reached(&last_slice);
            self.store.set_pass(PassKind::Move, Some(pace.progress()));
            // Chunks seen on earlier pages rarely come back: keep memory bounded.
            if manifests.len() > 4 * PAGE {
                manifests.clear();
            }
        }
        Ok(())
    }
}

/// What placement depends on: the nodes data is placed on and the nodes
/// that hold it, each with its zone and capacity.
fn placement_key(layout: &Layout) -> Hash // PA
{
    let mut bytes = Vec::new();
    for nodes in [layout.placing(), layout.holding()] {
        for member in layout.members(&nodes) {
            bytes.extend_from_slice(member.node.as_bytes());
            bytes.extend_from_slice(&member.zone.to_le_bytes());
            bytes.extend_from_slice(&member.weight.to_le_bytes());
        }
        bytes.push(0);
    }
    Hash::of(&bytes)
}
