//! Placement: rendezvous (highest-random-weight) hashing of chunk ids and
//! metadata partitions onto cluster members. Every node computes the same
//! ranking from the same member list, with no coordination.
//!
//! Members are weighed by their capacity and spread over their zones. A
//! member's draw for an item is a hash; with capacities, the draw is turned
//! into weighted rendezvous' score (−ln u / capacity, lowest first) with
//! integer arithmetic only, so nodes on any machine rank alike (the same
//! bits, not merely close ones). Members of
//! equal capacity rank by their draws alone, as before capacities existed.
//! A chunk's slices and a partition's replicas go to as many zones as the
//! cluster has: no zone takes more than its even share (rounded up) while
//! another zone has a member free, so losing a whole zone costs a chunk at
//! most that share.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::hash::Hash;
use crate::model::{Erasure, NodeId};

/// Number of metadata partitions.
pub const PARTITIONS: usize = 256;

/// A node as placement weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub node: NodeId,
    /// Its zone, as a number (the hash of the zone's name).
    pub zone: u64,
    /// Its capacity (bytes, or any unit shared by the members); at least 1.
    pub weight: u64,
}

/// Members of one zone and equal capacity: a cluster with neither set, or a
/// test's.
pub fn alike(nodes: &[NodeId]) -> Vec<Member> // PA
{
    nodes.iter().map(|node| Member { node: *node, zone: 0, weight: 1 }).collect()
}

/// One member's draw for an item: the hash, and, when capacities differ,
/// −log2 of it as a fraction of 2^64, in 32.32 fixed point.
#[derive(Debug, Clone, Copy)]
struct Draw {
    hash: u64,
    distance: u64,
    weight: u64,
}

impl Draw {
    fn new(hash: u64, weight: u64, weighed: bool) -> Self // PA
    {
        let distance = if weighed { (64u64 << 32) - log2_fixed(hash.max(1)) } else { 0 };
        Draw { hash, distance, weight: weight.max(1) }
    }

    /// Stronger first: the lower distance per unit of weight, then the
    /// higher hash (which alone decides among equal weights).
    fn order(&self, other: &Draw) -> Ordering // PA
    {
        let mine = u128::from(self.distance) * u128::from(other.weight);
        let theirs = u128::from(other.distance) * u128::from(self.weight);
        mine.cmp(&theirs).then(other.hash.cmp(&self.hash))
    }
}

/// log2(x) for x ≥ 1 in 32.32 fixed point, by repeated squaring: the same
/// bits on every machine (within one of the true value), unlike a float
/// logarithm.
fn log2_fixed(x: u64) -> u64 // PA
{
    let x = x.max(1);
    let shift = x.leading_zeros();
    let whole = u64::from(63 - shift);
    // The mantissa in [1, 2) as 1.63 fixed point.
    let mut y = u128::from(x << shift);
    let mut fraction = 0u64;
    for bit in (0..32).rev() {
        y = (y * y) >> 63;
        if y >= 1u128 << 64 {
            y >>= 1;
            fraction |= 1 << bit;
        }
    }
    (whole << 32) | fraction
}

/// Whether capacities differ among `members` (else draws alone decide).
fn weighed(members: &[Member]) -> bool // PA
{
    members.windows(2).any(|pair| pair[0].weight != pair[1].weight)
}

/// Members sorted by node, each once.
fn distinct(members: &[Member]) -> Vec<Member> // PA
{
    let mut members = members.to_vec();
    members.sort_unstable_by_key(|member| member.node);
    members.dedup_by_key(|member| member.node);
    members
}

/// The zones `members` span, in order.
fn zones_of(members: &[Member]) -> Vec<u64> // PA
{
    let mut zones: Vec<u64> = members.iter().map(|member| member.zone).collect();
    zones.sort_unstable();
    zones.dedup();
    zones
}

/// Members ranked for `item`, best first.
pub fn rank(item: &Hash, members: &[Member]) -> Vec<Member> // PA
{
    let members = distinct(members);
    let weighed = weighed(&members);
    let mut drawn: Vec<(Draw, Member)> = members
        .iter()
        .map(|member| {
            let hash = Hash::of_parts(&[b"ouroboros place", item.as_bytes(), member.node.as_bytes()]).prefix_u64();
            (Draw::new(hash, member.weight, weighed), *member)
        })
        .collect();
    // Ties (practically impossible) break on node id so every node agrees.
    drawn.sort_unstable_by(|a, b| a.0.order(&b.0).then(b.1.node.cmp(&a.1.node)));
    drawn.into_iter().map(|(_, member)| member).collect()
}

/// The home of each of the `count` slices of chunk `id`, position by
/// position: the member drawn strongest for that position among the
/// members without a slice yet (once every member has one, a second round
/// begins), in a zone below its share. Each position has its own draws, so
/// a node that joins takes over only the positions it comes first for
/// among the members still free, and most slices keep their home; one
/// ranking shared by all positions would shift every position after the
/// newcomer's.
pub fn slice_homes(id: &Hash, count: usize, members: &[Member]) -> Vec<NodeId> // PA
{
    let members = distinct(members);
    if members.is_empty() {
        return Vec::new();
    }
    let weighed = weighed(&members);
    // Every (draw, position, member) triple, strongest first; a position
    // takes the strongest member still free in this round.
    let mut pairs: Vec<(Draw, usize, usize)> = Vec::with_capacity(count * members.len());
    for position in 0..count {
        let key = (position as u32).to_le_bytes();
        for (index, member) in members.iter().enumerate() {
            let hash = Hash::of_parts(&[b"ouroboros slice", id.as_bytes(), &key, member.node.as_bytes()]).prefix_u64();
            pairs.push((Draw::new(hash, member.weight, weighed), position, index));
        }
    }
    // Members are in node order, so their index breaks ties as the node would.
    pairs.sort_unstable_by(|a, b| a.0.order(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)));
    let zones = zones_of(&members);
    let mut share = count.div_ceil(zones.len());
    let mut in_zone = vec![0usize; zones.len()];
    let zone_at: Vec<usize> = members.iter().map(|member| zones.binary_search(&member.zone).unwrap_or(0)).collect();
    let mut homes: Vec<Option<NodeId>> = vec![None; count];
    let mut taken = vec![false; members.len()];
    let (mut placed, mut taken_count) = (0, 0);
    while placed < count {
        for (_, position, index) in &pairs {
            if homes[*position].is_none() && !taken[*index] && in_zone[zone_at[*index]] < share {
                homes[*position] = Some(members[*index].node);
                taken[*index] = true;
                in_zone[zone_at[*index]] += 1;
                placed += 1;
                taken_count += 1;
                if taken_count == members.len() {
                    break;
                }
            }
        }
        if taken_count == members.len() {
            // Every member holds one: the next round begins.
            taken.fill(false);
            taken_count = 0;
        } else if placed < count {
            // Members are free only in zones at their share: raise it.
            share += 1;
        }
    }
    homes.into_iter().flatten().collect()
}

/// Where slice `index` of a chunk goes, or is looked for: its home first;
/// then the nodes of `others` that are no home of the chunk's, in the
/// home's zone; then such nodes in a zone that one more slice leaves
/// within its share; then the homes of the positions after it in the
/// home's zone; then the other nodes no home; then the other homes. Nodes
/// seen down go last, so nobody waits on them first. A slice handed off to
/// a node holding no other slice of the chunk costs nothing if that node is
/// lost; one handed to another home doubles the chunk up there until it is
/// taken home; one handed to a zone past its share costs the chunk one
/// more slice if that zone is lost. With one zone the order is the home,
/// the nodes no home, then the homes after it.
pub fn handoff_order(index: usize, homes: &[NodeId], others: &[Member], down: impl Fn(NodeId) -> bool) -> Vec<NodeId> // PA
{
    let n = homes.len();
    let mut order: Vec<NodeId> = Vec::with_capacity(n + others.len());
    let Some(home) = homes.get(index % n.max(1)).copied() else { return order };
    let zone_of = |node: NodeId| others.iter().find(|member| member.node == node).map(|member| member.zone);
    let home_zones: Vec<Option<u64>> = homes.iter().map(|other| zone_of(*other)).collect();
    let home_zone = home_zones[index % n];
    let share = n.div_ceil(zones_of(others).len().max(1));
    let mut homes_in: BTreeMap<u64, usize> = BTreeMap::new();
    for zone in home_zones.iter().flatten() {
        *homes_in.entry(*zone).or_default() += 1;
    }
    let spare: Vec<&Member> = others.iter().filter(|member| !homes.contains(&member.node)).collect();
    let later_homes: Vec<NodeId> = (1..n).map(|step| homes[(index + step) % n]).collect();
    let near = spare.iter().filter(|member| Some(member.zone) == home_zone).map(|member| member.node);
    let below_share = |member: &&&Member| homes_in.get(&member.zone).copied().unwrap_or(0) < share;
    let roomy = spare.iter().filter(below_share).map(|member| member.node);
    let homes_near =
        (1..n).map(|step| (index + step) % n).filter(|at| home_zones[*at] == home_zone).map(|at| homes[at]);
    let rest = spare.iter().map(|member| member.node);
    let candidates = near.chain(roomy).chain(homes_near).chain(rest).chain(later_homes.iter().copied());
    for node in std::iter::once(home).chain(candidates) {
        if !order.contains(&node) {
            order.push(node);
        }
    }
    let (up, away): (Vec<NodeId>, Vec<NodeId>) = order.into_iter().partition(|node| !down(*node));
    up.into_iter().chain(away).collect()
}

/// The metadata partition of an object key.
pub fn partition_of(bucket: &str, key: &str) -> u8 // PA
{
    Hash::of_parts(&[bucket.as_bytes(), &[0], key.as_bytes()]).0[0]
}

/// The metadata partition of a content-addressed record (chunk manifest, blob).
pub fn partition_of_hash(hash: &Hash) -> u8 // PA
{
    hash.0[0]
}

/// How many replicas hold each metadata partition: 2m+1 for the parity m
/// the cluster's size codes chunks with, capped at the cluster size. With
/// majority quorums, metadata then survives the m lost nodes the slices
/// survive, and a read quorum always meets the last write's (W + R > N).
///
/// | nodes | coding | replicas | write quorum | read quorum | nodes that may be lost |
/// |---|---|---|---|---|---|
/// | 1 | 1+0 | 1 | 1 | 1 | 0 |
/// | 2 | 1+1 | 2 | 2 | 1 | 0 for writes, 1 for reads |
/// | 3 | 2+1 | 3 | 2 | 2 | 1 |
/// | 4 | 2+2 | 4 | 3 | 2 | 1 for writes, 2 for reads |
/// | 5 | 2+2 | 5 | 3 | 3 | 2 |
/// | 6+ | 4+2 | 5 | 3 | 3 | 2 |
pub fn replication_factor(members: usize) -> usize // PA
{
    let parity = Erasure::for_cluster(members).parity as usize;
    (2 * parity + 1).clamp(1, members.max(1))
}

/// The replicas of a metadata partition, best first: ranked for the
/// partition, each zone up to its share while another zone has a member
/// left.
pub fn partition_replicas(partition: u8, members: &[Member]) -> Vec<NodeId> // PA
{
    let item = Hash::of_parts(&[b"ouroboros partition", &[partition]]);
    let ranked = rank(&item, members);
    let wanted = replication_factor(ranked.len()).min(ranked.len());
    let mut share = wanted.div_ceil(zones_of(&ranked).len().max(1));
    let mut chosen = vec![false; ranked.len()];
    let mut in_zone: BTreeMap<u64, usize> = BTreeMap::new();
    let mut count = 0;
    while count < wanted {
        for (index, member) in ranked.iter().enumerate() {
            let zone = in_zone.entry(member.zone).or_default();
            if count < wanted && !chosen[index] && *zone < share {
                chosen[index] = true;
                *zone += 1;
                count += 1;
            }
        }
        share += 1;
    }
    ranked.iter().zip(chosen).filter(|(_, chosen)| *chosen).map(|(member, _)| member.node).collect()
}

/// Acknowledgements a metadata write needs: a majority of the replicas.
pub fn write_quorum(replicas: usize) -> usize // PA
{
    replicas / 2 + 1
}

/// Answers a metadata read needs so that it meets every acknowledged
/// write: R = N − W + 1, so R + W > N.
pub fn read_quorum(replicas: usize) -> usize // PA
{
    (replicas + 1).saturating_sub(write_quorum(replicas)).max(1).min(replicas.max(1))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn nodes(n: u8) -> Vec<NodeId> // A
    {
        (0..n).map(|i| Hash::of(&[i])).collect()
    }

    fn ids(members: &[Member]) -> Vec<NodeId> // A
    {
        members.iter().map(|member| member.node).collect()
    }

    /// Placement as it was before zones and capacities: members of one
    /// zone and equal capacity must still land exactly there, or every
    /// cluster would move its data on upgrade.
    fn slice_homes_before_zones(id: &Hash, count: usize, members: &[NodeId]) -> Vec<NodeId> // A
    {
        let mut nodes = members.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        let mut homes: Vec<Option<NodeId>> = vec![None; count];
        let mut pairs: Vec<(u64, usize, NodeId)> = Vec::new();
        for position in 0..count {
            let key = (position as u32).to_le_bytes();
            for node in &nodes {
                let weight = Hash::of_parts(&[b"ouroboros slice", id.as_bytes(), &key, node.as_bytes()]).prefix_u64();
                pairs.push((weight, position, *node));
            }
        }
        pairs.sort_unstable_by(|a, b| b.cmp(a));
        let mut placed = 0;
        while placed < count {
            let mut taken: Vec<NodeId> = Vec::new();
            for (_, position, node) in &pairs {
                if homes[*position].is_none() && !taken.contains(node) {
                    homes[*position] = Some(*node);
                    taken.push(*node);
                    placed += 1;
                    if taken.len() == nodes.len() {
                        break;
                    }
                }
            }
        }
        homes.into_iter().flatten().collect()
    }

    fn rank_before_zones(item: &Hash, members: &[NodeId]) -> Vec<NodeId> // A
    {
        let mut weighted: Vec<(u64, NodeId)> = members
            .iter()
            .map(|node| (Hash::of_parts(&[b"ouroboros place", item.as_bytes(), node.as_bytes()]).prefix_u64(), *node))
            .collect();
        weighted.sort_unstable_by(|a, b| b.cmp(a));
        weighted.into_iter().map(|(_, node)| node).collect()
    }

    #[test]
    fn members_alike_are_placed_exactly_as_before_zones() // A
    {
        for size in [1u8, 2, 3, 5, 6, 7, 12] {
            let plain = nodes(size);
            // Equal capacities other than the default weigh alike too.
            let big: Vec<Member> = plain.iter().map(|node| Member { node: *node, zone: 9, weight: 4 << 40 }).collect();
            for i in 0..300u32 {
                let item = Hash::of(&i.to_le_bytes());
                for count in [3, 4, 6] {
                    let before = slice_homes_before_zones(&item, count, &plain);
                    assert_eq!(slice_homes(&item, count, &alike(&plain)), before, "{size} nodes, {count} slices");
                    assert_eq!(slice_homes(&item, count, &big), before);
                }
                assert_eq!(ids(&rank(&item, &alike(&plain))), rank_before_zones(&item, &plain));
            }
        }
    }

    #[test]
    fn the_fixed_point_logarithm_is_exact() // A
    {
        assert_eq!(log2_fixed(1), 0);
        assert_eq!(log2_fixed(2), 1 << 32);
        assert_eq!(log2_fixed(1 << 40), 40 << 32);
        // log2(3) = 1.5849625007211562...; 0.5849625007 * 2^32 = 2512394810.9;
        // each squaring truncates, so the last bit may be one low.
        let three = log2_fixed(3);
        assert!(three.abs_diff((1 << 32) + 2_512_394_810) <= 1, "log2(3) = {three}");
        assert_eq!(log2_fixed(0), 0, "0 counts as 1");
        assert!(log2_fixed(u64::MAX) < 64 << 32);
        let mut last = 0;
        for x in (1..u64::MAX).step_by((u64::MAX / 5000) as usize).chain([u64::MAX - 1, u64::MAX]) {
            let log = log2_fixed(x);
            assert!(log >= last, "log2 is not monotonic at {x}");
            last = log;
        }
    }

    #[test]
    fn members_of_equal_capacity_keep_their_order_among_others_of_another() // A
    {
        let plain = nodes(6);
        let mut mixed = alike(&plain);
        mixed[0].weight = 5;
        mixed[3].weight = 2;
        for i in 0..500u32 {
            let item = Hash::of(&i.to_le_bytes());
            let before: Vec<NodeId> = rank_before_zones(&item, &plain)
                .into_iter()
                .filter(|node| mixed.iter().any(|m| m.node == *node && m.weight == 1))
                .collect();
            let now: Vec<NodeId> = rank(&item, &mixed).into_iter().filter(|m| m.weight == 1).map(|m| m.node).collect();
            assert_eq!(now, before, "members of one capacity changed order when others weigh more");
        }
    }

    #[test]
    fn ranking_is_a_permutation_independent_of_member_order() // A
    {
        let members = alike(&nodes(6));
        let mut reversed = members.clone();
        reversed.reverse();
        for i in 0..100u32 {
            let item = Hash::of(&i.to_le_bytes());
            let ranked = ids(&rank(&item, &members));
            assert_eq!(ranked, ids(&rank(&item, &reversed)));
            let mut sorted = ranked.clone();
            sorted.sort();
            let mut expected = ids(&members);
            expected.sort();
            assert_eq!(sorted, expected);
        }
    }

    #[test]
    fn adding_a_node_moves_only_its_share() // A
    {
        let before = alike(&nodes(5));
        let after = alike(&nodes(6));
        let moved = (0..2000u32)
            .filter(|i| {
                let item = Hash::of(&i.to_le_bytes());
                rank(&item, &before)[0] != rank(&item, &after)[0]
            })
            .count();
        // Ideal is 1/6 of the items; allow generous slack for randomness.
        assert!(moved > 200 && moved < 500, "{moved} of 2000 moved");
    }

    #[test]
    fn slices_spread_over_distinct_nodes_and_a_join_moves_few() // A
    {
        let before = alike(&nodes(6));
        let after = alike(&nodes(7));
        let (mut moved, mut total) = (0, 0);
        for i in 0..2000u32 {
            let chunk = Hash::of(&i.to_le_bytes());
            let homes = slice_homes(&chunk, 6, &before);
            let distinct: BTreeSet<_> = homes.iter().collect();
            assert_eq!(distinct.len(), 6, "two slices of one chunk share a node while others have none");
            let again = slice_homes(&chunk, 6, &after);
            moved += homes.iter().zip(&again).filter(|(a, b)| a != b).count();
            total += 6;
        }
        // The newcomer's fair share is 6 of 7 nodes' slices over 7: 1/7 of
        // all slices. A ranking shared by the positions moves about half.
        let share = moved as f64 / total as f64;
        assert!(share < 0.25, "{:.1}% of the slices moved when a seventh node joined", share * 100.0);
        // More slices than nodes: every node takes one before any takes two.
        let homes = slice_homes(&Hash::of(b"x"), 6, &alike(&nodes(5)));
        assert_eq!(homes.len(), 6);
        assert_eq!(homes.iter().collect::<BTreeSet<_>>().len(), 5);
    }

    /// Seven nodes in zones of 3, 2 and 2.
    fn three_zones() -> Vec<Member> // A
    {
        nodes(7).into_iter().zip([1, 1, 1, 2, 2, 3, 3]).map(|(node, zone)| Member { node, zone, weight: 1 }).collect()
    }

    #[test]
    fn a_chunk_spreads_its_slices_over_the_zones() // A
    {
        let members = three_zones();
        let zone_of = |node: &NodeId| members.iter().find(|m| m.node == *node).map(|m| m.zone);
        let mut in_big_zone = 0;
        for i in 0..2000u32 {
            let chunk = Hash::of(&i.to_le_bytes());
            let homes = slice_homes(&chunk, 6, &members);
            assert_eq!(homes.iter().collect::<BTreeSet<_>>().len(), 6, "two slices on one node");
            for zone in 1..=3 {
                let here = homes.iter().filter(|node| zone_of(node) == Some(zone)).count();
                // 4+2 over three zones: losing any one zone costs two slices, the parity.
                assert_eq!(here, 2, "chunk {i}: {here} slices in zone {zone}");
            }
            in_big_zone += homes.iter().filter(|node| zone_of(node) == Some(1)).count();
        }
        assert_eq!(in_big_zone, 4000);
        // Two zones for three slices: two in one, one in the other.
        let two: Vec<Member> = three_zones().into_iter().filter(|m| m.zone != 3).collect();
        for i in 0..200u32 {
            let homes = slice_homes(&Hash::of(&i.to_le_bytes()), 3, &two);
            let in_one = homes.iter().filter(|node| two.iter().any(|m| m.node == **node && m.zone == 1)).count();
            assert!((1..=2).contains(&in_one), "{in_one} of 3 slices in one of two zones");
        }
        // One zone with every node: as if there were no zones.
        let lone: Vec<Member> = three_zones().into_iter().filter(|m| m.zone == 1).collect();
        let homes = slice_homes(&Hash::of(b"y"), 3, &lone);
        assert_eq!(homes.iter().collect::<BTreeSet<_>>().len(), 3);
    }

    #[test]
    fn a_node_takes_slices_in_proportion_to_its_capacity() // A
    {
        // Twelve nodes, one with three times the others' capacity.
        let mut members = alike(&nodes(12));
        members[0].weight = 3;
        let (mut first, mut slices) = (0, vec![0usize; 12]);
        for i in 0..6000u32 {
            let item = Hash::of(&i.to_le_bytes());
            first += usize::from(rank(&item, &members)[0].node == members[0].node);
            for home in slice_homes(&item, 2, &members) {
                slices[members.iter().position(|m| m.node == home).expect("a member")] += 1;
            }
        }
        // Weighted rendezvous: 3 of 14 parts come first to the big node.
        let share = first as f64 / 6000.0;
        assert!((0.18..0.25).contains(&share), "the big node ranks first for {:.1}%", share * 100.0);
        let others = slices[1..].iter().sum::<usize>() as f64 / 11.0;
        let ratio = slices[0] as f64 / others;
        assert!((2.2..3.3).contains(&ratio), "the big node holds {ratio:.2} times the slices of another");
    }

    #[test]
    fn replicas_and_quorums_follow_cluster_size() // A
    {
        assert!(partition_replicas(7, &[]).is_empty());
        assert!(slice_homes(&Hash::of(b"z"), 6, &[]).is_empty());
        for (size, replicas) in [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 5), (20, 5)] {
            assert_eq!(partition_replicas(7, &alike(&nodes(size))).len(), replicas, "{size} nodes");
        }
        assert_eq!(write_quorum(1), 1);
        assert_eq!(write_quorum(2), 2);
        assert_eq!(write_quorum(3), 2);
        assert_eq!(write_quorum(5), 3);
        assert_eq!([1, 2, 3, 4, 5].map(read_quorum), [1, 1, 2, 2, 3]);
        for n in 1..=9 {
            assert!(read_quorum(n) + write_quorum(n) > n, "{n} replicas: a read must meet every write");
        }
        // Metadata survives as many lost nodes as the coding does, from 3 nodes on.
        for n in [3, 5, 6, 9] {
            let replicas = replication_factor(n);
            let parity = Erasure::for_cluster(n).parity as usize;
            assert!(replicas - write_quorum(replicas) >= parity, "{n} nodes");
        }
        // Members alike: the partition's replicas are its first five ranked.
        let plain = nodes(9);
        for partition in 0..=u8::MAX {
            let item = Hash::of_parts(&[b"ouroboros partition", &[partition]]);
            assert_eq!(partition_replicas(partition, &alike(&plain)), rank_before_zones(&item, &plain)[..5]);
        }
    }

    #[test]
    fn a_slice_is_handed_off_to_a_node_without_one_before_another_home() // A
    {
        let all = nodes(5);
        let members = alike(&all);
        let homes = vec![all[0], all[1], all[2]];
        let up = |_| false;
        assert_eq!(handoff_order(1, &homes, &members, up), vec![all[1], all[3], all[4], all[2], all[0]]);
        let down = |node| node == all[1] || node == all[3];
        assert_eq!(handoff_order(1, &homes, &members, down), vec![all[4], all[2], all[0], all[1], all[3]]);
        // No spare node: the next homes, as before.
        assert_eq!(handoff_order(2, &homes, &alike(&homes), up), vec![all[2], all[0], all[1]]);
        assert!(handoff_order(0, &[], &members, up).is_empty());
    }

    #[test]
    fn a_slice_is_handed_off_within_its_zone_or_to_a_zone_below_its_share() // A
    {
        // Zones: 1 = {0, 1}, 2 = {2, 3}, 3 = {4, 5, 6}; homes 0-5, node 6 spare.
        let all = nodes(7);
        let zones = [1, 1, 2, 2, 3, 3, 3];
        let members: Vec<Member> =
            all.iter().zip(zones).map(|(node, zone)| Member { node: *node, zone, weight: 1 }).collect();
        let homes: Vec<NodeId> = all[..6].to_vec();
        let up = |_| false;
        // Zone 1 has no spare and zone 3 is at its share (two homes): the
        // other home of zone 1 first (the zone keeps two slices), then the
        // spare of zone 3, then the homes after.
        assert_eq!(
            handoff_order(0, &homes, &members, up),
            vec![all[0], all[1], all[6], all[2], all[3], all[4], all[5]]
        );
        // A home of zone 3 hands off to the spare of its own zone first.
        assert_eq!(
            handoff_order(4, &homes, &members, up),
            vec![all[4], all[6], all[5], all[0], all[1], all[2], all[3]]
        );
        // Zone 1 with one home (positions 0 and 1 at nodes 0 and 2): its
        // spare node 1 is in the home's zone; zone 2's spare is below share.
        let homes = vec![all[0], all[2], all[4], all[5]];
        let order = handoff_order(0, &homes, &members, up);
        assert_eq!(order[..3], [all[0], all[1], all[3]], "{order:?}");
    }
}
