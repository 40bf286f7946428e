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
}
