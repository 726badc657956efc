//! Virtual partitions. Every operator-state key starts with the vnode of its partitioning key:
//! a stable hash of the key's encoded bytes into [`VNODE_COUNT`] buckets. A vnode is the unit
//! that work and state will be split by (between threads, later between machines): all state
//! of one partitioning key lives in one vnode, and one vnode's state is one contiguous key
//! range per state table, so moving a vnode never rewrites keys.
//!
//! The hash is XXH64 with seed 0 (a published algorithm, the same on every platform and
//! version of the crate), because the layout on disk depends on it never changing. The vnode
//! count is recorded in each view's catalog entry; changing it would mean rebuilding state.

use twox_hash::XxHash64;

/// The number of vnodes of every state table.
pub use runnel_plan::VNODE_COUNT;

/// A virtual partition, `0..VNODE_COUNT`.
pub type Vnode = u16;

/// The vnode of an encoded partitioning key.
pub fn vnode_of(partition_key: &[u8]) -> Vnode {
    (XxHash64::oneshot(0, partition_key) % u64::from(VNODE_COUNT)) as Vnode
}

/// The store key `prefix ‖ vnode ‖ key`, in `out` (cleared first): how every vnode-keyed
/// state table and view lays out its keys.
pub fn vnode_key(prefix: &[u8], vnode: Vnode, key: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(prefix.len() + 2 + key.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&vnode.to_be_bytes());
    out.extend_from_slice(key);
}

/// The shard (worker) that owns `vnode` when the work is split `shards` ways: contiguous
/// ranges of vnodes, so a shard's state of one table is one key range.
pub fn shard_of(vnode: Vnode, shards: usize) -> usize {
    usize::from(vnode) * shards / usize::from(VNODE_COUNT)
}

/// A set of vnodes: the ones a worker owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnodeSet([u64; 4]);

impl VnodeSet {
    /// Every vnode (one worker).
    pub fn all() -> Self {
        VnodeSet([u64::MAX; 4])
    }

    /// The vnodes of `shard` of `shards` (see [`shard_of`]).
    pub fn of_shard(shard: usize, shards: usize) -> Self {
        let mut set = VnodeSet([0; 4]);
        for vnode in 0..VNODE_COUNT {
            if shard_of(vnode, shards) == shard {
                set.0[usize::from(vnode / 64)] |= 1 << (vnode % 64);
            }
        }
        set
    }

    pub fn contains(&self, vnode: Vnode) -> bool {
        self.0[usize::from(vnode / 64) & 3] & (1 << (vnode % 64)) != 0
    }

    /// The set as runs of consecutive vnodes: `(first, end)`, `end` exclusive (up to
    /// [`VNODE_COUNT`]), so a shard's part of a vnode-keyed table is read with one scan per run.
    pub fn ranges(&self) -> Vec<(Vnode, u32)> {
        let mut runs: Vec<(Vnode, u32)> = Vec::new();
        for vnode in (0..VNODE_COUNT).filter(|&v| self.contains(v)) {
            match runs.last_mut() {
                Some((_, end)) if *end == u32::from(vnode) => *end += 1,
                _ => runs.push((vnode, u32::from(vnode) + 1)),
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_vnodes_into_disjoint_ranges() {
        for shards in [1, 2, 3, 7] {
            let sets: Vec<VnodeSet> = (0..shards).map(|s| VnodeSet::of_shard(s, shards)).collect();
            for vnode in 0..VNODE_COUNT {
                let owners: Vec<usize> = (0..shards).filter(|&s| sets[s].contains(vnode)).collect();
                assert_eq!(owners, vec![shard_of(vnode, shards)]);
            }
        }
        assert!((0..VNODE_COUNT).all(|v| VnodeSet::all().contains(v)));
        assert_eq!(VnodeSet::of_shard(0, 1), VnodeSet::all());
        // Two shards: the low half and the high half.
        assert!(VnodeSet::of_shard(0, 2).contains(127) && VnodeSet::of_shard(1, 2).contains(128));
        assert_eq!(VnodeSet::of_shard(1, 2).ranges(), vec![(128, 256)]);
        assert_eq!(VnodeSet::all().ranges(), vec![(0, 256)]);
    }

    #[test]
    fn vnodes_are_stable_and_spread() {
        // Fixed values: if these change, every stored key moves (a new state layout).
        assert_eq!(XxHash64::oneshot(0, b""), 0xef46_db37_51d8_e999);
        assert_eq!(vnode_of(b""), 0x99);
        let mut seen = [0u32; VNODE_COUNT as usize];
        for i in 0..100_000u64 {
            seen[vnode_of(&i.to_be_bytes()) as usize] += 1;
        }
        // 100,000 keys over 256 vnodes: about 390 each.
        assert!(seen.iter().all(|&n| (250..550).contains(&n)), "{seen:?}");
    }
}
