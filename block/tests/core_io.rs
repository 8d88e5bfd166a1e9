//! The request path against a byte model: random sequential workloads over RAM disks of several
//! block sizes, limits and features, directly and through raw windows; device limits as seen by
//! a recording device; bounds and zero-length requests; accounting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{aligned, misaligned, open, Rec, Recorder, Rng};
use futures::executor::block_on;
use strata_block::backend::OpKind;
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::{DeviceFeatures, DeviceInfo, DeviceOp};
use strata_block::{Backend, BackendOptions, DetectZeroes, Error, Graph};

const ALL_FEATURES: DeviceFeatures = DeviceFeatures::FLUSH
    .union(DeviceFeatures::DISCARD)
    .union(DeviceFeatures::WRITE_ZEROES)
    .union(DeviceFeatures::WRITE_ZEROES_UNMAP);

/// One byte-model run.
struct ModelRun {
    block_size: u32,
    disk_len: usize,
    bounce_size: usize,
    /// Changes to the device's info (limits, features).
    tweak: fn(&mut DeviceInfo),
    /// A raw window `(offset, size)` to go through, or the device directly.
    window: Option<(u64, u64)>,
    delay_polls: u32,
    ops: usize,
    seed: u64,
}

impl Default for ModelRun {
    fn default() -> Self {
        Self {
            block_size: 4096,
            disk_len: 256 << 10,
            bounce_size: 8192,
            tweak: |_| {},
            window: None,
            delay_polls: 0,
            ops: 2000,
            seed: 1,
        }
    }
}

/// A random range of `0..=size` bytes: empty, tiny, block-aligned or anything up to 20 KiB.
fn random_range(rng: &mut Rng, size: u64, bs: u64) -> (u64, u64) {
    let len = match rng.below(10) {
        0 => 0,
        1 | 2 => rng.range(1, 64),
        3 => rng.range(1, 5) * bs,
        _ => rng.range(1, 20 << 10),
    }
    .min(size);
    let off = if rng.chance(25) {
        rng.below((size - len) / bs + 1) * bs
    } else {
        rng.below(size - len + 1)
    };
    (off, len)
}

fn run_model(run: &ModelRun) {
    let mut rng = Rng::new(run.seed);
    let mut mem = vec![0u8; run.disk_len];
    rng.fill(&mut mem);
    let mut model = mem.clone();
    let mut bounce = vec![0u8; run.bounce_size * 4 + 4096];
    let mut scratch = vec![0u8; (20 << 10) + 64];
    let mut stats_ops = [0u64; 5];
    {
        let mut info = DeviceInfo::new(run.disk_len as u64, run.block_size);
        info.features = ALL_FEATURES;
        (run.tweak)(&mut info);
        let features = info.features;
        let disk = RamDisk::<16>::with_info(
            &mut mem,
            info,
            RamConfig {
                delay_polls: run.delay_polls,
                shuffle_seed: 0,
            },
        );
        let mut graph: Graph<4, 16> = Graph::new(&mut bounce, run.bounce_size);
        let leaf = graph.add_leaf("d0", &disk).unwrap();
        let granularity = u64::from(graph.node(leaf).unwrap().limits.discard_alignment);
        let (node, base, size) = match run.window {
            None => (leaf, 0, run.disk_len as u64),
            Some((offset, size)) => (
                open(
                    &mut graph,
                    &format!("driver=raw,offset={offset},size={size},file=d0"),
                )
                .unwrap(),
                offset,
                size,
            ),
        };
        let be = Backend::new(&graph, node, BackendOptions::default()).unwrap();
        assert_eq!(be.size(), size);
        let bs = u64::from(run.block_size);
        for i in 0..run.ops {
            let (off, len) = random_range(&mut rng, size, bs);
            let (lo, hi) = ((base + off) as usize, (base + off + len) as usize);
            // Caller memory at a random small misalignment.
            let skew = rng.below(8) as usize;
            let buf = &mut scratch[skew..skew + len as usize];
            match rng.below(100) {
                0..=29 => {
                    block_on(be.read(off, buf)).unwrap();
                    assert!(
                        buf[..] == model[lo..hi],
                        "op {i}: read {len} bytes at {off} differs from the model"
                    );
                    stats_ops[0] += 1;
                }
                30..=64 => {
                    if rng.chance(10) {
                        buf.fill(0);
                    } else {
                        rng.fill(buf);
                    }
                    block_on(be.write(off, buf)).unwrap();
                    model[lo..hi].copy_from_slice(buf);
                    stats_ops[1] += 1;
                }
                65..=79 => {
                    block_on(be.write_zeroes(off, len, rng.chance(50))).unwrap();
                    common::zero(&mut model, lo as u64, hi as u64);
                    stats_ops[2] += 1;
                }
                80..=94 => {
                    block_on(be.discard(off, len)).unwrap();
                    if features.contains(DeviceFeatures::DISCARD) {
                        common::discard(&mut model, lo as u64, hi as u64, granularity);
                    }
                    stats_ops[3] += 1;
                }
                _ => {
                    block_on(be.flush()).unwrap();
                    stats_ops[4] += 1;
                }
            }
            assert_eq!(graph.tracked_in_use(), 0);
            assert_eq!(graph.bounce_buffers().0, graph.bounce_buffers().1);
        }
        let mut all = vec![0u8; size as usize];
        block_on(be.read(0, &mut all)).unwrap();
        assert!(
            all[..] == model[base as usize..(base + size) as usize],
            "final read differs from the model"
        );
        let stats = be.stats();
        for (kind, n) in [
            OpKind::Read,
            OpKind::Write,
            OpKind::WriteZeroes,
            OpKind::Discard,
            OpKind::Flush,
        ]
        .into_iter()
        .zip(stats_ops)
        {
            let extra = u64::from(kind == OpKind::Read); // the final read
            assert_eq!(stats.kind(kind).ops, n + extra, "{kind:?} count");
            assert_eq!(stats.kind(kind).errors, 0);
        }
        assert_eq!(disk.in_flight(), 0);
    }
    // The whole device, bytes outside a window included.
    assert!(mem == model, "device contents differ from the model");
}

#[test]
fn model_block_4096() {
    run_model(&ModelRun::default());
}

#[test]
fn model_block_4096_delayed_one_block_bounce() {
    run_model(&ModelRun {
        bounce_size: 4096,
        delay_polls: 2,
        seed: 2,
        ..Default::default()
    });
}

#[test]
fn model_block_512() {
    run_model(&ModelRun {
        block_size: 512,
        disk_len: 128 << 10,
        bounce_size: 4096,
        delay_polls: 1,
        seed: 3,
        ..Default::default()
    });
}

#[test]
fn model_block_1() {
    run_model(&ModelRun {
        block_size: 1,
        disk_len: 64 << 10,
        bounce_size: 4096,
        seed: 4,
        ..Default::default()
    });
}

#[test]
fn model_raw_window_aligned() {
    run_model(&ModelRun {
        window: Some((8192, 128 << 10)),
        seed: 5,
        ..Default::default()
    });
}

#[test]
fn model_raw_window_unaligned() {
    // Every request is misaligned at the device: all of them go through read-modify-write.
    run_model(&ModelRun {
        window: Some((5000, 100_352)), // sizes are whole sectors (QEMU refuses others)
        delay_polls: 1,
        seed: 6,
        ..Default::default()
    });
}

#[test]
fn model_raw_window_block_512() {
    run_model(&ModelRun {
        block_size: 512,
        disk_len: 128 << 10,
        bounce_size: 2048,
        window: Some((1536, 96 << 10)),
        seed: 7,
        ..Default::default()
    });
}

#[test]
fn model_no_optional_features() {
    // Write-zeroes falls back to zero writes; discard is a no-op.
    run_model(&ModelRun {
        block_size: 512,
        disk_len: 128 << 10,
        bounce_size: 4096,
        tweak: |i| i.features = DeviceFeatures::FLUSH,
        seed: 8,
        ..Default::default()
    });
}

#[test]
fn model_coarse_discard_granularity() {
    run_model(&ModelRun {
        block_size: 512,
        disk_len: 128 << 10,
        bounce_size: 4096,
        tweak: |i| i.discard_alignment = 4096,
        window: Some((3000, 100 << 10)),
        seed: 9,
        ..Default::default()
    });
}

#[test]
fn model_small_transfers_and_memory_alignment() {
    // Requests must be cut to 4 KiB segments and 8 KiB transfers, bounce windows included, and
    // caller memory that is not 512-aligned must be bounced.
    run_model(&ModelRun {
        block_size: 512,
        disk_len: 128 << 10,
        bounce_size: 16 << 10,
        tweak: |i| {
            i.mem_alignment = 512;
            i.max_transfer = 8 << 10;
            i.max_segment_size = 4 << 10;
            i.features = DeviceFeatures::FLUSH | DeviceFeatures::DISCARD; // zeroes by writes
        },
        delay_polls: 1,
        seed: 10,
        ..Default::default()
    });
}

#[test]
fn model_one_block_transfers() {
    run_model(&ModelRun {
        tweak: |i| i.max_transfer = 4096,
        bounce_size: 16 << 10,
        seed: 11,
        ..Default::default()
    });
}

// ---- Limits, as the device sees them ----------------------------------------------------------

fn limited_info(capacity: u64) -> DeviceInfo {
    let mut info = DeviceInfo::new(capacity, 512);
    info.features = ALL_FEATURES;
    info.max_transfer = 8 << 10;
    info.max_segment_size = 4 << 10;
    info.mem_alignment = 512;
    info
}

fn check_limits(log: &[Rec], info: &DeviceInfo) {
    for r in log {
        assert!(r.accepted, "device refused {r:?}");
        assert_eq!(r.offset % u64::from(info.block_size), 0, "{r:?}");
        assert_eq!(r.len % u64::from(info.block_size), 0, "{r:?}");
        if matches!(r.op, DeviceOp::Read | DeviceOp::Write) {
            assert!(
                r.len <= u64::from(info.max_transfer),
                "transfer too long: {r:?}"
            );
            assert!(r.segments.len() <= usize::from(info.max_segments), "{r:?}");
            assert_eq!(r.segments.iter().map(|s| s.1 as u64).sum::<u64>(), r.len);
            for &(addr, len) in &r.segments {
                assert!(
                    len <= info.max_segment_size as usize,
                    "segment too long: {r:?}"
                );
                assert_eq!(
                    addr % info.mem_alignment as usize,
                    0,
                    "misaligned segment: {r:?}"
                );
                assert_eq!(
                    len % info.mem_alignment as usize,
                    0,
                    "misaligned segment length: {r:?}"
                );
            }
        }
    }
}

#[test]
fn limits_are_respected_at_the_device() {
    let mut mem = vec![0u8; 256 << 10];
    let info = limited_info(mem.len() as u64);
    let disk = RamDisk::<8>::with_info(&mut mem, info.clone(), RamConfig::default());
    let rec = Recorder::new(&disk);
    // Bounce buffers larger than a transfer: bounced windows must be cut too.
    let mut bounce = vec![0u8; 3 * (32 << 10)];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 32 << 10);
    let leaf = graph.add_leaf("d0", &rec).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    let mut storage = vec![0u8; (64 << 10) + 8192];

    // Aligned request, aligned memory: direct, cut into 4 KiB pieces.
    let buf = aligned(&mut storage, 40 << 10, 4096);
    buf.fill(0x11);
    block_on(be.write(8192, buf)).unwrap();
    let log = rec.take();
    check_limits(&log, &info);
    assert!(log.iter().all(|r| r.op == DeviceOp::Write));
    assert_eq!(log.len(), 10);
    let base = buf.as_ptr() as usize;
    assert!(
        log.iter()
            .all(|r| r.segments[0].0 >= base && r.segments[0].0 < base + buf.len()),
        "aligned memory goes straight to the device"
    );

    // Aligned request, misaligned memory: every byte goes through (aligned) bounce buffers.
    let buf = misaligned(&mut storage, 40 << 10, 4096, 3);
    buf.fill(0x22);
    block_on(be.write(8192, buf)).unwrap();
    let log = rec.take();
    check_limits(&log, &info);
    let (lo, hi) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
    assert!(
        log.iter()
            .all(|r| r.segments.iter().all(|&(a, _)| a < lo || a >= hi)),
        "misaligned memory must not reach the device"
    );
    let mut back = vec![0u8; 40 << 10];
    block_on(be.read(8192, &mut back)).unwrap();
    assert!(back.iter().all(|&b| b == 0x22));
    rec.take();

    // Misaligned memory for a read, unaligned range.
    let buf = misaligned(&mut storage, 30_001, 4096, 5);
    block_on(be.read(8192 + 77, buf)).unwrap();
    assert!(buf.iter().all(|&b| b == 0x22));
    check_limits(&rec.take(), &info);

    // Unaligned write: read-modify-write, all within limits.
    let buf = misaligned(&mut storage, 20_000, 4096, 0);
    buf.fill(0x33);
    block_on(be.write(100, buf)).unwrap();
    check_limits(&rec.take(), &info);

    // Write-zeroes and discard go to the device in max_transfer pieces.
    block_on(be.write_zeroes(0, 64 << 10, false)).unwrap();
    let log = rec.take();
    check_limits(&log, &info);
    assert!(
        log.iter()
            .all(|r| r.op == DeviceOp::WriteZeroes { unmap: false }),
        "{log:?}"
    );
    assert!(log.iter().all(|r| r.len <= 8192));
    block_on(be.discard(0, 64 << 10)).unwrap();
    let log = rec.take();
    assert!(
        log.iter()
            .all(|r| r.op == DeviceOp::Discard && r.len <= 8192),
        "{log:?}"
    );
    assert_eq!(log.iter().map(|r| r.len).sum::<u64>(), 64 << 10);
}

#[test]
fn write_zeroes_without_device_support_writes_zeros() {
    let mut mem = vec![0xffu8; 128 << 10];
    let mut info = limited_info(mem.len() as u64);
    info.features = DeviceFeatures::FLUSH;
    let disk = RamDisk::<8>::with_info(&mut mem, info.clone(), RamConfig::default());
    let rec = Recorder::new(&disk);
    let mut bounce = vec![0u8; 3 * (16 << 10)];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 16 << 10);
    let leaf = graph.add_leaf("d0", &rec).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    for unmap in [false, true] {
        block_on(be.write_zeroes(1000, 50_000, unmap)).unwrap();
        let log = rec.take();
        check_limits(&log, &info);
        assert!(
            log.iter()
                .all(|r| matches!(r.op, DeviceOp::Read | DeviceOp::Write)),
            "{log:?}"
        );
        let mut back = vec![0u8; 60_000];
        block_on(be.read(0, &mut back)).unwrap();
        assert!(back[..1000].iter().all(|&b| b == 0xff));
        assert!(back[1000..51_000].iter().all(|&b| b == 0));
        assert!(back[51_000..].iter().all(|&b| b == 0xff));
        rec.take();
        block_on(be.write(0, &[0xff; 60_000])).unwrap();
        rec.take();
    }
}

#[test]
fn discard_without_device_support_is_a_no_op() {
    let mut mem = vec![0x5au8; 64 << 10];
    let mut info = DeviceInfo::new(mem.len() as u64, 4096);
    info.features = DeviceFeatures::FLUSH | DeviceFeatures::WRITE_ZEROES;
    let disk = RamDisk::<8>::with_info(&mut mem, info, RamConfig::default());
    let rec = Recorder::new(&disk);
    let mut bounce = vec![0u8; 3 * 4096];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d0", &rec).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    block_on(be.discard(0, 64 << 10)).unwrap();
    block_on(be.discard(100, 10_000)).unwrap();
    assert!(rec.take_all().is_empty());
    assert_eq!(be.stats().kind(OpKind::Discard).ops, 2);
    let mut back = vec![0u8; 64 << 10];
    block_on(be.read(0, &mut back)).unwrap();
    assert!(back.iter().all(|&b| b == 0x5a));
    // Nothing was written: no flush needed either.
    block_on(be.flush()).unwrap();
    assert_eq!(disk.stats().flushes, 0);
}

#[test]
fn discard_sends_only_the_aligned_part() {
    let mut mem = vec![0x5au8; 64 << 10];
    let mut info = DeviceInfo::new(mem.len() as u64, 512);
    info.features = ALL_FEATURES;
    info.discard_alignment = 4096;
    let disk = RamDisk::<8>::with_info(&mut mem, info, RamConfig::default());
    let rec = Recorder::new(&disk);
    let mut bounce = vec![0u8; 3 * 4096];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d0", &rec).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    block_on(be.discard(512, 4096)).unwrap(); // no whole granule
    assert!(rec.take_all().is_empty());
    block_on(be.discard(1000, 20_000)).unwrap(); // granules 4096..20480
    let log = rec.take();
    assert_eq!(log.first().map(|r| r.offset), Some(4096));
    assert_eq!(log.iter().map(|r| r.len).sum::<u64>(), 16384);
    let mut back = vec![0u8; 64 << 10];
    block_on(be.read(0, &mut back)).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0x5a));
    assert!(back[4096..20480].iter().all(|&b| b == 0));
    assert!(back[20480..].iter().all(|&b| b == 0x5a));
}

#[test]
fn detect_zeroes_turns_zero_writes_into_write_zeroes() {
    for (mode, unmap_feature, expect) in [
        (
            DetectZeroes::On,
            true,
            Some(DeviceOp::WriteZeroes { unmap: false }),
        ),
        (
            DetectZeroes::Unmap,
            true,
            Some(DeviceOp::WriteZeroes { unmap: true }),
        ),
        (
            DetectZeroes::Unmap,
            false,
            Some(DeviceOp::WriteZeroes { unmap: false }),
        ),
        (DetectZeroes::Off, true, None),
    ] {
        let mut mem = vec![0x77u8; 64 << 10];
        let mut info = DeviceInfo::new(mem.len() as u64, 4096);
        info.features = DeviceFeatures::FLUSH | DeviceFeatures::WRITE_ZEROES;
        if unmap_feature {
            info.features |= DeviceFeatures::WRITE_ZEROES_UNMAP;
        }
        let disk = RamDisk::<8>::with_info(&mut mem, info, RamConfig::default());
        let rec = Recorder::new(&disk);
        let mut bounce = vec![0u8; 3 * 4096];
        let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
        let leaf = graph.add_leaf("d0", &rec).unwrap();
        let be = Backend::new(
            &graph,
            leaf,
            BackendOptions {
                detect_zeroes: mode,
                ..Default::default()
            },
        )
        .unwrap();
        block_on(be.write(8192, &[0u8; 16384])).unwrap();
        let log = rec.take();
        match expect {
            Some(op) => assert!(
                log.len() == 1 && log[0].op == op && log[0].offset == 8192 && log[0].len == 16384,
                "{mode:?}: {log:?}"
            ),
            None => assert!(
                log.iter().all(|r| r.op == DeviceOp::Write),
                "{mode:?}: {log:?}"
            ),
        }
        // A write with data stays a write.
        let mut data = [0u8; 4096];
        data[4095] = 1;
        block_on(be.write(0, &data)).unwrap();
        assert!(rec.take().iter().all(|r| r.op == DeviceOp::Write));
        let mut back = vec![0xeeu8; 32 << 10];
        block_on(be.read(0, &mut back)).unwrap();
        assert_eq!(back[4095], 1);
        assert!(back[8192..24576].iter().all(|&b| b == 0));
        assert!(back[24576..].iter().all(|&b| b == 0x77));
        // Accounted as writes.
        assert_eq!(be.stats().kind(OpKind::Write).ops, 2);
        assert_eq!(be.stats().kind(OpKind::WriteZeroes).ops, 0);
    }
}

#[test]
fn accounting() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<8>::new(&mut mem, 4096, RamConfig::default());
    let mut bounce = vec![0u8; 3 * 4096];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    fn clock() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NOW: AtomicU64 = AtomicU64::new(0);
        NOW.fetch_add(1000, Ordering::Relaxed)
    }
    let be = Backend::new(
        &graph,
        leaf,
        BackendOptions {
            clock,
            ..Default::default()
        },
    )
    .unwrap();
    let mut buf = vec![0u8; 10_000];
    block_on(be.read(0, &mut buf)).unwrap();
    block_on(be.read(100, &mut buf[..5])).unwrap();
    block_on(be.write(300, &buf[..700])).unwrap();
    block_on(be.write_zeroes(20_000, 3000, true)).unwrap();
    block_on(be.discard(0, 8192)).unwrap();
    block_on(be.flush()).unwrap();
    assert_eq!(
        be.read(60_000, &mut buf).await_err(),
        Error::OutOfRange {
            offset: 60_000,
            len: 10_000,
            size: 64 << 10
        }
    );
    assert!(block_on(be.write(64 << 10, &buf[..1])).is_err());
    let s = be.stats();
    assert_eq!(
        (
            s.kind(OpKind::Read).ops,
            s.kind(OpKind::Read).bytes,
            s.kind(OpKind::Read).errors
        ),
        (2, 10_005, 1)
    );
    assert_eq!(
        (
            s.kind(OpKind::Write).ops,
            s.kind(OpKind::Write).bytes,
            s.kind(OpKind::Write).errors
        ),
        (1, 700, 1)
    );
    assert_eq!(
        (
            s.kind(OpKind::WriteZeroes).ops,
            s.kind(OpKind::WriteZeroes).bytes
        ),
        (1, 3000)
    );
    assert_eq!(
        (s.kind(OpKind::Discard).ops, s.kind(OpKind::Discard).bytes),
        (1, 8192)
    );
    assert_eq!(s.kind(OpKind::Flush).ops, 1);
    assert_eq!(
        s.wr_highest_offset, 23_000,
        "discards and failed writes do not count"
    );
    // The fake clock advances 1000 ns per call, so every successful op took 1000 ns.
    assert_eq!(s.kind(OpKind::Read).total_ns, 2000);
    assert_eq!(s.kind(OpKind::Read).histogram.iter().sum::<u64>(), 2);
    assert_eq!(s.kind(OpKind::Read).percentile_ns(500), 1023);
}

/// `block_on(fut).unwrap_err()` with a shorter name.
trait AwaitErr {
    fn await_err(self) -> Error;
}

impl<F: core::future::Future<Output = strata_block::Result<()>>> AwaitErr for F {
    fn await_err(self) -> Error {
        block_on(self).unwrap_err()
    }
}

// ---- Bounds and zero length -------------------------------------------------------------------

#[test]
fn out_of_range_and_zero_length() {
    let mut mem = vec![0x42u8; 64 << 10];
    let disk = RamDisk::<8>::new(&mut mem, 4096, RamConfig::default());
    let rec = Recorder::new(&disk);
    let mut bounce = vec![0u8; 3 * 4096];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
    graph.add_leaf("d0", &rec).unwrap();
    let node = open(&mut graph, "driver=raw,offset=4096,size=32K,file=d0").unwrap();
    let be = Backend::new(&graph, node, BackendOptions::default()).unwrap();
    let size = 32 << 10;
    assert_eq!(be.size(), size);
    let mut buf = vec![0u8; 8192];
    let oor = |offset, len| Error::OutOfRange { offset, len, size };
    assert_eq!(
        be.read(size - 100, &mut buf[..101]).await_err(),
        oor(size - 100, 101)
    );
    assert_eq!(
        be.read(size + 1, &mut buf[..0]).await_err(),
        oor(size + 1, 0)
    );
    assert_eq!(
        be.read(u64::MAX, &mut buf[..1]).await_err(),
        oor(u64::MAX, 1)
    );
    assert_eq!(be.write(size, &buf[..1]).await_err(), oor(size, 1));
    assert_eq!(
        be.write(u64::MAX - 10, &buf[..100]).await_err(),
        oor(u64::MAX - 10, 100)
    );
    assert_eq!(
        be.write_zeroes(size - 4096, 8192, false).await_err(),
        oor(size - 4096, 8192)
    );
    assert_eq!(
        be.write_zeroes(1, u64::MAX, false).await_err(),
        oor(1, u64::MAX)
    );
    assert_eq!(
        be.discard(size + 4096, 4096).await_err(),
        oor(size + 4096, 4096)
    );
    assert!(
        rec.take_all().is_empty(),
        "nothing out of range reaches the device"
    );

    // Zero-length requests anywhere up to the end succeed and touch nothing.
    for offset in [0, 1, 4096, size - 1, size] {
        block_on(be.read(offset, &mut buf[..0])).unwrap();
        block_on(be.write(offset, &buf[..0])).unwrap();
        block_on(be.write_zeroes(offset, 0, true)).unwrap();
        block_on(be.discard(offset, 0)).unwrap();
    }
    assert!(
        rec.take_all().is_empty(),
        "zero-length requests reach the device"
    );
    // The last byte is reachable; nothing around the window changed.
    block_on(be.write(size - 1, &[7])).unwrap();
    block_on(be.read(size - 2, &mut buf[..2])).unwrap();
    assert_eq!(&buf[..2], &[0x42, 7]);
    assert_eq!(graph.tracked_in_use(), 0);
    drop(be);
    drop(graph);
    drop(rec);
    assert!(mem[..4096 + size as usize - 1].iter().all(|&b| b == 0x42));
    assert_eq!(mem[4096 + size as usize - 1], 7);
    assert!(mem[4096 + size as usize..].iter().all(|&b| b == 0x42));
}

#[test]
fn read_only_backend_refuses_writes() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<8>::new(&mut mem, 4096, RamConfig::default());
    let mut bounce = vec![0u8; 3 * 4096];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let be = Backend::new(
        &graph,
        leaf,
        BackendOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(be.write(0, &[1; 512]).await_err(), Error::ReadOnly);
    assert_eq!(be.write(0, &[]).await_err(), Error::ReadOnly);
    assert_eq!(be.write_zeroes(0, 4096, false).await_err(), Error::ReadOnly);
    assert_eq!(be.discard(0, 4096).await_err(), Error::ReadOnly);
    block_on(be.flush()).unwrap();
    let mut buf = [0u8; 512];
    block_on(be.read(0, &mut buf)).unwrap();
    assert_eq!(disk.stats().writes, 0);
    assert_eq!(be.stats().kind(OpKind::Write).errors, 2);
}

#[test]
fn ram_disk_capacity_is_whole_blocks() {
    let mut mem = vec![0u8; 10_000];
    let disk = RamDisk::<4>::with_info(
        &mut mem,
        DeviceInfo::new(1 << 20, 4096),
        RamConfig::default(),
    );
    use strata_block::dev::BlockDevice;
    assert_eq!(disk.info().capacity, 8192);
    let mut mem = vec![0u8; 10_000];
    let disk = RamDisk::<4>::new(&mut mem, 4096, RamConfig::default());
    assert_eq!(disk.info().capacity, 8192);
}

#[test]
fn plugged_requests_complete_after_unplug() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<8>::new(
        &mut mem,
        512,
        RamConfig {
            delay_polls: 2,
            shuffle_seed: 3,
        },
    );
    let mut bounce = vec![0u8; 3 * 4096];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d0", &disk).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    be.plug();
    be.plug();
    let data: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i + 1; 3000]).collect();
    let results = block_on(futures::future::join_all(
        data.iter()
            .enumerate()
            .map(|(i, d)| be.write(i as u64 * 4000, d)),
    ));
    assert!(results.iter().all(Result::is_ok));
    be.unplug();
    be.unplug();
    let mut back = vec![0u8; 32_000];
    block_on(be.read(0, &mut back)).unwrap();
    for (i, chunk) in back.chunks(4000).enumerate() {
        assert!(chunk[..3000].iter().all(|&b| b == i as u8 + 1));
        assert!(chunk[3000..].iter().all(|&b| b == 0));
    }
}

// ---- Device errors ----------------------------------------------------------------------------

#[test]
fn device_errors_propagate_and_release_everything() {
    use common::Faulty;
    use strata_block::dev::DeviceError;
    let io = Err(Error::Device(DeviceError::Io));
    let mut mem = vec![0x10u8; 64 << 10];
    let disk = RamDisk::<8>::new(
        &mut mem,
        4096,
        RamConfig {
            delay_polls: 2,
            shuffle_seed: 0,
        },
    );
    let dev = Faulty::new(&disk);
    let mut bounce = vec![0u8; 3 * 4096];
    let mut graph: Graph<4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("d0", &dev).unwrap();
    let be = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
    let clean = |graph: &Graph<4, 16>| {
        assert_eq!(graph.tracked_in_use(), 0);
        assert_eq!(graph.bounce_buffers().0, graph.bounce_buffers().1);
        assert_eq!(disk.in_flight(), 0);
    };

    dev.fail_next(|op| op == DeviceOp::Write, 1);
    assert_eq!(block_on(be.write(0, &[1; 8192])), io);
    clean(&graph);
    // (The device did write before reporting the error; restore.)
    block_on(be.write(0, &[0x10; 8192])).unwrap();
    dev.fail_next(|op| op == DeviceOp::Read, 1);
    assert_eq!(
        block_on(be.write(100, &[2; 100])),
        io,
        "read-modify-write's read fails"
    );
    let mut buf = [0u8; 200];
    block_on(be.read(50, &mut buf)).unwrap();
    assert_eq!(buf, [0x10; 200], "nothing written after the failed read");
    dev.fail_next(|op| op == DeviceOp::Read, 1);
    assert_eq!(block_on(be.read(50, &mut buf)), io);
    dev.fail_next(|op| matches!(op, DeviceOp::WriteZeroes { .. }), 1);
    assert_eq!(block_on(be.write_zeroes(0, 8192, false)), io);
    dev.fail_next(|op| op == DeviceOp::Discard, 1);
    assert_eq!(block_on(be.discard(0, 8192)), io);
    clean(&graph);

    // A failed flush is not remembered as done: the next one flushes again, and of concurrent
    // flushes waiting on a failed one, one flushes for the others.
    block_on(be.write(0, &[3; 4096])).unwrap();
    let issued = || graph.node(leaf).unwrap().flushes_issued();
    dev.fail_next(|op| op == DeviceOp::Flush, 1);
    assert_eq!(block_on(be.flush()), io);
    block_on(be.flush()).unwrap();
    assert_eq!(issued(), 2);
    block_on(be.flush()).unwrap();
    assert_eq!(issued(), 2);
    block_on(be.write(0, &[4; 4096])).unwrap();
    dev.fail_next(|op| op == DeviceOp::Flush, 1);
    let results = block_on(futures::future::join_all((0..3).map(|_| be.flush())));
    assert_eq!(results, [io, Ok(()), Ok(())]);
    assert_eq!(issued(), 4);
    clean(&graph);

    let s = be.stats();
    assert_eq!(s.kind(OpKind::Write).errors, 2);
    assert_eq!(s.kind(OpKind::Read).errors, 1);
    assert_eq!(s.kind(OpKind::WriteZeroes).errors, 1);
    assert_eq!(s.kind(OpKind::Discard).errors, 1);
    assert_eq!(s.kind(OpKind::Flush).errors, 2);
    assert_eq!(s.wr_highest_offset, 8192);
}
