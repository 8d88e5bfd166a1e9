//! `null-co` / `null-aio` with QEMU's options, the first driver added through the table alone;
//! and a node that makes a request wait for the graph's clock, released by a drain.

#![allow(clippy::unwrap_used)]

mod common;

use std::pin::pin;
use std::task::Poll;

use common::poll_once;
use futures::executor::block_on;
use strata_block::clock::ManualClock;
use strata_block::{Backend, BackendOptions, Error, Graph};

fn open<'d>(graph: &mut Graph<'d, 4, 8>, text: &str) -> strata_block::Result<strata_block::NodeId> {
    block_on(graph.open(text, &mut |_| None))
}

#[test]
fn null_co_reads_zeros_and_drops_writes() {
    let mut graph: Graph<'_, 4, 8> = Graph::new(&mut [], 4096);
    let root = open(&mut graph, "driver=null-co,size=1M,read-zeroes=on").unwrap();
    assert_eq!(graph.node(root).unwrap().size(), 1 << 20);
    assert_eq!(graph.node(root).unwrap().driver, "null-co");
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    block_on(be.write(4096, &[0x5a; 8192])).unwrap();
    block_on(be.write_zeroes(0, 1 << 20, true)).unwrap();
    block_on(be.discard(0, 4096)).unwrap();
    block_on(be.flush()).unwrap();
    let mut buf = [0xffu8; 8192];
    block_on(be.read(4096, &mut buf)).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert!(matches!(block_on(be.read(1 << 20, &mut buf)), Err(Error::OutOfRange { .. })));
}

#[test]
fn null_aio_without_read_zeroes_leaves_the_buffer_and_defaults_to_1_gib() {
    let mut graph: Graph<'_, 4, 8> = Graph::new(&mut [], 4096);
    let root = open(&mut graph, "driver=null-aio").unwrap();
    assert_eq!(graph.node(root).unwrap().size(), 1 << 30);
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let mut buf = [0xa5u8; 4096];
    block_on(be.read(0, &mut buf)).unwrap();
    assert!(buf.iter().all(|&b| b == 0xa5), "QEMU leaves the buffer as it is");
}

#[test]
fn null_options_are_checked_and_it_stacks_under_raw() {
    let mut graph: Graph<'_, 4, 8> = Graph::new(&mut [], 4096);
    for bad in ["driver=null-co,size=1M,bogus=1", "driver=null-co,read-zeroes=maybe", "driver=null-co,size=lots"] {
        let r = open(&mut graph, bad);
        assert!(matches!(r, Err(Error::BadOption { .. } | Error::BadOptions { .. })), "{bad}: {r:?}");
    }
    assert!(matches!(open(&mut graph, "driver=null-co,latency-ns=1000"), Err(Error::BadOption { key: "latency-ns", .. })), "no clock, no latency");
    assert_eq!(graph.nodes().count(), 0, "failed opens leave nothing behind");
    let root = open(&mut graph, "driver=raw,offset=64k,size=128k,file.driver=null-co,file.size=1M,file.read-zeroes=on").unwrap();
    assert_eq!(graph.node(root).unwrap().size(), 128 << 10);
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    block_on(be.write(0, &[1; 4096])).unwrap();
    let mut buf = [0xffu8; 4096];
    block_on(be.read(0, &mut buf)).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn latency_holds_each_request_until_the_clock_passes_it() {
    let clock = ManualClock::default();
    let mut graph: Graph<'_, 4, 8> = Graph::new(&mut [], 4096);
    graph.set_clock(&clock);
    let root = open(&mut graph, "driver=null-co,size=1M,read-zeroes=on,latency-ns=1000").unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let mut buf = [0xffu8; 512];
    {
        let mut read = pin!(be.read(0, &mut buf));
        for _ in 0..10 {
            assert!(poll_once(read.as_mut()).is_pending(), "released before its latency");
        }
        clock.advance(999);
        assert!(poll_once(read.as_mut()).is_pending());
        clock.advance(1);
        assert!(matches!(poll_once(read.as_mut()), Poll::Ready(Ok(()))));
    }
    assert!(buf.iter().all(|&b| b == 0));
    // Writes wait the same way.
    let mut write = pin!(be.write(0, &[1; 512]));
    assert!(poll_once(write.as_mut()).is_pending());
    clock.advance(1000);
    assert!(matches!(poll_once(write.as_mut()), Poll::Ready(Ok(()))));
}

#[test]
fn a_drain_releases_held_requests() {
    let clock = ManualClock::default();
    let mut graph: Graph<'_, 4, 8> = Graph::new(&mut [], 4096);
    graph.set_clock(&clock);
    let root = open(&mut graph, "driver=null-co,size=1M,latency-ns=1000000000").unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let mut buf = [0u8; 512];
    let mut read = pin!(be.read(0, &mut buf));
    assert!(poll_once(read.as_mut()).is_pending());
    let mut drain = pin!(be.drain());
    assert!(poll_once(drain.as_mut()).is_pending(), "the held read is still in flight");
    assert!(matches!(poll_once(read.as_mut()), Poll::Ready(Ok(()))), "the drain releases it without the clock moving");
    assert!(poll_once(drain.as_mut()).is_ready());
}
