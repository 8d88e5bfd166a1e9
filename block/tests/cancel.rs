//! Dropping request futures at every await point: nothing leaks (tracked slots, bounce buffers,
//! in-flight counts, device requests), the device never keeps memory the future lent it, and
//! the data is, block by block, either as before or as after the request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::pin::{pin, Pin};

use common::{misaligned, poll_once, run_bounded, Rng};
use futures::executor::block_on;
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::{DeviceFeatures, DeviceInfo};
use strata_block::{Backend, BackendOptions, Graph, Result};

const BS: u64 = 4096;
const DISK: usize = 64 << 10;

#[derive(Clone, Copy, Debug)]
enum Op {
    Read(u64, u64),
    Write(u64, u64),
    /// A block-aligned write from memory the device cannot use directly.
    WriteMisaligned(u64, u64),
    Zeroes(u64, u64, bool),
    Discard(u64, u64),
    Flush,
}

const OPS: &[Op] = &[
    Op::Read(8192, 8192),
    Op::Read(1000, 20_000),
    Op::Write(8192, 12_288),
    Op::Write(1000, 20_000),
    Op::Write(4097, 10),
    Op::WriteMisaligned(4096, 16_384),
    Op::Zeroes(8192, 16_384, false),
    Op::Zeroes(8192, 16_384, true),
    Op::Zeroes(1000, 30_000, false),
    Op::Discard(4096, 16_384),
    Op::Discard(1000, 30_000),
    Op::Flush,
];

/// The disk after `op` on `old` (`data`: what a write writes).
fn apply(op: Op, old: &[u8], data: &[u8]) -> Vec<u8> {
    let mut new = old.to_vec();
    match op {
        Op::Write(off, len) | Op::WriteMisaligned(off, len) => {
            new[off as usize..(off + len) as usize].copy_from_slice(&data[..len as usize]);
        }
        Op::Zeroes(off, len, _) => common::zero(&mut new, off, off + len),
        Op::Discard(off, len) => common::discard(&mut new, off, off + len, BS),
        Op::Read(..) | Op::Flush => {}
    }
    new
}

fn check_no_leaks<const N: usize, const T: usize>(
    graph: &Graph<'_, N, T>,
    disk: &RamDisk<'_, 8>,
    be: &Backend<'_, '_>,
    what: &str,
) {
    assert_eq!(graph.tracked_in_use(), 0, "{what}: tracked slot leaked");
    let (free, total) = graph.bounce_buffers();
    assert_eq!(free, total, "{what}: bounce buffer leaked");
    assert_eq!(disk.in_flight(), 0, "{what}: device request left behind");
    assert_eq!(be.in_flight(), 0, "{what}: backend in-flight count leaked");
}

fn drop_at_every_point(features: DeviceFeatures) {
    let mut rng = Rng::new(u64::from(features.bits()) + 1);
    let mut mem = vec![0u8; DISK];
    rng.fill(&mut mem);
    let mut info = DeviceInfo::new(DISK as u64, BS as u32);
    info.features = features;
    let disk = RamDisk::<8>::with_info(
        &mut mem,
        info,
        RamConfig {
            delay_polls: 2,
            shuffle_seed: 0,
        },
    );
    let mut bounce = vec![0u8; 5 * 8192];
    let mut graph: Graph<4, 8> = Graph::new(&mut bounce, 8192);
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    let mut storage = vec![0u8; DISK + 8192];

    for &op in OPS {
        let mut completed_at = None;
        for k in 0..10_000usize {
            let what = format!("{op:?} dropped after {k} polls");
            let mut old = vec![0u8; DISK];
            block_on(be.read(0, &mut old)).unwrap();
            if let Op::Flush = op {
                // Give the flush something to do.
                block_on(be.write(0, &old[..512])).unwrap();
            }
            let flushes_before = disk.stats().flushes;
            let buf = match op {
                Op::WriteMisaligned(..) => misaligned(&mut storage, DISK, 4096, 1),
                _ => &mut storage[..DISK],
            };
            rng.fill(buf);
            let data = buf.to_vec();
            let new = apply(op, &old, &data);
            let mut done = false;
            {
                let fut: Pin<Box<dyn Future<Output = Result<()>> + '_>> = match op {
                    Op::Read(off, len) => Box::pin(be.read(off, &mut buf[..len as usize])),
                    Op::Write(off, len) | Op::WriteMisaligned(off, len) => {
                        Box::pin(be.write(off, &buf[..len as usize]))
                    }
                    Op::Zeroes(off, len, unmap) => Box::pin(be.write_zeroes(off, len, unmap)),
                    Op::Discard(off, len) => Box::pin(be.discard(off, len)),
                    Op::Flush => Box::pin(be.flush()),
                };
                let mut fut = fut;
                for _ in 0..k {
                    if let std::task::Poll::Ready(r) = poll_once(fut.as_mut()) {
                        r.unwrap();
                        done = true;
                        break;
                    }
                }
                drop(fut);
            }
            check_no_leaks(&graph, &disk, &be, &what);
            // Memory lent to the device is free again: scribble over it. A request still
            // holding it would now write garbage to the disk or read into freed memory.
            if let (Op::Read(off, len), true) = (op, done) {
                assert!(
                    buf[..len as usize] == old[off as usize..(off + len) as usize],
                    "{what}: read returned wrong data"
                );
            }
            buf.fill(0xee);
            let mut now = vec![0u8; DISK];
            run_bounded(be.read(0, &mut now), 100_000).unwrap();
            for (b, ((n, o), e)) in now
                .chunks(BS as usize)
                .zip(old.chunks(BS as usize))
                .zip(new.chunks(BS as usize))
                .enumerate()
            {
                assert!(n == o || n == e, "{what}: block {b} is neither old nor new");
            }
            if done {
                assert!(
                    now == new,
                    "{what}: completed but the data is not the result"
                );
                if let Op::Flush = op {
                    assert_eq!(disk.stats().flushes, flushes_before + 1);
                }
            }
            if let Op::Flush = op {
                // A dropped flush leaves no flush "running": the next one completes and flushes.
                block_on(be.write(0, &now[..512])).unwrap();
                let before = disk.stats().flushes;
                run_bounded(be.flush(), 100_000).unwrap();
                assert_eq!(disk.stats().flushes, before + 1, "{what}");
            }
            check_no_leaks(&graph, &disk, &be, &what);
            if done {
                completed_at = Some(k);
                break;
            }
        }
        let k = completed_at.expect("never completed");
        assert!(
            k > 1,
            "{op:?} completed after {k} polls: too few await points tested"
        );
    }
    // Everything still works.
    let payload = vec![0x5a; 10_000];
    block_on(be.write(123, &payload)).unwrap();
    let mut back = vec![0u8; 10_000];
    block_on(be.read(123, &mut back)).unwrap();
    assert_eq!(back, payload);
}

#[test]
fn drop_at_every_await_point() {
    drop_at_every_point(
        DeviceFeatures::FLUSH
            | DeviceFeatures::DISCARD
            | DeviceFeatures::WRITE_ZEROES
            | DeviceFeatures::WRITE_ZEROES_UNMAP,
    );
}

#[test]
fn drop_at_every_await_point_without_write_zeroes() {
    drop_at_every_point(DeviceFeatures::FLUSH | DeviceFeatures::DISCARD);
}

#[test]
fn drop_while_waiting_for_resources() {
    let mut mem = vec![0u8; DISK];
    let disk = RamDisk::<8>::new(
        &mut mem,
        BS as u32,
        RamConfig {
            delay_polls: 5,
            shuffle_seed: 0,
        },
    );
    let mut storage = vec![0u8; 2 * 4096];
    let bounce = common::aligned(&mut storage, 4096, 4096);
    // One tracked slot and one bounce buffer.
    let mut graph: Graph<4, 1> = Graph::new(bounce, 4096);
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    let a_data = vec![0xaa; 5000];
    let b_data = vec![0xbb; 5000];

    // B waits for A's tracked slot; dropping B frees nothing A needs and leaks nothing.
    let mut a = pin!(be.write(100, &a_data));
    assert!(poll_once(a.as_mut()).is_pending());
    {
        let mut b = pin!(be.write(200, &b_data));
        for _ in 0..3 {
            assert!(poll_once(b.as_mut()).is_pending());
        }
        assert_eq!(be.in_flight(), 2);
    }
    assert_eq!(be.in_flight(), 1);
    assert_eq!(graph.tracked_in_use(), 1);
    run_bounded(a.as_mut(), 1000).unwrap();
    assert_eq!(graph.tracked_in_use(), 0);
    assert_eq!(graph.bounce_buffers(), (1, 1));
}

#[test]
fn drop_while_waiting_for_bounce_or_serialisation() {
    let mut mem = vec![0u8; DISK];
    let disk = RamDisk::<8>::new(
        &mut mem,
        BS as u32,
        RamConfig {
            delay_polls: 5,
            shuffle_seed: 0,
        },
    );
    let mut storage = vec![0u8; 2 * 4096];
    let bounce = common::aligned(&mut storage, 4096, 4096);
    let mut graph: Graph<4, 8> = Graph::new(bounce, 4096);
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    let a_data = vec![0xaa; 3000];
    let b_data = vec![0xbb; 3000];
    let c_data = vec![0xcc; 100];

    let mut a = pin!(be.write(100, &a_data)); // unaligned: serialising, holds the bounce buffer
    assert!(poll_once(a.as_mut()).is_pending());
    assert_eq!(graph.bounce_buffers(), (0, 1));
    {
        // Overlapping: waits for A (serialisation).
        let mut b = pin!(be.write(1000, &b_data));
        // Elsewhere: waits for the bounce buffer.
        let mut c = pin!(be.write(40_000, &c_data));
        for _ in 0..3 {
            assert!(poll_once(b.as_mut()).is_pending());
            assert!(poll_once(c.as_mut()).is_pending());
        }
        assert_eq!(graph.tracked_in_use(), 3);
    }
    assert_eq!(graph.tracked_in_use(), 1);
    run_bounded(a.as_mut(), 1000).unwrap();
    assert_eq!(graph.tracked_in_use(), 0);
    assert_eq!(graph.bounce_buffers(), (1, 1));
    assert_eq!(disk.in_flight(), 0);
    let mut back = vec![0u8; 8192];
    block_on(be.read(0, &mut back)).unwrap();
    assert!(back[..100].iter().all(|&b| b == 0));
    assert!(back[100..3100].iter().all(|&b| b == 0xaa));
    assert!(back[3100..].iter().all(|&b| b == 0));
    let mut back = vec![0u8; 100];
    block_on(be.read(40_000, &mut back)).unwrap();
    assert!(
        back.iter().all(|&b| b == 0),
        "a dropped write that never started landed"
    );
}
