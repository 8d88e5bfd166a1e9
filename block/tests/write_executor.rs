//! The write executor: a qcow2 allocation reaches its leaf as one scatter-gather write (head
//! copy-on-write, data, tail copy-on-write) where the clusters are contiguous, and the result
//! reads back as the backing file with the data on top.

#![allow(clippy::unwrap_used)]

use futures::executor::block_on;
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::BlockDevice;
use strata_block::driver::qcow2::create::{create, CreateOptions};
use strata_block::io::cache::CacheSlot;
use strata_block::{Backend, BackendOptions, Graph};

const CS: usize = 64 << 10;

/// A raw base of `len` patterned bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i / 512 % 251) as u8 ^ (i % 7) as u8).collect()
}

/// Writes `data` at each offset of `writes` into a fresh qcow2 overlay (64 KiB clusters,
/// `extended_l2`) over a patterned raw base and returns, per write, how many write requests
/// reached the overlay's device; then checks every byte against the model.
fn leaf_writes(extended_l2: bool, writes: &[(u64, usize)]) -> Vec<u64> {
    const SIZE: usize = 1 << 20;
    let mut base_mem = pattern(SIZE);
    let base = RamDisk::<'_, 16>::new(&mut base_mem, 512, RamConfig::default());
    let mut top_mem = vec![0u8; 4 << 20];
    let top = RamDisk::<'_, 16>::new(&mut top_mem, 512, RamConfig::default());
    {
        let mut bounce = vec![0u8; 4 * 4096];
        let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
        let leaf = graph.add_leaf("top", &top).unwrap();
        let opts = CreateOptions { extended_l2, backing: Some("base"), backing_fmt: Some("raw"), ..CreateOptions::new(SIZE as u64) };
        block_on(create(&graph.io(), leaf, &opts)).unwrap();
    }
    let slots: Vec<CacheSlot> = (0..32).map(|_| CacheSlot::new()).collect();
    let mut bounce = vec![0u8; 4 * CS];
    let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, CS);
    graph.set_metadata_cache(&slots);
    graph.add_leaf("top", &top).unwrap();
    let base_dev: &dyn BlockDevice = &base;
    let root = block_on(graph.open("driver=qcow2,file=top", &mut |name| (name == "base").then_some(base_dev))).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let mut model = pattern(SIZE);
    let mut counts = Vec::new();
    for (i, &(offset, len)) in writes.iter().enumerate() {
        let data = vec![0xc0 | i as u8; len];
        let before = top.stats().writes;
        block_on(be.write(offset, &data)).unwrap();
        counts.push(top.stats().writes - before);
        model[offset as usize..offset as usize + len].copy_from_slice(&data);
    }
    block_on(be.flush()).unwrap();
    let mut back = vec![0u8; SIZE];
    block_on(be.read(0, &mut back)).unwrap();
    assert!(back == model, "the overlay does not read as the base with the writes on top");
    block_on(be.close()).unwrap();
    counts
}

#[test]
fn a_cow_allocation_is_one_leaf_write() {
    // The first write also allocates the L2 table (fresh clusters need no zeroing write); every
    // write after it in the same table is exactly one request: head + data + tail.
    let counts = leaf_writes(false, &[(5 * CS as u64 + 4096, 4096), (9 * CS as u64 + 100, 3000), (12 * CS as u64 + 8192, CS + 4096)]);
    assert_eq!(counts[1..], [1, 1], "leaf writes per allocating write: {counts:?}");
}

#[test]
fn subcluster_allocations_copy_only_partly_written_subclusters() {
    // With extended L2 a 4 KiB-aligned write of whole subclusters (2 KiB each) copies
    // nothing; an unaligned one copies its edge subclusters, still as one request.
    let counts = leaf_writes(true, &[(5 * CS as u64, 4096), (6 * CS as u64 + 4096, 4096), (7 * CS as u64 + 1000, 3000)]);
    assert_eq!(counts[1..], [1, 1], "leaf writes per allocating write: {counts:?}");
}
