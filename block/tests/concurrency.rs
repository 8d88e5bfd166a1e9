//! Requests that really overlap in time: a RAM disk that delays and shuffles completions, many
//! futures joined at once, and hand-polled futures to watch drain and flush step by step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::RefCell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;

use common::{aligned, poll_once, run_bounded, FirstPoll, Rng};
use futures::executor::block_on;
use futures::future::join_all;
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::{DeviceFeatures, DeviceInfo};
use strata_block::{Backend, BackendOptions, Error, Graph, Result};

/// A write of `len` bytes of `value` at `offset`.
#[derive(Clone, Copy, Debug)]
struct W {
    offset: u64,
    len: u64,
    value: u8,
    /// A write-zeroes (value 0) instead of a write.
    zero: bool,
}

impl W {
    fn end(&self) -> u64 {
        self.offset + self.len
    }

    fn covers(&self, byte: u64) -> bool {
        self.offset <= byte && byte < self.end()
    }

    fn aligned(&self, bs: u64) -> bool {
        self.offset.is_multiple_of(bs) && self.len.is_multiple_of(bs)
    }
}

/// Runs `writes` at once (join_all), recording which future was polled first; returns the
/// order of first polls.
fn run_writes(
    be: &Backend<'_, '_>,
    writes: &[W],
) -> Vec<usize> {
    let data: Vec<Vec<u8>> = writes
        .iter()
        .map(|w| vec![w.value; w.len as usize])
        .collect();
    let order = RefCell::new(Vec::new());
    let futs = writes
        .iter()
        .zip(&data)
        .enumerate()
        .map(|(index, (w, d))| FirstPoll {
            fut: Box::pin(async move {
                if w.zero {
                    be.write_zeroes(w.offset, w.len, w.value % 2 == 0).await
                } else {
                    be.write(w.offset, d).await
                }
            }),
            index,
            order: &order,
            seen: false,
        });
    let results = run_bounded(join_all(futs), 10_000_000);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    order.into_inner()
}

/// Random writes over `region` bytes: unaligned ones (offset or end off the block grid) and,
/// if `aligned_percent` > 0, whole-block ones.
fn random_writes(
    rng: &mut Rng,
    count: usize,
    region: u64,
    bs: u64,
    aligned_percent: u64,
) -> Vec<W> {
    (0..count)
        .map(|i| {
            let value = i as u8 + 1;
            if rng.chance(aligned_percent) {
                let blocks = rng.range(1, 4);
                let offset = rng.below(region / bs - blocks + 1) * bs;
                W {
                    offset,
                    len: blocks * bs,
                    value,
                    zero: false,
                }
            } else {
                loop {
                    let len = rng.range(1, 16 << 10);
                    let offset = rng.below(region - len + 1);
                    let w = W {
                        offset,
                        len,
                        value,
                        zero: false,
                    };
                    if !w.aligned(bs) {
                        break w;
                    }
                }
            }
        })
        .collect()
}

/// A request future yielding its result and, for reads, the data.
type ReadOrWrite<'a> = Pin<Box<dyn Future<Output = (Result<()>, Vec<u8>)> + 'a>>;

struct Setup {
    mem: Vec<u8>,
    bounce: Vec<u8>,
}

impl Setup {
    fn new(len: usize, fill: u8) -> Self {
        Self {
            mem: vec![fill; len],
            bounce: vec![0u8; 16 * 8192 + 4096],
        }
    }
}

#[test]
fn overlapping_unaligned_writes_land_in_start_order() {
    for seed in 1..=16u64 {
        let mut rng = Rng::new(seed);
        let bs = if seed % 2 == 0 { 512 } else { 4096 };
        let region = 96 << 10;
        let mut writes = random_writes(&mut rng, 64, region, bs, 0);
        if seed > 3 {
            // Unaligned write-zeroes serialise like unaligned writes.
            for w in writes.iter_mut().filter(|w| w.value % 4 == 0) {
                w.zero = true;
            }
        }
        let mut s = Setup::new(128 << 10, 0);
        let order;
        let max_in_flight;
        {
            let disk = RamDisk::<64>::new(
                &mut s.mem,
                bs as u32,
                RamConfig {
                    delay_polls: 4,
                    shuffle_seed: seed * 7919,
                },
            );
            let mut graph: Graph<4, 128> = Graph::new(&mut s.bounce, 8192);
            let leaf = graph.add_leaf("d0", &disk).unwrap();
            let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
            order = run_writes(&be, &writes);
            max_in_flight = disk.stats().max_in_flight;
            assert_eq!(graph.tracked_in_use(), 0);
        }
        // join_all polls its futures for the first time in index order, and each request takes
        // its tracker sequence number on that first poll (nothing before it can wait: the
        // backend is not drained and 128 tracker slots are free).
        assert_eq!(
            order,
            (0..64).collect::<Vec<_>>(),
            "join_all's first polls are in index order"
        );
        assert!(
            max_in_flight > 2,
            "requests did not overlap in time (max in flight {max_in_flight})"
        );
        let mut expect = vec![0u8; 128 << 10];
        for &i in &order {
            let w = writes[i];
            expect[w.offset as usize..w.end() as usize].fill(if w.zero { 0 } else { w.value });
        }
        let first_bad = s.mem.iter().zip(&expect).position(|(a, b)| a != b);
        assert_eq!(
            first_bad, None,
            "seed {seed}: result differs from the writes applied in start order"
        );
    }
}

#[test]
fn mixed_aligned_and_unaligned_writes_never_tear() {
    for seed in 11..=26u64 {
        let mut rng = Rng::new(seed);
        let bs = if seed % 2 == 0 { 512u64 } else { 4096 };
        let region = 64 << 10;
        let writes = random_writes(&mut rng, 64, region, bs, 50);
        let mut s = Setup::new(region as usize, 0);
        let order;
        {
            let disk = RamDisk::<64>::new(
                &mut s.mem,
                bs as u32,
                RamConfig {
                    delay_polls: 3,
                    shuffle_seed: seed,
                },
            );
            let mut graph: Graph<4, 128> = Graph::new(&mut s.bounce, 8192);
            let leaf = graph.add_leaf("d0", &disk).unwrap();
            let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
            order = run_writes(&be, &writes);
            assert!(disk.stats().max_in_flight > 2);
        }
        let rank: Vec<usize> = {
            let mut r = vec![0; writes.len()];
            for (pos, &i) in order.iter().enumerate() {
                r[i] = pos;
            }
            r
        };
        let mem = &s.mem;
        // Every byte comes from a write covering it (or is untouched).
        for (b, &v) in mem.iter().enumerate() {
            let covering: Vec<&W> = writes.iter().filter(|w| w.covers(b as u64)).collect();
            if covering.is_empty() {
                assert_eq!(v, 0, "seed {seed}: byte {b} changed without a write");
            } else {
                assert!(
                    covering.iter().any(|w| w.value == v),
                    "seed {seed}: byte {b} = {v} is from no covering write"
                );
            }
        }
        // No torn blocks: a block that only whole-block writes touched holds one write's data,
        // and every block holds the whole part of the write that landed last in it.
        for block in 0..region / bs {
            let (lo, hi) = (block * bs, (block + 1) * bs);
            let touching: Vec<&W> = writes
                .iter()
                .filter(|w| w.offset < hi && lo < w.end())
                .collect();
            let bytes = &mem[lo as usize..hi as usize];
            if !touching.is_empty() && touching.iter().all(|w| w.aligned(bs)) {
                assert!(
                    bytes.iter().all(|&v| v == bytes[0]),
                    "seed {seed}: block {block} is torn"
                );
            }
            if !touching.is_empty() {
                let last_whole = touching.iter().any(|w| {
                    let (a, b) = (w.offset.max(lo), w.end().min(hi));
                    mem[a as usize..b as usize].iter().all(|&v| v == w.value)
                });
                assert!(
                    last_whole,
                    "seed {seed}: no write is whole in block {block}"
                );
            }
        }
        // Overlapping pairs where one is serialising (unaligned) are ordered by start: the
        // earlier one's bytes never survive in the overlap.
        for a in &writes {
            for b in &writes {
                let ordered = !a.aligned(bs) || !b.aligned(bs);
                if rank[a.value as usize - 1] < rank[b.value as usize - 1] && ordered {
                    let (lo, hi) = (a.offset.max(b.offset), a.end().min(b.end()));
                    for x in lo..hi {
                        assert_ne!(
                            mem[x as usize], a.value,
                            "seed {seed}: write {} overtook later write {} at byte {x}",
                            a.value, b.value
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn reads_during_writes_see_old_or_new_per_block() {
    for seed in 21..=28u64 {
        let mut rng = Rng::new(seed);
        let bs = 4096u64;
        let slot = 16u64 << 10;
        let mut old = vec![0u8; 256 << 10];
        rng.fill(&mut old);
        // Sixteen writes, one per 16 KiB slot (non-overlapping, mostly unaligned).
        let writes: Vec<W> = (0..16u64)
            .map(|i| {
                let len = rng.range(1, slot);
                let offset = i * slot + rng.below(slot - len + 1);
                W {
                    offset,
                    len,
                    value: 0xf0 | i as u8,
                    zero: false,
                }
            })
            .collect();
        let mut s = Setup {
            mem: old.clone(),
            bounce: vec![0u8; 16 * 8192 + 4096],
        };
        let reads: Vec<(u64, u64)>;
        let outputs: Vec<Vec<u8>>;
        {
            let disk = RamDisk::<64>::new(
                &mut s.mem,
                bs as u32,
                RamConfig {
                    delay_polls: 3,
                    shuffle_seed: seed,
                },
            );
            let mut graph: Graph<4, 128> = Graph::new(&mut s.bounce, 8192);
            let leaf = graph.add_leaf("d0", &disk).unwrap();
            let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
            reads = (0..48)
                .map(|_| {
                    let len = rng.range(1, 40 << 10);
                    (rng.below((256 << 10) - len + 1), len)
                })
                .collect();
            let data: Vec<Vec<u8>> = writes
                .iter()
                .map(|w| vec![w.value; w.len as usize])
                .collect();
            let mut futs: Vec<ReadOrWrite<'_>> = Vec::new();
            let mut reads_left = reads.iter();
            for (w, d) in writes.iter().zip(&data) {
                let be = &be;
                futs.push(Box::pin(async move {
                    (be.write(w.offset, d).await, Vec::new())
                }));
                for &(off, len) in reads_left.by_ref().take(3) {
                    futs.push(Box::pin(async move {
                        let mut buf = vec![0u8; len as usize];
                        (be.read(off, &mut buf).await, buf)
                    }));
                }
            }
            let results = run_bounded(join_all(futs), 10_000_000);
            assert!(results.iter().all(|(r, _)| r.is_ok()));
            outputs = results
                .into_iter()
                .map(|(_, b)| b)
                .filter(|b| !b.is_empty())
                .collect();
        }
        let mut saw_old = 0;
        let mut saw_new = 0;
        for (&(off, len), out) in reads.iter().zip(&outputs) {
            for w in &writes {
                // Per block of the write: all old or all new.
                let mut block = w.offset / bs * bs;
                while block < w.end() {
                    let lo = block.max(w.offset).max(off);
                    let hi = (block + bs).min(w.end()).min(off + len);
                    if lo < hi {
                        let got = &out[(lo - off) as usize..(hi - off) as usize];
                        let is_new = got.iter().all(|&v| v == w.value);
                        let is_old = got == &old[lo as usize..hi as usize];
                        assert!(
                            is_new || is_old,
                            "seed {seed}: read at {off}+{len} saw a torn block at {block}"
                        );
                        saw_new += usize::from(is_new);
                        saw_old += usize::from(is_old && !is_new);
                    }
                    block += bs;
                }
            }
            // Outside every write: old bytes.
            for (i, &v) in out.iter().enumerate() {
                let b = off + i as u64;
                if !writes.iter().any(|w| w.covers(b)) {
                    assert_eq!(v, old[b as usize]);
                }
            }
        }
        assert!(
            saw_new > 0 && saw_old > 0,
            "reads did not overlap writes in time ({saw_old} old, {saw_new} new)"
        );
    }
}

// ---- Flush generations ------------------------------------------------------------------------

#[test]
fn concurrent_flushes_collapse() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<16>::new(
        &mut mem,
        512,
        RamConfig {
            delay_polls: 5,
            shuffle_seed: 9,
        },
    );
    let mut bounce = vec![0u8; 4 * 4096];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let raw = common::open(&mut graph, "driver=raw,offset=4096,file=d0").unwrap();
    let be = Backend::new(&graph, raw, BackendOptions::default()).unwrap();
    let flushes = || graph.node(leaf).unwrap().flushes_issued();

    // Nothing written: no device flush at all.
    block_on(join_all((0..4).map(|_| be.flush())))
        .into_iter()
        .for_each(|r| r.unwrap());
    assert_eq!((disk.stats().flushes, flushes()), (0, 0));

    block_on(be.write(100, &[1; 3000])).unwrap();
    let results = block_on(join_all((0..16).map(|_| be.flush())));
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        (disk.stats().flushes, flushes()),
        (1, 1),
        "16 concurrent flushes share one"
    );
    block_on(be.flush()).unwrap();
    assert_eq!(disk.stats().flushes, 1, "nothing new written");

    block_on(be.write(0, &[2; 512])).unwrap();
    block_on(be.flush()).unwrap();
    block_on(be.write_zeroes(0, 512, false)).unwrap();
    block_on(be.flush()).unwrap();
    block_on(be.discard(0, 4096)).unwrap();
    block_on(be.flush()).unwrap();
    assert_eq!(
        (disk.stats().flushes, flushes()),
        (4, 4),
        "each write-type request makes the next flush real"
    );
    assert_eq!(
        be.stats().kind(strata_block::backend::OpKind::Flush).ops,
        4 + 16 + 1 + 3
    );
}

#[test]
fn write_completing_during_a_flush_needs_another() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<16>::new(
        &mut mem,
        512,
        RamConfig {
            delay_polls: 6,
            shuffle_seed: 0,
        },
    );
    let mut bounce = vec![0u8; 4 * 4096];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    block_on(be.write(0, &[1; 512])).unwrap();

    let data = [2u8; 512];
    let mut write = pin!(be.write(512, &data));
    assert!(poll_once(write.as_mut()).is_pending()); // write submitted
    let mut first = pin!(be.flush());
    assert!(poll_once(first.as_mut()).is_pending()); // device flush submitted, covers write 1
    assert_eq!(disk.in_flight(), 2);
    // The write completes while the flush is still running.
    let w = Some(run_bounded(write.as_mut(), 100));
    assert_eq!(disk.in_flight(), 1, "the flush should still be in flight");
    // Flushes that start now must cover the write: they wait for the running flush, then flush
    // again (once, between the two of them).
    let mut second = pin!(be.flush());
    let mut third = pin!(be.flush());
    let (mut a, mut b, mut c) = (None, None, None);
    for _ in 0..1000 {
        if a.is_none() {
            if let Poll::Ready(r) = poll_once(first.as_mut()) {
                a = Some(r);
            }
        }
        if b.is_none() {
            if let Poll::Ready(r) = poll_once(second.as_mut()) {
                b = Some(r);
            }
        }
        if c.is_none() {
            if let Poll::Ready(r) = poll_once(third.as_mut()) {
                c = Some(r);
            }
        }
    }
    for r in [w, a, b, c] {
        r.expect("request did not complete").unwrap();
    }
    assert_eq!(
        (
            disk.stats().flushes,
            graph.node(leaf).unwrap().flushes_issued()
        ),
        (2, 2)
    );
}

// ---- Drain ------------------------------------------------------------------------------------

#[test]
fn drain_waits_for_in_flight_and_holds_new_requests() {
    let mut mem = vec![0u8; 256 << 10];
    let disk = RamDisk::<32>::new(
        &mut mem,
        4096,
        RamConfig {
            delay_polls: 40,
            shuffle_seed: 5,
        },
    );
    let mut bounce = vec![0u8; 8 * 4096];
    let mut graph: Graph<4, 32> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    let data: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i + 1; 8192]).collect();
    block_on(be.write(100_000, &[9; 512])).unwrap(); // so that the flush below has work
    let mut rbuf = vec![0u8; 5000];
    let mut slow: Vec<Pin<Box<dyn Future<Output = Result<()>> + '_>>> = Vec::new();
    for (i, d) in data.iter().enumerate() {
        slow.push(Box::pin(be.write(i as u64 * 8192, d)));
    }
    slow.push(Box::pin(be.read(70_000, &mut rbuf)));
    slow.push(Box::pin(be.flush()));
    let mut done = vec![false; slow.len()];
    for f in &mut slow {
        assert!(poll_once(f.as_mut()).is_pending());
    }
    assert_eq!(be.in_flight(), 10);
    assert!(disk.in_flight() > 0);

    let mut drain = pin!(be.drain());
    assert!(poll_once(drain.as_mut()).is_pending());
    let late_data = [0xeeu8; 4096];
    let mut late = pin!(be.write(0, &late_data));
    assert!(poll_once(late.as_mut()).is_pending());
    assert_eq!(
        be.in_flight(),
        10,
        "a request issued while draining started"
    );

    let mut drained = false;
    let mut drained_section = None;
    for _ in 0..10_000 {
        for (f, d) in slow.iter_mut().zip(done.iter_mut()) {
            if !*d {
                if let Poll::Ready(r) = poll_once(f.as_mut()) {
                    r.unwrap();
                    *d = true;
                }
            }
        }
        let in_flight = be.in_flight();
        let ready = match poll_once(drain.as_mut()) {
            Poll::Ready(section) => {
                drained_section = Some(section);
                true
            }
            Poll::Pending => false,
        };
        assert_eq!(
            ready,
            in_flight == 0,
            "drain ready={ready} with {in_flight} in flight"
        );
        assert!(
            poll_once(late.as_mut()).is_pending(),
            "held request ran while drained"
        );
        if ready {
            drained = true;
            break;
        }
    }
    assert!(drained);
    assert_eq!(disk.in_flight(), 0);
    let submitted = disk.stats().submitted;
    // Still drained after the drain future completed: the late request waits.
    for _ in 0..50 {
        assert!(poll_once(late.as_mut()).is_pending());
    }
    assert_eq!(disk.stats().submitted, submitted);
    assert_eq!(be.in_flight(), 0);
    drop(slow);
    drop(drained_section);
    run_bounded(late.as_mut(), 10_000).unwrap();
    let mut back = vec![0u8; 4096];
    block_on(be.read(0, &mut back)).unwrap();
    assert!(back.iter().all(|&b| b == 0xee));
}

#[test]
fn drain_nests() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<8>::new(&mut mem, 4096, RamConfig::default());
    let mut bounce = vec![0u8; 2 * 4096];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    let outer = block_on(be.drain());
    let inner = block_on(be.drain());
    drop(inner);
    let mut read = pin!(be.flush());
    for _ in 0..10 {
        assert!(poll_once(read.as_mut()).is_pending());
    }
    drop(outer);
    run_bounded(read, 100).unwrap();
}

// ---- Pools ------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Op {
    Read(u64, u64),
    Write(u64, u64, u8),
    Zeroes(u64, u64, bool),
    Flush,
}

fn random_op(rng: &mut Rng, lo: u64, hi: u64, value: u8) -> Op {
    let len = rng.range(1, (hi - lo).min(12 << 10));
    let off = lo + rng.below(hi - lo - len + 1);
    match rng.below(10) {
        0..=3 => Op::Read(off, len),
        4..=6 => Op::Write(off, len, value),
        7 | 8 => Op::Zeroes(off, len, rng.chance(50)),
        _ => Op::Flush,
    }
}

/// Runs `ops` at once; returns each read's data (empty for other ops).
fn run_ops(be: &Backend<'_, '_>, ops: &[Op]) -> Vec<Vec<u8>> {
    let futs = ops.iter().map(|&op| async move {
        match op {
            Op::Read(off, len) => {
                let mut buf = vec![0u8; len as usize];
                be.read(off, &mut buf).await.map(|()| buf)
            }
            Op::Write(off, len, v) => be
                .write(off, &vec![v; len as usize])
                .await
                .map(|()| Vec::new()),
            Op::Zeroes(off, len, unmap) => {
                be.write_zeroes(off, len, unmap).await.map(|()| Vec::new())
            }
            Op::Flush => be.flush().await.map(|()| Vec::new()),
        }
    });
    run_bounded(join_all(futs), 50_000_000)
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

fn exhaustion(features: DeviceFeatures, seed: u64) {
    let bs = 4096u64;
    let slot = 16u64 << 10;
    let len = 100 * slot;
    let mut rng = Rng::new(seed);
    let mut mem = vec![0u8; len as usize];
    rng.fill(&mut mem);
    let mut model = mem.clone();
    // Exactly one bounce buffer.
    let mut storage = vec![0u8; 2 * 4096];
    let bounce_mem = aligned(&mut storage, 4096, 4096);
    {
        let mut info = DeviceInfo::new(len, bs as u32);
        info.features = features;
        let disk = RamDisk::<1>::with_info(
            &mut mem,
            info,
            RamConfig {
                delay_polls: 2,
                shuffle_seed: seed,
            },
        );
        let mut graph: Graph<4, 2> = Graph::new(bounce_mem, 4096);
        assert_eq!(graph.bounce_buffers(), (1, 1));
        let leaf = graph.add_leaf("d0", &disk).unwrap();
        let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();

        // Phase 1: one op per 16 KiB slot, so the expected result is exact.
        let ops: Vec<Op> = (0..100u64)
            .map(|i| random_op(&mut rng, i * slot, (i + 1) * slot, i as u8 + 1))
            .collect();
        let out = run_ops(&be, &ops);
        for (op, data) in ops.iter().zip(&out) {
            match *op {
                Op::Read(off, n) => assert!(
                    data[..] == model[off as usize..(off + n) as usize],
                    "{op:?}"
                ),
                Op::Write(off, n, v) => model[off as usize..(off + n) as usize].fill(v),
                Op::Zeroes(off, n, _) => common::zero(&mut model, off, off + n),
                Op::Flush => {}
            }
        }
        // Phase 2: everything over 64 KiB: each byte ends as one of the ops covering it.
        let region = 64u64 << 10;
        let ops: Vec<Op> = (0..100u64)
            .map(|i| random_op(&mut rng, 0, region, 0x80 | i as u8))
            .collect();
        let before = model[..region as usize].to_vec();
        let out = run_ops(&be, &ops);
        let mut back = vec![0u8; region as usize];
        block_on(be.read(0, &mut back)).unwrap();
        for (b, &v) in back.iter().enumerate() {
            let b = b as u64;
            let mut allowed = vec![before[b as usize]];
            for op in &ops {
                match *op {
                    Op::Write(off, n, val) if off <= b && b < off + n => allowed.push(val),
                    Op::Zeroes(off, n, _) if off <= b && b < off + n => allowed.push(0),
                    _ => {}
                }
            }
            assert!(allowed.contains(&v), "byte {b} = {v}, allowed {allowed:?}");
            model[b as usize] = v;
        }
        // Reads of phase 2 saw, byte by byte, a value some op could have left there.
        for (op, data) in ops.iter().zip(&out) {
            if let Op::Read(off, _) = *op {
                for (i, &v) in data.iter().enumerate() {
                    let b = off + i as u64;
                    let ok = v == before[b as usize]
                        || ops.iter().any(|o| match *o {
                            Op::Write(o2, n, val) => o2 <= b && b < o2 + n && val == v,
                            Op::Zeroes(o2, n, _) => o2 <= b && b < o2 + n && v == 0,
                            _ => false,
                        });
                    assert!(ok, "read saw {v} at byte {b}");
                }
            }
        }
        assert_eq!(graph.tracked_in_use(), 0);
        assert_eq!(graph.bounce_buffers(), (1, 1));
        assert_eq!(disk.in_flight(), 0);
        assert_eq!(be.in_flight(), 0);
    }
    assert!(mem == model);
}

#[test]
fn pool_exhaustion_never_deadlocks() {
    exhaustion(
        DeviceFeatures::FLUSH | DeviceFeatures::WRITE_ZEROES | DeviceFeatures::WRITE_ZEROES_UNMAP,
        31,
    );
    // Write-zeroes by writing a zeroed bounce buffer: the one buffer is contended even more.
    exhaustion(DeviceFeatures::FLUSH, 32);
}

#[test]
fn empty_bounce_pool_fails_unaligned_requests() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<4>::new(
        &mut mem,
        4096,
        RamConfig {
            delay_polls: 1,
            shuffle_seed: 0,
        },
    );
    let mut nothing = [0u8; 0];
    let mut graph: Graph<4, 4> = Graph::new(&mut nothing, 4096);
    assert_eq!(graph.bounce_buffers(), (0, 0));
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    let mut storage = vec![0u8; 3 * 4096];
    let buf = aligned(&mut storage, 8192, 4096);
    let no_space = |r: Result<()>| matches!(r, Err(Error::NoSpace { .. }));
    assert!(no_space(run_bounded(be.read(100, &mut buf[..100]), 1000)));
    assert!(no_space(run_bounded(be.write(4000, &buf[..200]), 1000)));
    assert!(no_space(run_bounded(be.write_zeroes(10, 20, false), 1000)));
    // Aligned requests need no bounce buffer.
    buf.fill(3);
    run_bounded(be.write(4096, &buf[..4096]), 1000).unwrap();
    run_bounded(be.read(4096, &mut buf[4096..]), 1000).unwrap();
    assert!(buf[4096..].iter().all(|&b| b == 3));
    run_bounded(be.write_zeroes(0, 8192, true), 1000).unwrap();
    assert_eq!(graph.tracked_in_use(), 0);
    // Many at once: all fail or succeed, none hangs.
    let results = run_bounded(
        join_all((0..20u64).map(|i| be.write_zeroes(i * 100, 50, false))),
        100_000,
    );
    assert!(results.into_iter().all(no_space));
}

#[test]
fn bounce_buffers_smaller_than_a_block_are_unsupported() {
    let mut mem = vec![0u8; 64 << 10];
    let mut info = DeviceInfo::new(64 << 10, 4096);
    info.features = DeviceFeatures::FLUSH;
    let disk = RamDisk::<4>::with_info(&mut mem, info, RamConfig::default());
    let mut storage = vec![0u8; 5 * 1024];
    let mut graph: Graph<4, 4> = Graph::new(aligned(&mut storage, 4 * 1024, 1024), 1024);
    assert_eq!(graph.bounce_buffers(), (4, 4));
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    let mut buf = vec![0u8; 100];
    let unsupported = |r: Result<()>| matches!(r, Err(Error::Unsupported(_)));
    assert!(unsupported(run_bounded(be.read(10, &mut buf), 1000)));
    assert!(unsupported(run_bounded(be.write(10, &buf), 1000)));
    assert!(
        unsupported(run_bounded(be.write_zeroes(0, 4096, false), 1000)),
        "zero writes need a block-sized buffer"
    );
    assert_eq!(graph.bounce_buffers(), (4, 4));
    assert_eq!(graph.tracked_in_use(), 0);
}

/// Polls `futs` round-robin (each until it completes) and returns their results.
fn poll_all(futs: &mut [Pin<&mut dyn Future<Output = Result<()>>>]) -> Vec<Result<()>> {
    let mut out: Vec<Option<Result<()>>> = futs.iter().map(|_| None).collect();
    for _ in 0..100_000 {
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                if let Poll::Ready(r) = poll_once(f.as_mut()) {
                    *o = Some(r);
                }
            }
        }
        if out.iter().all(Option::is_some) {
            return out.into_iter().map(Option::unwrap).collect();
        }
    }
    panic!("requests did not complete");
}

#[test]
fn write_zeroes_is_ordered_as_one_request() {
    // Write-zeroes with unaligned edges, then an overlapping unaligned write started after it:
    // the write must land entirely after the zeroes, as for any two requests where one
    // serialises (and as QEMU, which tracks write-zeroes as one request).
    for (features, detect) in [
        (DeviceFeatures::FLUSH | DeviceFeatures::WRITE_ZEROES, false),
        (DeviceFeatures::FLUSH, false),
        (DeviceFeatures::FLUSH | DeviceFeatures::WRITE_ZEROES, true),
    ] {
        let mut mem = vec![0x11u8; 64 << 10];
        {
            let mut info = DeviceInfo::new(64 << 10, 4096);
            info.features = features;
            let disk = RamDisk::<16>::with_info(
                &mut mem,
                info,
                RamConfig {
                    delay_polls: 3,
                    shuffle_seed: 0,
                },
            );
            let mut bounce = vec![0u8; 5 * 4096];
            let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
            let leaf = graph.add_leaf("d0", &disk).unwrap();
            let mode = if detect {
                strata_block::DetectZeroes::On
            } else {
                strata_block::DetectZeroes::Off
            };
            let be = Backend::new(
                &graph,
                leaf,
                BackendOptions {
                    detect_zeroes: mode,
                    ..Default::default()
                },
            )
            .unwrap();
            let zeros = vec![0u8; 30_000];
            let data = vec![0xaau8; 19_500];
            let mut z: Pin<Box<dyn Future<Output = Result<()>> + '_>> = if detect {
                Box::pin(be.write(1000, &zeros))
            } else {
                Box::pin(be.write_zeroes(1000, 30_000, false))
            };
            assert!(poll_once(z.as_mut()).is_pending());
            let mut w = pin!(be.write(500, &data));
            let results = poll_all(&mut [z.as_mut(), w.as_mut()]);
            assert!(results.iter().all(Result::is_ok));
        }
        let expect = |b: usize| match b {
            0..500 => 0x11,
            500..20_000 => 0xaa,
            20_000..31_000 => 0,
            _ => 0x11,
        };
        let bad = (0..mem.len()).find(|&b| mem[b] != expect(b));
        assert_eq!(
            bad,
            None,
            "{features:?} detect={detect}: byte {:?} = {:?}",
            bad,
            bad.map(|b| mem[b])
        );
    }
}

#[test]
fn aligned_write_after_unaligned_zeroes_is_not_lost() {
    // The zeroes' read-modify-write of block 0 must not overwrite a later whole-block write of
    // block 0 with what it read before.
    for features in [
        DeviceFeatures::FLUSH | DeviceFeatures::WRITE_ZEROES,
        DeviceFeatures::FLUSH,
    ] {
        let mut mem = vec![0x11u8; 64 << 10];
        {
            let mut info = DeviceInfo::new(64 << 10, 4096);
            info.features = features;
            let disk = RamDisk::<16>::with_info(
                &mut mem,
                info,
                RamConfig {
                    delay_polls: 3,
                    shuffle_seed: 0,
                },
            );
            let mut bounce = vec![0u8; 5 * 4096];
            let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
            let leaf = graph.add_leaf("d0", &disk).unwrap();
            let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
            let data = vec![0xaau8; 4096];
            let mut z = pin!(be.write_zeroes(1000, 10_000, false));
            assert!(poll_once(z.as_mut()).is_pending());
            let mut a = pin!(be.write(0, &data));
            let mut b = pin!(be.write(8192, &data));
            let results = poll_all(&mut [z.as_mut(), a.as_mut(), b.as_mut()]);
            assert!(results.iter().all(Result::is_ok));
        }
        let expect = |x: usize| match x {
            0..4096 => 0xaa,
            4096..8192 => 0,
            8192..12_288 => 0xaa,
            _ => 0x11,
        };
        let bad = (0..mem.len()).find(|&x| mem[x] != expect(x));
        assert_eq!(bad, None, "{features:?}: byte {bad:?}");
    }
}
