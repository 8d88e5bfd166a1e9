//! The copy loop over RAM disks: raw and qcow2 sources, several workers, the policies, order,
//! units, sparse runs and errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use core::cell::RefCell;

use futures::executor::block_on;
use futures::future::join_all;

use super::*;
use crate::dev::ram::{RamConfig, RamDisk};
use crate::dev::BlockDevice;
use crate::driver::qcow2::create::{create, CreateOptions};
use crate::io::cache::CacheSlot;
use crate::{Backend, BackendOptions, Graph};

const MIB: u64 = 1 << 20;
const STANDARD: Standard = Standard { base_depth: None };

/// `len` bytes of `b` at `offset`.
fn read(b: &Backend<'_, '_>, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    block_on(b.read(offset, &mut v)).unwrap();
    v
}

/// A target that records what it was asked to do, then does it on a backend.
struct Recorder<'a, 'g, 'd> {
    inner: &'a Backend<'g, 'd>,
    log: RefCell<Vec<(bool, u64, u64)>>,
}

impl CopyTarget for Recorder<'_, '_, '_> {
    async fn write(&self, offset: u64, data: &[u8]) -> crate::Result<()> {
        self.log
            .borrow_mut()
            .push((true, offset, data.len() as u64));
        self.inner.write(offset, data).await
    }
    async fn write_zeroes(&self, offset: u64, len: u64) -> crate::Result<()> {
        self.log.borrow_mut().push((false, offset, len));
        self.inner.write_zeroes(offset, len, false).await
    }
}

/// Runs `workers` workers with `chunk`-byte buffers (and compare buffers).
fn run<T: CopyTarget, P: ExtentPolicy, H: CopyHooks>(
    copy: &Copy<'_, '_, '_, T, P, H>,
    workers: usize,
) {
    let chunk = copy.config().chunk as usize;
    let mut bufs: Vec<(Vec<u8>, Vec<u8>)> = (0..workers)
        .map(|_| (vec![0u8; chunk], vec![0u8; chunk]))
        .collect();
    block_on(join_all(bufs.iter_mut().map(|(b, c)| copy.worker(b, c))));
}

fn pattern(i: usize) -> u8 {
    (i / 512 % 251) as u8 + 1
}

#[test]
fn raw_to_raw_with_workers_copies_data_and_skips_zero_runs() {
    let size = 8 * MIB as usize;
    let mut src_mem: Vec<u8> = (0..size).map(pattern).collect();
    src_mem[MIB as usize..3 * MIB as usize].fill(0); // 2 MiB of zeros inside the data
    src_mem[5 * MIB as usize + 4096..5 * MIB as usize + 8192].fill(0); // one 4 KiB block
    let expect = src_mem.clone();
    let mut dst_mem = vec![0u8; size];
    let src = RamDisk::<'_, 16>::new(&mut src_mem, 512, RamConfig::default());
    let dst = RamDisk::<'_, 16>::new(
        &mut dst_mem,
        512,
        RamConfig {
            shuffle_seed: 7,
            ..RamConfig::default()
        },
    );
    let mut bounce = vec![0u8; 8 * 65536];
    let mut graph: Graph<'_, 4, 64> = Graph::new(&mut bounce, 65536);
    let s = graph.add_leaf("s", &src).unwrap();
    let d = graph.add_leaf("d", &dst).unwrap();
    let sb = Backend::new(
        &graph,
        s,
        BackendOptions {
            read_only: true,
            ..BackendOptions::default()
        },
    )
    .unwrap();
    let db = Backend::new(&graph, d, BackendOptions::default()).unwrap();
    let claimed = RefCell::new(0u64);
    struct Count<'a>(&'a RefCell<u64>);
    impl CopyHooks for Count<'_> {
        fn claimed(&self, _offset: u64, len: u64, _action: Action) {
            *self.0.borrow_mut() += len;
        }
    }
    let hooks = Count(&claimed);
    let cfg = CopyConfig {
        chunk: 256 * 1024,
        ..CopyConfig::new(size as u64)
    };
    let copy = Copy::new(&sb, &db, None, &STANDARD, &hooks, cfg).unwrap();
    assert_eq!(block_on(copy.bytes_to_copy()).unwrap(), size as u64);
    run(&copy, 4);
    let summary = copy.finish().unwrap();
    assert_eq!(
        *claimed.borrow(),
        size as u64,
        "progress counts every claimed byte"
    );
    assert_eq!(summary.read, size as u64);
    assert_eq!(
        summary.written,
        size as u64 - 2 * MIB - 4096,
        "zero runs are not written"
    );
    assert_eq!(
        summary.zeroed, 0,
        "the target is zeroed: zeros need no write"
    );
    assert!(read(&db, 0, size) == expect);
}

/// Makes a qcow2 of `size` with backing `backing` on `dev`.
fn make_qcow2(dev: &RamDisk<'_, 16>, size: u64, backing: Option<&str>) {
    let mut bounce = vec![0u8; 4 * 4096];
    let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
    let leaf = graph.add_leaf("f", dev).unwrap();
    let opts = CreateOptions {
        backing,
        backing_fmt: backing.map(|_| "raw"),
        ..CreateOptions::new(size)
    };
    block_on(create(&graph.io(), leaf, &opts)).unwrap();
}

#[test]
fn base_depth_copies_only_what_the_top_has_and_writes_its_zeros() {
    // base (raw, pattern) <- top (qcow2): data at 64 KiB, zeros at 1 MiB; target pre-filled.
    let size = 2 * MIB;
    let mut base_mem: Vec<u8> = (0..size as usize).map(pattern).collect();
    let mut top_mem = vec![0u8; 4 * MIB as usize];
    let mut dst_mem = vec![0xeeu8; size as usize];
    let base = RamDisk::<'_, 16>::new(&mut base_mem, 512, RamConfig::default());
    let top = RamDisk::<'_, 16>::new(&mut top_mem, 512, RamConfig::default());
    let dst = RamDisk::<'_, 16>::new(&mut dst_mem, 512, RamConfig::default());
    make_qcow2(&top, size, Some("base"));
    let slots: Vec<CacheSlot> = (0..64).map(|_| CacheSlot::new()).collect();
    let mut bounce = vec![0u8; 8 * 65536];
    let mut graph: Graph<'_, 8, 64> = Graph::new(&mut bounce, 65536);
    graph.set_metadata_cache(&slots);
    graph.add_leaf("top-file", &top).unwrap();
    let d = graph.add_leaf("d", &dst).unwrap();
    let devs: [(&str, &dyn BlockDevice); 1] = [("base", &base)];
    let root = block_on(graph.open("driver=qcow2,file=top-file", &mut |name| {
        devs.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
    }))
    .unwrap();
    let sb = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    block_on(sb.write(65536, &[7u8; 65536])).unwrap();
    block_on(sb.write_zeroes(MIB, 65536, false)).unwrap();
    let db = Backend::new(&graph, d, BackendOptions::default()).unwrap();
    let rec = Recorder {
        inner: &db,
        log: RefCell::new(Vec::new()),
    };
    let cfg = CopyConfig {
        align: 65536,
        target_zeroed: false,
        ..CopyConfig::new(size)
    };
    let copy = Copy::new(
        &sb,
        &rec,
        None,
        &Standard {
            base_depth: Some(1),
        },
        &NoHooks,
        cfg,
    )
    .unwrap();
    run(&copy, 2);
    let summary = copy.finish().unwrap();
    assert_eq!(
        rec.log.borrow().as_slice(),
        &[(true, 65536, 65536), (false, MIB, 65536)]
    );
    assert_eq!(
        (summary.read, summary.written, summary.zeroed),
        (65536, 65536, 65536)
    );
    // Without a base, the whole chain is copied.
    let rec_all = Recorder {
        inner: &db,
        log: RefCell::new(Vec::new()),
    };
    let cfg = CopyConfig {
        align: 65536,
        ..CopyConfig::new(size)
    };
    let copy = Copy::new(&sb, &rec_all, None, &STANDARD, &NoHooks, cfg).unwrap();
    run(&copy, 1);
    assert_eq!(copy.finish().unwrap().read, size - 65536);
    assert!(read(&db, 65536, 65536).iter().all(|&b| b == 7));
    assert!(read(&db, MIB, 65536).iter().all(|&b| b == 0));
}

/// Every extent: copy where it differs from the compare backend.
struct Differs;
impl ExtentPolicy for Differs {
    fn action(&self, _offset: u64, _ext: &Extent) -> Action {
        Action::CopyIfDiffers
    }
}

#[test]
fn copy_if_differs_writes_only_differing_runs_in_order() {
    let size = MIB as usize;
    let mut src_mem: Vec<u8> = (0..size).map(pattern).collect();
    let mut cmp_mem = src_mem.clone();
    cmp_mem[1000] ^= 1; // block [512, 1024)
    cmp_mem[700_000..700_100].fill(0xff); // block [699904, 700416)
    let mut dst_mem = vec![0xeeu8; size];
    let src = RamDisk::<'_, 16>::new(&mut src_mem, 512, RamConfig::default());
    let cmp = RamDisk::<'_, 16>::new(&mut cmp_mem, 512, RamConfig::default());
    let dst = RamDisk::<'_, 16>::new(
        &mut dst_mem,
        512,
        RamConfig {
            shuffle_seed: 7,
            ..RamConfig::default()
        },
    );
    let mut bounce = vec![0u8; 8 * 65536];
    let mut graph: Graph<'_, 4, 64> = Graph::new(&mut bounce, 65536);
    let ids = [
        graph.add_leaf("s", &src).unwrap(),
        graph.add_leaf("c", &cmp).unwrap(),
        graph.add_leaf("d", &dst).unwrap(),
    ];
    let ro = BackendOptions {
        read_only: true,
        ..BackendOptions::default()
    };
    let (sb, cb) = (
        Backend::new(&graph, ids[0], ro).unwrap(),
        Backend::new(&graph, ids[1], ro).unwrap(),
    );
    let db = Backend::new(&graph, ids[2], BackendOptions::default()).unwrap();
    let rec = Recorder {
        inner: &db,
        log: RefCell::new(Vec::new()),
    };
    let cfg = CopyConfig {
        chunk: 65536,
        sparse: 0,
        target_zeroed: false,
        ..CopyConfig::new(size as u64)
    };
    let copy = Copy::new(&sb, &rec, Some(&cb), &Differs, &NoHooks, cfg).unwrap();
    run(&copy, 4);
    let summary = copy.finish().unwrap();
    assert_eq!(
        rec.log.borrow().as_slice(),
        &[(true, 512, 512), (true, 699_904, 512)]
    );
    assert_eq!(summary.written, 1024);
    assert_eq!(summary.skipped, size as u64 - 1024);
}

#[test]
fn in_order_writes_follow_claims_and_units_are_whole() {
    let size = 4 * MIB as usize;
    let mut src_mem: Vec<u8> = (0..size).map(pattern).collect();
    let mut dst_mem = vec![0u8; size];
    let src = RamDisk::<'_, 16>::new(
        &mut src_mem,
        512,
        RamConfig {
            shuffle_seed: 7,
            ..RamConfig::default()
        },
    );
    let dst = RamDisk::<'_, 16>::new(
        &mut dst_mem,
        512,
        RamConfig {
            shuffle_seed: 7,
            ..RamConfig::default()
        },
    );
    let mut bounce = vec![0u8; 8 * 65536];
    let mut graph: Graph<'_, 4, 64> = Graph::new(&mut bounce, 65536);
    let ids = [
        graph.add_leaf("s", &src).unwrap(),
        graph.add_leaf("d", &dst).unwrap(),
    ];
    let sb = Backend::new(
        &graph,
        ids[0],
        BackendOptions {
            read_only: true,
            ..BackendOptions::default()
        },
    )
    .unwrap();
    let db = Backend::new(&graph, ids[1], BackendOptions::default()).unwrap();
    for in_order in [true, false] {
        let rec = Recorder {
            inner: &db,
            log: RefCell::new(Vec::new()),
        };
        let cfg = CopyConfig {
            start: 100 * 512,
            end: size as u64 - 3,
            chunk: 131072,
            unit: 65536,
            sparse: 0,
            in_order,
            ..CopyConfig::new(size as u64)
        };
        let copy = Copy::new(&sb, &rec, None, &STANDARD, &NoHooks, cfg).unwrap();
        run(&copy, 4);
        copy.finish().unwrap();
        let log = rec.log.into_inner();
        let mut at = 100 * 512;
        for (i, (data, off, len)) in log.iter().enumerate() {
            assert!(*data);
            if in_order {
                assert_eq!(*off, at, "write {i} in claim order");
            }
            at = off + len;
            assert!(
                off + len == size as u64 - 3 || (off + len) % 65536 == 0,
                "{off}+{len} ends on a unit"
            );
        }
        if !in_order {
            assert_eq!(
                log.iter().map(|e| e.2).sum::<u64>(),
                size as u64 - 3 - 100 * 512
            );
        }
    }
}

#[test]
fn bad_configurations_and_small_buffers_are_errors() {
    let mut mem = vec![0u8; 65536];
    let disk = RamDisk::<'_, 16>::new(&mut mem, 512, RamConfig::default());
    let mut bounce = vec![0u8; 4 * 65536];
    let mut graph: Graph<'_, 4, 64> = Graph::new(&mut bounce, 65536);
    let id = graph.add_leaf("s", &disk).unwrap();
    let b = Backend::new(&graph, id, BackendOptions::default()).unwrap();
    let p = Standard::default();
    let new = |cfg| Copy::new(&b, &b, None, &p, &NoHooks, cfg).err();
    assert!(matches!(
        new(CopyConfig {
            chunk: 0,
            ..CopyConfig::new(65536)
        }),
        Some(Error::BadOption { .. })
    ));
    assert!(matches!(
        new(CopyConfig {
            chunk: 4096,
            unit: 3000,
            ..CopyConfig::new(65536)
        }),
        Some(Error::BadOption { .. })
    ));
    assert!(matches!(
        new(CopyConfig::new(65537)),
        Some(Error::OutOfRange { .. })
    ));
    let copy = Copy::new(&b, &b, None, &p, &NoHooks, CopyConfig::new(65536)).unwrap();
    let mut small = vec![0u8; 4096];
    block_on(copy.worker(&mut small, &mut []));
    assert_eq!(copy.finish().unwrap_err().op, CopyOp::Config);
}

#[test]
fn runs_and_trim() {
    let mut d = vec![0u8; 16384];
    d[5000] = 1;
    // Data starts at guest 2048: grains end at indexes 2048, 6144, 10240, 14336.
    assert_eq!(next_run(&d, None, 2048, 0, 4096), (Run::Zero, 2048));
    assert_eq!(next_run(&d, None, 2048, 2048, 4096), (Run::Data, 6144));
    assert_eq!(next_run(&d, None, 2048, 6144, 4096), (Run::Zero, 16384));
    assert_eq!(next_run(&d, None, 0, 0, 0), (Run::Data, 16384));
    let o = d.clone();
    assert_eq!(next_run(&d, Some(&o), 0, 0, 0), (Run::Same, 16384));
    assert_eq!(trim(0, 100_000, 65536), 65536);
    assert_eq!(trim(0, 1000, 65536), 1000);
    assert_eq!((1000 + trim(1000, 200_000, 512)) % 512, 0);
}

#[test]
fn rate_limit_holds_past_the_quota_until_the_slice_ends() {
    // 1 MB/s in 100 ms slices: 100 kB per slice.
    let mut r = RateLimit::new(1_000_000, 100_000_000);
    assert_eq!(r.delay_ns(1, 60_000), 0);
    assert_eq!(r.delay_ns(2, 40_000), 0);
    assert_eq!(r.delay_ns(10, 1), 100_000_001 - 10);
    // A new slice lets a request larger than the quota through.
    assert_eq!(r.delay_ns(200_000_000, 500_000), 0);
    assert_eq!(r.delay_ns(200_000_001, 1), 99_999_999);
}
