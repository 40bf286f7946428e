//! The layout: which nodes hold the cluster's data, and in what state. It
//! is apart from liveness: a node SWIM sees down keeps its place until the
//! layout says it is gone, so a restart moves nothing. Placement reads the
//! layout and never reads liveness.
//!
//! The layout is a small CRDT every node holds whole. Each node's entry
//! only moves forward through its states (joining → active → draining →
//! gone), and merging two layouts keeps, per node, the further state; with
//! the same state, the union of the nodes known to have taken it in. So
//! layouts exchanged in any order, any number of times, end the same.
//!
//! While a node joins or drains, two replica sets exist for a partition:
//! the one over the nodes that hold data now (active and draining), which
//! every acknowledged write has reached, and the one over the nodes new
//! data goes to (active and joining). Writes need a quorum in both, reads a
//! quorum in the first, until the change has settled (`settled`) and the
//! moving node has brought its data level, when its state moves on. A
//! state change not yet known by every node (`settled`) keeps, for writes,
//! the holding set as it was before the change too: a reader that has not
//! heard of the change reads there.
//!
//! Each node also has a place: its zone and its capacity, which placement
//! weighs (`crate::placement`). A node gives its place when it enters the
//! layout, and it stays as given: a change would move data with no change
//! of state to say so.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, Record, RecordKind};
use crate::hash::Hash;
use crate::model::{Erasure, NodeId};
use crate::placement::{self, Member};

/// Where a node is in its life in the cluster. The order is the order it
/// moves in, and a merge keeps the later state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// New data is placed on it; reads do not count on it yet.
    Joining,
    /// Holds data and takes new data.
    Active,
    /// Still holds data, takes no new data; its data moves to the others.
    Draining,
    /// Holds nothing the cluster counts on: left after draining, removed by
    /// an operator, or down for longer than `dead_after`.
    Gone,
}

impl NodeState {
    pub fn as_str(&self) -> &'static str // A
    {
        match self {
            NodeState::Joining => "joining",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Gone => "gone",
        }
    }
}

/// One node's place in the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub state: NodeState,
    /// When the state was entered (UTC milliseconds, for operators).
    pub since_ms: u64,
    /// The nodes whose layout holds this entry in this state: once every
    /// node in service is among them, every write in flight counts with it.
    pub known_by: BTreeSet<NodeId>,
}

impl NodeEntry {
    /// Merge another copy of the same node's entry: the later state wins;
    /// copies of the same state pool what they know.
    fn merge(&mut self, other: &NodeEntry) -> bool // PA
    {
        if other.state > self.state {
            *self = other.clone();
            return true;
        }
        if other.state < self.state {
            return false;
        }
        let before = (self.since_ms, self.known_by.len());
        self.since_ms = self.since_ms.max(other.since_ms);
        self.known_by.extend(other.known_by.iter().copied());
        before != (self.since_ms, self.known_by.len())
    }
}

/// The zone a node is in when it gives none.
pub const DEFAULT_ZONE: &str = "default";
/// The capacity a node has when it gives none: 1 TB.
pub const DEFAULT_CAPACITY: u64 = 1_000_000_000_000;

/// Where a node sits for placement.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Place {
    /// The failure domain it shares with others (a rack, a room, a site):
    /// a chunk's slices and a partition's replicas spread over zones.
    pub zone: String,
    /// The bytes it offers: it takes slices in proportion among nodes of
    /// other capacities.
    pub capacity: u64,
}

impl Default for Place {
    fn default() -> Self // PA
    {
        Place { zone: DEFAULT_ZONE.to_string(), capacity: DEFAULT_CAPACITY }
    }
}

impl Place {
    /// The node as placement weighs it.
    pub fn member(&self, node: NodeId) -> Member // PA
    {
        // Most clusters have one zone: its number is worked out once.
        static DEFAULT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let number = |zone: &str| Hash::of_parts(&[b"ouroboros zone", zone.as_bytes()]).prefix_u64();
        let zone = match self.zone == DEFAULT_ZONE {
            true => *DEFAULT.get_or_init(|| number(DEFAULT_ZONE)),
            false => number(&self.zone),
        };
        Member { node, zone, weight: self.capacity.max(1) }
    }
}

/// The layout: every node that ever held data, with its state and place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub nodes: BTreeMap<NodeId, NodeEntry>,
    /// Each node's place as it gave it on entering; a node without one
    /// (it entered before places existed) has the default place.
    pub places: BTreeMap<NodeId, Place>,
}

/// The layout's first format: states only, every node in the default place.
#[derive(Deserialize)]
struct LayoutV1 {
    nodes: BTreeMap<NodeId, NodeEntry>,
}

impl Record for Layout {
    const KIND: RecordKind = RecordKind::Layout;
    const VERSION: u8 = 2;

    fn decode_older(version: u8, body: &[u8]) -> Result<Self, DecodeError> // PA
    {
        match version {
            1 => {
                let LayoutV1 { nodes } = crate::codec::decode_body(Self::KIND, body)?;
                Ok(Layout { nodes, places: BTreeMap::new() })
            }
            _ => Err(DecodeError::UnknownVersion { kind: Self::KIND, version, newest: Self::VERSION }),
        }
    }
}

/// The replicas of one metadata partition while the layout may be moving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    /// Over the nodes that hold data: reads need a read quorum here.
    pub holding: Vec<NodeId>,
    /// Over the nodes new data goes to; the same as `holding` unless a
    /// node is joining or draining.
    pub placing: Vec<NodeId>,
    /// Over the nodes that held data before the state changes not yet
    /// known by every node: where a reader that has not heard of them
    /// reads. The same as `holding` once every change is known.
    pub held_before: Vec<NodeId>,
}

impl Replicas {
    /// Every node of any set, the holding ones first.
    pub fn all(&self) -> Vec<NodeId> // PA
    {
        let mut all = self.holding.clone();
        for node in self.placing.iter().chain(&self.held_before) {
            if !all.contains(node) {
                all.push(*node);
            }
        }
        all
    }

    /// The sets a write needs a write quorum in: one unless the layout is moving.
    pub fn write_sets(&self) -> Vec<Vec<NodeId>> // PA
    {
        let mut sets = vec![self.holding.clone()];
        for set in [&self.placing, &self.held_before] {
            // A set with no node (a cluster forming) holds nothing to meet.
            if !set.is_empty() && !sets.contains(set) {
                sets.push(set.clone());
            }
        }
        sets
    }
}

impl Layout {
    /// A layout of nodes that are all active and known to each other: a
    /// cluster formed before the layout existed, or a test's.
    pub fn of_active(nodes: &[NodeId]) -> Self // PA
    {
        let known_by: BTreeSet<NodeId> = nodes.iter().copied().collect();
        let entry = NodeEntry { state: NodeState::Active, since_ms: 0, known_by };
        Layout { nodes: nodes.iter().map(|node| (*node, entry.clone())).collect(), places: BTreeMap::new() }
    }

    /// `node`'s place: as it gave it, or the default.
    pub fn place_of(&self, node: &NodeId) -> Place // PA
    {
        self.places.get(node).cloned().unwrap_or_default()
    }

    /// Record `node`'s place, as it gives it on entering; whether anything
    /// changed. Two different places given for one node (a node that
    /// entered twice before hearing itself) merge to the greater, so every
    /// node ends with the same.
    pub fn set_place(&mut self, node: NodeId, place: Place) -> bool // PA
    {
        match self.places.get(&node) {
            Some(held) if *held >= place => false,
            _ => {
                self.places.insert(node, place);
                true
            }
        }
    }

    /// `nodes` as placement weighs them.
    pub fn members(&self, nodes: &[NodeId]) -> Vec<Member> // PA
    {
        let default = Place::default();
        nodes.iter().map(|node| self.places.get(node).unwrap_or(&default).member(*node)).collect()
    }

    /// The nodes new data is placed on, as placement weighs them.
    pub fn placing_members(&self) -> Vec<Member> // PA
    {
        self.members(&self.placing())
    }

    pub fn state_of(&self, node: &NodeId) -> Option<NodeState> // A
    {
        self.nodes.get(node).map(|entry| entry.state)
    }

    /// Merge another node's layout into this one; whether anything changed.
    pub fn merge(&mut self, other: &Layout) -> bool // PA
    {
        let mut changed = false;
        for (node, theirs) in &other.nodes {
            match self.nodes.get_mut(node) {
                Some(ours) => changed |= ours.merge(theirs),
                None => {
                    self.nodes.insert(*node, theirs.clone());
                    changed = true;
                }
            }
        }
        for (node, place) in &other.places {
            changed |= self.set_place(*node, place.clone());
        }
        changed
    }

    /// Move `node` to `state` if that is further than where it is (a node
    /// not in the layout enters it); whether anything changed. The node
    /// making the change is the first to know it.
    pub fn advance(&mut self, node: NodeId, state: NodeState, by: NodeId, now_ms: u64) -> bool // PA
    {
        if self.state_of(&node).is_some_and(|held| held >= state) {
            return false;
        }
        let known_by = BTreeSet::from([by]);
        self.nodes.insert(node, NodeEntry { state, since_ms: now_ms, known_by });
        true
    }

    /// Record that `local` has taken in every entry as it stands; whether
    /// anything changed.
    pub fn acknowledge(&mut self, local: NodeId) -> bool // PA
    {
        let mut changed = false;
        // Gone entries too: until every node knows a node is gone, writers
        // keep the holding set it was in (`before_unsettled`).
        for entry in self.nodes.values_mut() {
            changed |= entry.known_by.insert(local);
        }
        changed
    }

    /// A number that grows with every change of state and every place
    /// given: equal layouts have equal versions, and a merge never lowers it.
    pub fn version(&self) -> u64 // A
    {
        self.nodes.values().map(|entry| entry.state as u64 + 1).sum::<u64>() + self.places.len() as u64
    }

    /// A digest of the whole layout, for comparing two cheaply.
    pub fn digest(&self) -> Hash // PA
    {
        Hash::of(&crate::codec::encode(self))
    }

    fn with_states(&self, states: &[NodeState]) -> Vec<NodeId> // A
    {
        self.nodes.iter().filter(|(_, entry)| states.contains(&entry.state)).map(|(node, _)| *node).collect()
    }

    /// The nodes new data is placed on: active and joining.
    pub fn placing(&self) -> Vec<NodeId> // PA
    {
        self.with_states(&[NodeState::Active, NodeState::Joining])
    }

    /// The nodes that hold the data written so far: active and draining.
    /// While a cluster forms, before any node is active, the joining ones.
    pub fn holding(&self) -> Vec<NodeId> // PA
    {
        let holding = self.with_states(&[NodeState::Active, NodeState::Draining]);
        if holding.is_empty() {
            self.placing()
        } else {
            holding
        }
    }

    /// Every node not gone: the nodes to ask when every node must answer.
    pub fn in_service(&self) -> Vec<NodeId> // PA
    {
        self.with_states(&[NodeState::Joining, NodeState::Active, NodeState::Draining])
    }

    /// Whether a node is joining or draining: data is on its way between
    /// nodes, and two replica sets exist for some partitions.
    pub fn is_moving(&self) -> bool // PA
    {
        self.nodes.values().any(|entry| matches!(entry.state, NodeState::Joining | NodeState::Draining))
    }

    /// Whether every node in service has taken in `node`'s current state.
    pub fn settled(&self, node: &NodeId) -> bool // PA
    {
        let Some(entry) = self.nodes.get(node) else { return false };
        known_by_all(entry, &self.in_service(), &[])
    }

    /// The layout before the state changes not yet known by every node in
    /// service but those in `away` (seen down: they serve no reads): each
    /// such node one state back (a joining one not yet in it, a gone one
    /// draining, so it counts where it held data).
    pub fn before_unsettled(&self, away: &[NodeId]) -> Layout // PA
    {
        let in_service = self.in_service();
        let mut before = Layout { places: self.places.clone(), ..Layout::default() };
        for (node, entry) in &self.nodes {
            let settled = known_by_all(entry, &in_service, away);
            let state = match entry.state {
                _ if settled => Some(entry.state),
                NodeState::Joining => None,
                NodeState::Active => Some(NodeState::Joining),
                NodeState::Draining => Some(NodeState::Active),
                NodeState::Gone => Some(NodeState::Draining),
            };
            if let Some(state) = state {
                before.nodes.insert(*node, NodeEntry { state, ..entry.clone() });
            }
        }
        before
    }

    /// The replicas of a metadata partition.
    pub fn partition_replicas(&self, partition: u8) -> Replicas // PA
    {
        self.partition_replicas_with(partition, &[])
    }

    /// The replicas of a metadata partition, as a writer that sees the
    /// nodes in `away` down counts them: a change those nodes have not
    /// heard of keeps no old holding set for them, as they serve no reads
    /// (a node that comes back takes in the layout before it serves).
    pub fn partition_replicas_with(&self, partition: u8, away: &[NodeId]) -> Replicas // PA
    {
        let placing = placement::partition_replicas(partition, &self.placing_members());
        let holding = placement::partition_replicas(partition, &self.members(&self.holding()));
        // Every change known by all is the common case: no layout to rebuild.
        let in_service = self.in_service();
        let held_before = match self.nodes.values().all(|entry| known_by_all(entry, &in_service, away)) {
            true => holding.clone(),
            false => {
                let before = self.before_unsettled(away);
                placement::partition_replicas(partition, &before.members(&before.holding()))
            }
        };
        Replicas { holding, placing, held_before }
    }

    /// The replicas of a content-addressed record (chunk manifest).
    pub fn hash_replicas(&self, hash: &Hash) -> Replicas // PA
    {
        self.partition_replicas(placement::partition_of_hash(hash))
    }

    /// The coding new chunks get: it follows the number of nodes data is
    /// placed on.
    pub fn erasure(&self) -> Erasure // PA
    {
        Erasure::for_cluster(self.placing().len())
    }
}

/// Whether every node of `in_service` but those in `away` has taken in
/// `entry` as it stands.
fn known_by_all(entry: &NodeEntry, in_service: &[NodeId], away: &[NodeId]) -> bool // PA
{
    in_service.iter().all(|other| entry.known_by.contains(other) || away.contains(other))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u8) -> NodeId // A
    {
        Hash::of(&[n])
    }

    #[test]
    fn merges_end_the_same_in_any_order() // A
    {
        let base = Layout::of_active(&[node(1), node(2), node(3)]);
        let mut a = base.clone();
        a.advance(node(3), NodeState::Gone, node(1), 10);
        let mut b = base.clone();
        b.advance(node(3), NodeState::Draining, node(2), 5);
        b.advance(node(4), NodeState::Joining, node(4), 6);
        b.acknowledge(node(2));
        let mut c = base.clone();
        c.advance(node(3), NodeState::Gone, node(2), 12);
        c.acknowledge(node(2));

        let layouts = [&a, &b, &c];
        let mut results = Vec::new();
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0]] {
            let mut merged = Layout::default();
            for i in order {
                merged.merge(layouts[i]);
                // Idempotent: the same layout twice changes nothing more.
                assert!(!merged.merge(layouts[i]));
            }
            results.push(merged);
        }
        assert!(results.windows(2).all(|pair| pair[0] == pair[1]), "merge order changed the result");
        let merged = &results[0];
        assert_eq!(merged.state_of(&node(3)), Some(NodeState::Gone), "two nodes' gone marks did not merge to gone");
        // Both marks of gone are pooled: nodes 1 and 2 know it.
        assert_eq!(merged.nodes[&node(3)].known_by, BTreeSet::from([node(1), node(2)]));
        assert_eq!(merged.state_of(&node(4)), Some(NodeState::Joining));
        assert!(merged.version() > base.version());
        // Once every node in service has taken the gone mark in, it is settled.
        let mut merged = merged.clone();
        for n in [1, 2, 4] {
            merged.acknowledge(node(n));
        }
        assert!(merged.settled(&node(3)), "a gone mark every node knows is not settled");
        assert_eq!(merged.before_unsettled(&[]), merged);
    }

    #[test]
    fn states_only_move_forward() // A
    {
        let mut layout = Layout::of_active(&[node(1), node(2)]);
        assert!(!layout.advance(node(2), NodeState::Joining, node(1), 1), "an active node went back to joining");
        assert!(layout.advance(node(2), NodeState::Gone, node(1), 1));
        let stale = Layout::of_active(&[node(1), node(2)]);
        assert!(!layout.merge(&stale), "a stale layout revived a gone node");
        assert_eq!(layout.state_of(&node(2)), Some(NodeState::Gone));
    }

    #[test]
    fn a_joining_node_counts_for_writes_and_not_for_reads_until_active() // A
    {
        let mut layout = Layout::of_active(&[node(1), node(2), node(3)]);
        layout.advance(node(4), NodeState::Joining, node(4), 1);
        assert!(!layout.settled(&node(4)));
        for n in 1..=3 {
            layout.acknowledge(node(n));
        }
        assert!(layout.settled(&node(4)));
        assert_eq!(layout.placing().len(), 4);
        assert_eq!(layout.holding().len(), 3);
        let moving = (0..=u8::MAX).filter(|p| {
            let replicas = layout.partition_replicas(*p);
            assert!(!replicas.holding.contains(&node(4)), "reads count on a joining node");
            replicas.holding != replicas.placing
        });
        // Four nodes at 2+2 replicate every partition four times: every
        // partition gains the new node.
        assert_eq!(moving.count(), 256);
        layout.advance(node(4), NodeState::Active, node(4), 2);
        assert!((0..=u8::MAX).all(|p| layout.partition_replicas(p).write_sets().len() == 1));
    }

    #[test]
    fn a_change_not_known_by_all_keeps_the_old_holding_set_for_writes() // A
    {
        let nodes: Vec<NodeId> = (1..=6).map(node).collect();
        let mut layout = Layout::of_active(&nodes[..5]);
        layout.advance(nodes[5], NodeState::Joining, nodes[5], 1);
        for n in &nodes {
            layout.acknowledge(*n);
        }
        let joining = layout.clone();
        // The newcomer turns active; only it knows so far.
        layout.advance(nodes[5], NodeState::Active, nodes[5], 2);
        let mut moved = 0;
        for p in 0..=u8::MAX {
            let stale_read = joining.partition_replicas(p).holding;
            let now = layout.partition_replicas(p);
            assert_eq!(now.held_before, stale_read, "partition {p}");
            assert!(now.write_sets().contains(&stale_read), "a stale reader's set gets no write quorum");
            moved += usize::from(now.holding != stale_read);
        }
        assert!(moved > 0, "no partition changed replicas");
        for n in &nodes {
            layout.acknowledge(*n);
        }
        assert!((0..=u8::MAX).all(|p| layout.partition_replicas(p).write_sets().len() == 1));
    }

    #[test]
    fn a_forming_cluster_reads_from_its_joining_nodes() // A
    {
        let mut layout = Layout::default();
        for n in 1..=3 {
            layout.advance(node(n), NodeState::Joining, node(n), 0);
        }
        assert_eq!(layout.holding(), layout.placing());
        assert_eq!(layout.partition_replicas(9).write_sets().len(), 1);
    }

    #[test]
    fn a_draining_node_keeps_serving_reads_and_takes_no_new_data() // A
    {
        let mut layout = Layout::of_active(&[node(1), node(2), node(3), node(4)]);
        layout.advance(node(4), NodeState::Draining, node(1), 1);
        assert!(!layout.placing().contains(&node(4)));
        assert!(layout.holding().contains(&node(4)));
        assert_eq!(layout.in_service().len(), 4);
        assert_eq!(layout.erasure(), Erasure::for_cluster(3));
    }

    #[test]
    fn places_merge_to_the_same_and_a_layout_of_the_first_format_still_reads() // A
    {
        let mut a = Layout::of_active(&[node(1), node(2)]);
        let mut b = a.clone();
        let east = Place { zone: "east".into(), capacity: 4 };
        assert!(a.set_place(node(1), east.clone()));
        b.set_place(node(1), Place { zone: "east".into(), capacity: 2 });
        b.set_place(node(2), Place::default());
        let (mut ab, mut ba) = (a.clone(), b.clone());
        assert!(ab.merge(&b));
        assert!(ba.merge(&a));
        assert_eq!(ab, ba, "merge order changed the places");
        assert_eq!(ab.place_of(&node(1)), east);
        assert!(!ab.set_place(node(1), Place { zone: "east".into(), capacity: 2 }), "a lesser place replaced one held");
        assert_eq!(ab.place_of(&node(3)), Place::default(), "a node with no place is in the default one");
        assert_eq!(ab.before_unsettled(&[]).places, ab.places, "the layout before a change lost its places");

        // A layout as the first format wrote it: states only.
        #[derive(Serialize)]
        struct First<'a> {
            nodes: &'a BTreeMap<NodeId, NodeEntry>,
        }
        let mut bytes = crate::codec::envelope(RecordKind::Layout, 1).to_vec();
        bytes.extend(postcard::to_allocvec(&First { nodes: &a.nodes }).expect("encode"));
        let read: Layout = crate::codec::decode(&bytes).expect("a first-format layout reads");
        assert_eq!(read.nodes, a.nodes);
        assert!(read.places.is_empty());
        assert_eq!(crate::codec::decode::<Layout>(&crate::codec::encode(&ab)), Ok(ab));
    }

    #[test]
    fn a_partition_spreads_its_replicas_over_the_zones() // A
    {
        // Seven nodes in three zones (3, 2, 2): five replicas, at most two in a zone.
        let nodes: Vec<NodeId> = (1..=7).map(node).collect();
        let mut layout = Layout::of_active(&nodes);
        for (index, zone) in ["a", "a", "a", "b", "b", "c", "c"].iter().enumerate() {
            layout.set_place(nodes[index], Place { zone: zone.to_string(), ..Place::default() });
        }
        for partition in 0..=u8::MAX {
            let replicas = layout.partition_replicas(partition).holding;
            assert_eq!(replicas.len(), 5);
            let in_a = replicas.iter().filter(|n| nodes[..3].contains(n)).count();
            assert!(in_a <= 2, "partition {partition}: {in_a} replicas in zone a");
        }
    }
}
