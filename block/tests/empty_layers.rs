//! Reads through runs of empty qcow2 layers, which the walk passes at once and remembers
//! (`path::skip`): the memory must give way as soon as a layer gets data, and a layer shorter
//! than the range read must still end it (reads past a backing file's end are zeros).

#![allow(clippy::unwrap_used)]

use futures::executor::block_on;
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::BlockDevice;
use strata_block::driver::qcow2::create::{create, CreateOptions};
use strata_block::io::cache::CacheSlot;
use strata_block::{Backend, BackendOptions, Graph};

const MIB: u64 = 1 << 20;

fn base_byte(i: u64) -> u8 {
    (i / 4096) as u8 ^ 0x5a
}

/// Makes a qcow2 of `size` over `backing` (raw or qcow2) on `dev`.
fn make(dev: &RamDisk<'_, 16>, size: u64, backing: &str, fmt: &str) {
    let mut bounce = vec![0u8; 4 * 4096];
    let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("f", dev).unwrap();
    let opts = CreateOptions { backing: Some(backing), backing_fmt: Some(fmt), ..CreateOptions::new(size) };
    block_on(create(&graph.io(), leaf, &opts)).unwrap();
}

#[test]
fn empty_layers_give_way_to_data_and_to_shorter_layers() {
    // base (raw, 2 MiB) <- l1 (2 MiB) <- l2 (1 MiB) <- l3 (2 MiB) <- top (2 MiB), all empty.
    let mut base_mem: Vec<u8> = (0..2 * MIB).map(base_byte).collect();
    let base = RamDisk::<'_, 16>::new(&mut base_mem, 512, RamConfig::default());
    let mut mems: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; 4 * MIB as usize]).collect();
    let [m1, m2, m3, m4] = &mut mems[..] else { unreachable!() };
    let (d1, d2, d3, d4) = (
        RamDisk::<'_, 16>::new(m1, 512, RamConfig::default()),
        RamDisk::<'_, 16>::new(m2, 512, RamConfig::default()),
        RamDisk::<'_, 16>::new(m3, 512, RamConfig::default()),
        RamDisk::<'_, 16>::new(m4, 512, RamConfig::default()),
    );
    make(&d1, 2 * MIB, "base", "raw");
    make(&d2, MIB, "l1", "qcow2");
    make(&d3, 2 * MIB, "l2", "qcow2");
    make(&d4, 2 * MIB, "l3", "qcow2");

    let slots: Vec<CacheSlot> = (0..64).map(|_| CacheSlot::new()).collect();
    let mut bounce = vec![0u8; 8 * 65536];
    let mut graph: Graph<'_, 16, 64> = Graph::new(&mut bounce, 65536);
    graph.set_metadata_cache(&slots);
    graph.add_leaf("top-file", &d4).unwrap();
    let devs: [(&str, &dyn BlockDevice); 4] = [("base", &base), ("l1", &d1), ("l2", &d2), ("l3", &d3)];
    let root = block_on(graph.open("driver=qcow2,file=top-file", &mut |name| devs.iter().find(|(n, _)| *n == name).map(|(_, d)| *d))).unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();

    let read = |offset: u64, len: usize| {
        let mut buf = vec![0u8; len];
        block_on(be.read(offset, &mut buf)).unwrap();
        buf
    };
    // Inside every layer: the base's bytes, twice (the second read uses the remembered run).
    for _ in 0..2 {
        assert!(read(4096, 8192).iter().enumerate().all(|(i, &b)| b == base_byte(4096 + i as u64)));
    }
    // Past l2's end (1 MiB): zeros, though base has data there; and a read across the end.
    assert!(read(MIB + 4096, 4096).iter().all(|&b| b == 0));
    let across = read(MIB - 4096, 8192);
    assert!(across[..4096].iter().enumerate().all(|(i, &b)| b == base_byte(MIB - 4096 + i as u64)));
    assert!(across[4096..].iter().all(|&b| b == 0));
    // The top gets data: reads there see it at once, reads elsewhere still reach the base.
    block_on(be.write(8192, &[0xee; 4096])).unwrap();
    let after = read(4096, 12288);
    assert!(after[..4096].iter().enumerate().all(|(i, &b)| b == base_byte(4096 + i as u64)));
    assert!(after[4096..8192].iter().all(|&b| b == 0xee));
    assert!(after[8192..].iter().enumerate().all(|(i, &b)| b == base_byte(12288 + i as u64)));
    assert!(read(MIB + 4096, 4096).iter().all(|&b| b == 0));
    block_on(be.close()).unwrap();
}
