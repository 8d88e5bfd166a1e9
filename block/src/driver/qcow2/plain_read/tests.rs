//! The plain lookup against the general one, on every kind of L2 entry (valid or breaking a
//! rule) and at several places inside each cluster, for small and large clusters.

#![allow(clippy::unwrap_used)] // reason: tests

use futures::executor::block_on;

use crate::dev::ram::{RamConfig, RamDisk};
use crate::driver::qcow2::create::{create, CreateOptions};
use crate::driver::qcow2::header::{Header, KNOWN_HEADER_LEN};
use crate::driver::qcow2::tables::{COMPRESSED, COPIED, ZERO};
use crate::driver::Mapping;
use crate::io::cache::CacheSlot;
use crate::graph::Graph;

/// Cluster of the hand-written L2 table; data clusters follow it.
const L2_CLUSTER: u64 = 16;
/// Whole clusters in the file; half of one more follows, so the last data cluster straddles
/// the end of the file.
const CLUSTERS: u64 = 24;

/// The L2 entries under test, by guest cluster, for clusters of `cs` bytes, given the
/// image's refcount table and L1 table offsets.
fn entries(cs: u64, refcount_table: u64, l1: u64) -> [u64; 18] {
    let at = |cluster: u64| cluster * cs;
    let compressed_sectors_shift = 62 - (cs.trailing_zeros() - 8);
    [
        at(17) | COPIED,              // data, refcount one
        at(18),                       // data, shared
        0,                            // unallocated
        COPIED,                       // COPIED without a host cluster
        ZERO,                         // zero, unallocated
        at(19) | ZERO,                // zero, preallocated
        (at(19) + cs / 2) | ZERO,     // zero, misaligned preallocation (aligned for 512 B)
        COMPRESSED | at(20),          // compressed, one sector
        COMPRESSED | (1 << compressed_sectors_shift) | (at(20) + 512), // compressed, two sectors
        at(17) | 2,                   // a reserved bit
        at(17) + cs / 2,              // misaligned data (aligned for 512 B clusters)
        refcount_table | COPIED,      // on the refcount table
        l1 | COPIED,                  // on the L1 table
        at(L2_CLUSTER) | COPIED,      // on its own L2 table
        at(100) | COPIED,             // past the end of the file
        at(CLUSTERS) | COPIED,        // straddles the end of the file
        COMPRESSED | at(100),         // compressed, past the end
        COPIED | COMPRESSED | at(20), // compressed with COPIED
    ]
}

fn compare(cluster_bits: u32) {
    let cs = 1u64 << cluster_bits;
    let mut memory = std::vec![0u8; (CLUSTERS * cs + cs / 2) as usize];
    {
        let disk: RamDisk<'_, 4> = RamDisk::new(&mut memory, 512, RamConfig::default());
        let mut bounce = std::vec![0u8; 4 * 4096];
        let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
        let leaf = graph.add_leaf("d", &disk).unwrap();
        let opts = CreateOptions { cluster_bits, ..CreateOptions::new(4 << 20) };
        block_on(create(&graph.io(), leaf, &opts)).unwrap();
    }
    let h = Header::parse(memory[..KNOWN_HEADER_LEN].try_into().unwrap(), KNOWN_HEADER_LEN).unwrap();
    assert!(h.l1_table_offset + u64::from(h.l1_size) * 8 <= L2_CLUSTER * cs, "the tables end before the L2 table");
    let l1 = h.l1_table_offset as usize;
    memory[l1..l1 + 8].copy_from_slice(&((L2_CLUSTER * cs) | COPIED).to_be_bytes());
    let words = entries(cs, h.refcount_table_offset, h.l1_table_offset);
    for (i, word) in words.iter().enumerate() {
        let at = (L2_CLUSTER * cs) as usize + i * 8;
        memory[at..at + 8].copy_from_slice(&word.to_be_bytes());
    }

    let disk: RamDisk<'_, 4> = RamDisk::new(&mut memory, 512, RamConfig::default());
    let slots: std::vec::Vec<CacheSlot> = (0..16).map(|_| CacheSlot::new()).collect();
    let mut bounce = std::vec![0u8; 4 * 65536];
    let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 65536);
    graph.set_metadata_cache(&slots);
    graph.add_leaf("d", &disk).unwrap();
    let root = block_on(graph.open("driver=qcow2,read-only=on,file=d", &mut |_| None)).unwrap();
    let q = graph.state(root).unwrap().unwrap().qcow2().unwrap();
    let io = graph.io();

    let mut plain_answers = 0;
    for i in 0..words.len() as u64 + 2 {
        let mut ranges = std::vec![(0, cs), (0, 512), (cs - 512, 512), (cs / 2, cs / 2), (cs - 512, 1024)];
        if cs >= 1024 {
            ranges.push((cs / 2, 512));
        }
        for (skip, len) in ranges {
            let offset = i * cs + skip;
            // Warms the cache and the remembered L1 entry (errors are the general path's).
            let _ = block_on(q.map(&io, root, offset, len));
            let general = q.map_cached_any(&io, root, offset, len);
            let got = q.map_cached(&io, root, offset, len);
            assert_eq!(got, general, "cluster bits {cluster_bits}, entry {i} ({:#x}), {len} bytes at +{skip}", words.get(i as usize).copied().unwrap_or(0));
            plain_answers += usize::from(len <= cs - skip && matches!(got, Some(Mapping::Data { .. })));
        }
    }
    // The valid data entries answered, and the straddling one before the end of the file.
    assert!(plain_answers >= 8, "{plain_answers}");
    // Past the L1 table: unallocated, as the general lookup says.
    let far = u64::from(q.l1_entries.get()) << (2 * cluster_bits - 3);
    assert_eq!(q.map_cached(&io, root, far, 512), q.map_cached_any(&io, root, far, 512));
    assert!(matches!(q.map_cached(&io, root, far, 512), Some(Mapping::Unallocated { len: 512, kept: None })));
}

#[test]
fn plain_lookup_answers_as_the_general_one() {
    for cluster_bits in [9, 12, 16] {
        compare(cluster_bits);
    }
}
