//! The write threshold (QEMU's `block-set-write-threshold`, `BLOCK_WRITE_THRESHOLD`): on a
//! qcow2 image's file node, the first write that reaches past it — guest data or metadata,
//! as the file grows — leaves one record with the amount exceeded, and the threshold is off
//! after it; on the format node it watches guest offsets; write-zeroes and discards count.

#![allow(clippy::unwrap_used)]

use futures::executor::block_on;
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::driver::qcow2::create::{create, CreateOptions};
use strata_block::io::cache::CacheSlot;
use strata_block::node::ThresholdExceeded;
use strata_block::{Backend, BackendOptions, Graph};

const MIB: u64 = 1 << 20;

#[test]
fn the_first_write_past_the_threshold_fires_once() {
    let mut mem = vec![0u8; 16 * MIB as usize];
    let dev = RamDisk::<'_, 16>::new(&mut mem, 512, RamConfig::default());
    {
        let mut bounce = vec![0u8; 4 * 4096];
        let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
        let leaf = graph.add_leaf("f", &dev).unwrap();
        block_on(create(&graph.io(), leaf, &CreateOptions::new(8 * MIB))).unwrap();
    }
    let slots: Vec<CacheSlot> = (0..64).map(|_| CacheSlot::new()).collect();
    let mut bounce = vec![0u8; 8 * 65536];
    let mut graph: Graph<'_, 8, 64> = Graph::new(&mut bounce, 65536);
    graph.set_metadata_cache(&slots);
    let root = block_on(graph.open("driver=qcow2,node-name=fmt,file.driver=file,file.filename=f,file.write-threshold=1M", &mut |n| (n == "f").then_some(&dev as _))).unwrap();
    let handle = graph.handle();
    let file = handle.node(root).unwrap().child(strata_block::graph::Role::File).unwrap();
    assert_eq!(handle.node(file).unwrap().threshold.get(), MIB);
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let events = || handle.take_write_threshold_events().map(|(id, n, e)| (id, n.name.as_str().to_string(), e)).collect::<Vec<_>>();

    // Guest writes allocate clusters at the file's end; the one that reaches past 1 MiB of the
    // file is recorded, with the bytes past it.
    let mut fired = Vec::new();
    for i in 0..32u64 {
        block_on(be.write(i * 65536, &[0xa5; 65536])).unwrap();
        fired.extend(events());
    }
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (id, _, e) = &fired[0];
    assert_eq!(*id, file);
    assert_eq!(e.write_threshold, MIB);
    assert!(e.amount_exceeded > 0 && e.amount_exceeded <= 65536, "{e:?}");
    assert_eq!(handle.node(file).unwrap().threshold.get(), 0, "off after firing");

    // On the format node: guest offsets. Write-zeroes past it fires it too.
    handle.set_write_threshold(root, 4 * MIB).unwrap();
    block_on(be.write_zeroes(4 * MIB - 4096, 8192, false)).unwrap();
    assert_eq!(events(), vec![(root, "fmt".to_string(), ThresholdExceeded { amount_exceeded: 4096, write_threshold: 4 * MIB })]);
    block_on(be.write(6 * MIB, &[1; 4096])).unwrap();
    assert!(events().is_empty(), "once");
    // A discard counts as a write, as in QEMU.
    handle.set_write_threshold(root, 5 * MIB).unwrap();
    block_on(be.discard(5 * MIB, 65536)).unwrap();
    assert_eq!(events().len(), 1);
    // Bad values are refused at open.
    drop(be);
    let r = block_on(graph.open("driver=qcow2,file.driver=file,file.filename=f,file.write-threshold=lots", &mut |n| (n == "f").then_some(&dev as _)));
    assert!(r.is_err());
}
