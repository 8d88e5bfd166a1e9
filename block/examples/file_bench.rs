//! Micro-benchmark of the host file device: 4 KiB random reads on a 256 MiB file for a few
//! seconds per case — writeback (in-thread) at QD1, and O_DIRECT queue mode at QD1 and QD32 on
//! io_uring and on the thread pool — printing IOPS.
//!
//! `cargo run --release -p strata-block --features std --example file_bench [SECONDS] [FILE]`
//! (default 3 s, `target/strata/bench/file-bench-256m.img`, created if missing).

#![allow(unsafe_code)] // reason: `BlockDevice::submit` is unsafe; buffers outlive every ticket

use std::alloc::Layout;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use strata_block::dev::file::{CacheMode, Engine, HostFile, HostFileOptions};
use strata_block::dev::{BlockDevice, DeviceOp, DeviceRequest, Segment, Ticket};

const FILE_SIZE: u64 = 256 << 20;
const IO_SIZE: usize = 4096;

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Reads `depth` random 4 KiB blocks at a time for `secs`; returns IOPS.
fn run(dev: &HostFile, depth: usize, secs: f64) -> f64 {
    let layout = Layout::from_size_align(depth * IO_SIZE, 4096).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: non-zero size.
    let mem = unsafe { std::alloc::alloc_zeroed(layout) };
    assert!(!mem.is_null());
    let segs: Vec<Segment> = (0..depth).map(|i| Segment { ptr: mem.wrapping_add(i * IO_SIZE), len: IO_SIZE }).collect();
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let blocks = dev.info().capacity / IO_SIZE as u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let submit = |i: usize, rng: &mut u64| -> Ticket {
        let req = DeviceRequest { op: DeviceOp::Read, offset: next(rng) % blocks * IO_SIZE as u64, len: IO_SIZE as u64, segments: &segs[i..i + 1] };
        // SAFETY: `mem` is freed only after every ticket has completed (below).
        unsafe { dev.submit(&req) }.unwrap_or_else(|e| panic!("submit: {e:?}"))
    };
    let mut tickets: Vec<Ticket> = (0..depth).map(|i| submit(i, &mut rng)).collect();
    dev.unplug();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut done = 0u64;
    let mut stopping = false;
    let mut live = depth;
    while live > 0 {
        let mut resubmitted = false;
        for (i, t) in tickets.iter_mut().enumerate() {
            if t.0 == u32::MAX {
                continue;
            }
            if let Poll::Ready(r) = dev.poll(*t, &mut cx) {
                r.unwrap_or_else(|e| panic!("read: {e}"));
                done += 1;
                if stopping {
                    *t = Ticket(u32::MAX);
                    live -= 1;
                } else {
                    *t = submit(i, &mut rng);
                    resubmitted = true;
                }
            }
        }
        if resubmitted {
            dev.unplug();
        }
        if !stopping && start.elapsed() >= limit {
            stopping = true;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // SAFETY: allocated above with this layout; no request refers to it any more.
    unsafe { std::alloc::dealloc(mem, layout) };
    done as f64 / elapsed
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let path = args.next().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/strata/bench/file-bench-256m.img"));
    if std::fs::metadata(&path).ok().map(|m| m.len()) != Some(FILE_SIZE) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        }
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
        let mut data = Vec::with_capacity(FILE_SIZE as usize);
        for _ in 0..FILE_SIZE >> 20 {
            data.extend_from_slice(&chunk);
        }
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("{e}"));
    }
    println!("file {} ({} MiB), 4 KiB random reads, {secs} s per case", path.display(), FILE_SIZE >> 20);
    let cases: [(&str, CacheMode, Engine, usize); 5] = [
        ("writeback in-thread", CacheMode::Writeback, Engine::Auto, 1),
        ("none io_uring", CacheMode::None, Engine::IoUring, 1),
        ("none io_uring", CacheMode::None, Engine::IoUring, 32),
        ("none threads(8)", CacheMode::None, Engine::Threads, 1),
        ("none threads(8)", CacheMode::None, Engine::Threads, 32),
    ];
    for (name, mode, engine, depth) in cases {
        let opts = HostFileOptions { mode, engine, read_only: true, queue_depth: 32, ..HostFileOptions::default() };
        match HostFile::open(&path, &opts) {
            Ok(dev) => {
                let iops = run(&dev, depth, secs);
                println!("{name:<22} QD{depth:<3} {iops:>10.0} IOPS  {:>8.1} us mean latency", 1e6 / iops * depth as f64);
            }
            Err(e) => println!("{name:<22} QD{depth:<3} skipped: {e}"),
        }
    }
}
