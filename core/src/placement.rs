//! Placement: rendezvous (highest-random-weight) hashing of chunk ids and
//! metadata partitions onto cluster members. Every node computes the same
//! ranking from the same member list, with no coordination.

use crate::hash::Hash;
use crate::model::{Erasure, NodeId};

/// Number of metadata partitions.
pub const PARTITIONS: usize = 256;

/// Members ranked for `item`, best first. Slice i of a chunk goes to the i-th.
pub fn rank(item: &Hash, members: &[NodeId]) -> Vec<NodeId> // PA
{
    let mut weighted: Vec<(u64, NodeId)> = members
        .iter()
        .map(|node| (Hash::of_parts(&[b"ouroboros place", item.as_bytes(), node.as_bytes()]).prefix_u64(), *node))
        .collect();
    // Ties (practically impossible) break on node id so every node agrees.
    weighted.sort_unstable_by(|a, b| b.cmp(a));
    weighted.dedup_by_key(|(_, node)| *node);
    weighted.into_iter().map(|(_, node)| node).collect()
}

/// The home of each of the `count` slices of chunk `id`, position by
/// position: the node ranked highest for that position among the nodes
/// without a slice yet (once every node has one, a second round begins).
/// Each position has its own ranking, so a node that joins takes over only
/// the positions it comes first for among the nodes still free, and most
/// slices keep their home; one ranking shared by all positions would shift
/// every position after the newcomer's.
pub fn slice_homes(id: &Hash, count: usize, members: &[NodeId]) -> Vec<NodeId> // PA
{
    let mut nodes = members.to_vec();
    nodes.sort_unstable();
    nodes.dedup();
    let mut homes: Vec<Option<NodeId>> = vec![None; count];
    if nodes.is_empty() {
        return Vec::new();
    }
    // Every (weight, position, node) pair, strongest first; a position
    // takes the strongest node still free in this round.
    let mut pairs: Vec<(u64, usize, NodeId)> = Vec::with_capacity(count * nodes.len());
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
        let mut taken: Vec<NodeId> = Vec::with_capacity(nodes.len());
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

/// Where slice `index` of a chunk goes, or is looked for: its home first,
/// then `others` that are no home of the chunk's, then the homes of the
/// positions after it; nodes seen down go last, so nobody waits on them
/// first. A slice handed off to a node holding no other slice of the chunk
/// costs nothing if that node is lost; one handed to another home doubles
/// the chunk up there until it is taken home.
pub fn handoff_order(index: usize, homes: &[NodeId], others: &[NodeId], down: impl Fn(NodeId) -> bool) -> Vec<NodeId> // PA
{
    let n = homes.len();
    let mut order: Vec<NodeId> = Vec::with_capacity(n + others.len());
    let home = homes.get(index % n.max(1)).copied();
    let spare = others.iter().copied().filter(|node| !homes.contains(node));
    let later_homes = (1..n).map(|step| homes[(index + step) % n]);
    for node in home.into_iter().chain(spare).chain(later_homes) {
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

/// The replicas of a metadata partition, best first.
pub fn partition_replicas(partition: u8, members: &[NodeId]) -> Vec<NodeId> // PA
{
    let item = Hash::of_parts(&[b"ouroboros partition", &[partition]]);
    let mut ranked = rank(&item, members);
    ranked.truncate(replication_factor(members.len()));
    ranked
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
    use super::*;

    fn nodes(n: u8) -> Vec<NodeId> // A
    {
        (0..n).map(|i| Hash::of(&[i])).collect()
    }

    #[test]
    fn ranking_is_a_permutation_independent_of_member_order() // A
    {
        let members = nodes(6);
        let mut reversed = members.clone();
        reversed.reverse();
        for i in 0..100u32 {
            let item = Hash::of(&i.to_le_bytes());
            let ranked = rank(&item, &members);
            assert_eq!(ranked, rank(&item, &reversed));
            let mut sorted = ranked.clone();
            sorted.sort();
            let mut expected = members.clone();
            expected.sort();
            assert_eq!(sorted, expected);
        }
    }

    #[test]
    fn adding_a_node_moves_only_its_share() // A
    {
        let before = nodes(5);
        let after = nodes(6);
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
        let before = nodes(6);
        let after = nodes(7);
        let (mut moved, mut total) = (0, 0);
        for i in 0..2000u32 {
            let chunk = Hash::of(&i.to_le_bytes());
            let homes = slice_homes(&chunk, 6, &before);
            let mut distinct = homes.clone();
            distinct.sort();
            distinct.dedup();
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
        let homes = slice_homes(&Hash::of(b"x"), 6, &nodes(5));
        assert_eq!(homes.len(), 6);
        assert_eq!(homes.iter().collect::<std::collections::BTreeSet<_>>().len(), 5);
    }

    #[test]
    fn replicas_and_quorums_follow_cluster_size() // A
    {
        assert_eq!(partition_replicas(7, &nodes(1)).len(), 1);
        assert_eq!(partition_replicas(7, &nodes(2)).len(), 2);
        assert_eq!(partition_replicas(7, &nodes(3)).len(), 3);
        assert_eq!(partition_replicas(7, &nodes(4)).len(), 4);
        assert_eq!(partition_replicas(7, &nodes(5)).len(), 5);
        assert_eq!(partition_replicas(7, &nodes(6)).len(), 5);
        assert_eq!(partition_replicas(7, &nodes(20)).len(), 5);
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
    }

    #[test]
    fn a_slice_is_handed_off_to_a_node_without_one_before_another_home() // A
    {
        let all = nodes(5);
        let homes = vec![all[0], all[1], all[2]];
        let up = |_| false;
        assert_eq!(handoff_order(1, &homes, &all, up), vec![all[1], all[3], all[4], all[2], all[0]]);
        let down = |node| node == all[1] || node == all[3];
        assert_eq!(handoff_order(1, &homes, &all, down), vec![all[4], all[2], all[0], all[1], all[3]]);
        // No spare node: the next homes, as before.
        assert_eq!(handoff_order(2, &homes, &homes, up), vec![all[2], all[0], all[1]]);
    }
}
