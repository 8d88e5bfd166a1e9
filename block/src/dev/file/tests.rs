//! Tests of the host file device on real files under `target/strata/tests/file/` (not /tmp,
//! which may be a tmpfs without O_DIRECT), and against real `qemu-io`/`qemu-img` processes
//! for the image locks (skipped with a note when they are not installed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::future::Future;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::sys::AlignedBuf;
use super::*;
use crate::dev::DeviceOp;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A test file's path, removed when dropped.
struct TempPath(PathBuf);

impl std::ops::Deref for TempPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempPath {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A fresh path for `name` (tests run in parallel: one file each).
fn temp_path(name: &str) -> TempPath {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/strata/tests/file");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&p);
    TempPath(p)
}

/// Deterministic bytes for offset `i` of test files.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2654435761) >> 7) as u8 ^ (i >> 12) as u8
}

fn make_file(name: &str, len: u64) -> TempPath {
    let p = temp_path(name);
    let data: Vec<u8> = (0..len).map(pattern).collect();
    std::fs::write(&*p, data).unwrap();
    p
}

struct NoopWake;
impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

/// A single-future executor that polls until ready (the device wakes itself while pending).
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(NoopWake));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Waits for one ticket.
struct Wait<'a> {
    dev: &'a dyn BlockDevice,
    ticket: Ticket,
}

impl Future for Wait<'_> {
    type Output = Result<(), DeviceError>;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.dev.poll(self.ticket, cx)
    }
}

/// Submits, unplugs and waits. Segments must stay valid: the borrow ends after completion.
fn run(dev: &dyn BlockDevice, op: DeviceOp, offset: u64, len: u64, segments: &[Segment]) -> Result<(), DeviceError> {
    let req = DeviceRequest { op, offset, len, segments };
    // SAFETY: the caller's buffers outlive this call, which waits for completion.
    let ticket = unsafe { dev.submit(&req) }.map_err(|e| match e {
        SubmitError::Invalid(e) => e,
        SubmitError::Busy => panic!("busy"),
    })?;
    dev.unplug();
    block_on(Wait { dev, ticket })
}

fn read(dev: &dyn BlockDevice, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
    let len = buf.len() as u64;
    run(dev, DeviceOp::Read, offset, len, &[Segment::from_mut(buf)])
}

fn write(dev: &dyn BlockDevice, offset: u64, buf: &[u8]) -> Result<(), DeviceError> {
    let len = buf.len() as u64;
    run(dev, DeviceOp::Write, offset, len, &[Segment::from_ref(buf)])
}

/// An aligned buffer for O_DIRECT, viewed as a slice.
struct Dma(AlignedBuf);

impl Dma {
    fn new(len: usize) -> Self {
        Self(AlignedBuf::zeroed(len, 4096).unwrap())
    }
    fn as_mut(&mut self) -> &mut [u8] {
        let len = self.0.len();
        // SAFETY: the allocation is `len` initialised bytes owned by `self`, borrowed mutably.
        unsafe { core::slice::from_raw_parts_mut(self.0.as_mut_ptr(), len) }
    }
}

fn writeback() -> HostFileOptions<'static> {
    HostFileOptions::default()
}

fn direct(engine: Engine) -> HostFileOptions<'static> {
    HostFileOptions { mode: CacheMode::None, engine, ..HostFileOptions::default() }
}

const ENGINES: [Engine; 2] = [Engine::IoUring, Engine::Threads];

/// Opens in queue mode with `engine`, or `None` (with a note) if io_uring is not available.
fn open_queue(path: &Path, opts: &HostFileOptions<'_>) -> Option<HostFile> {
    match HostFile::open(path, opts) {
        Ok(f) => Some(f),
        Err(FileError::Io { what: "set up io_uring for", source, .. }) => {
            println!("note: io_uring unavailable here ({source}); skipping the io_uring case");
            None
        }
        Err(e) => panic!("open {}: {e}", path.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// Writeback (in-thread) mode

#[test]
fn writeback_info_and_odd_offsets() {
    let len = 10_000;
    let p = make_file("wb-odd", len);
    let mut model: Vec<u8> = (0..len).map(pattern).collect();
    let dev = HostFile::open(&p, &HostFileOptions { serial: Some("strata-file-serial-toolong"), ..writeback() }).unwrap();
    let info = dev.info();
    assert_eq!(info.capacity, len);
    assert_eq!(info.block_size, 1);
    assert_eq!(info.mem_alignment, 1);
    assert_eq!(info.max_transfer, 2 << 20);
    assert_eq!(info.max_segments, 1024);
    assert!(!info.read_only);
    assert_eq!(info.serial(), "strata-file-serial-t");
    assert!(info.features.contains(DeviceFeatures::FLUSH | DeviceFeatures::WRITE_ZEROES | DeviceFeatures::WRITE_ZEROES_UNMAP));
    assert_eq!(dev.engine(), ActiveEngine::Adaptive);
    assert!(!dev.is_direct());

    let data: Vec<u8> = (0..777u32).map(|i| (i * 7 + 3) as u8).collect();
    write(&dev, 1234, &data).unwrap();
    model[1234..1234 + 777].copy_from_slice(&data);
    for (off, n) in [(0u64, 1usize), (1, 3), (1000, 3000), (1233, 779), (9_999, 1), (9_001, 999)] {
        let mut buf = vec![0u8; n];
        read(&dev, off, &mut buf).unwrap();
        assert_eq!(buf, model[off as usize..off as usize + n], "read {n} at {off}");
    }
    // Out of range and empty requests are refused at submit.
    let mut buf = [0u8; 2];
    assert_eq!(read(&dev, len - 1, &mut buf), Err(DeviceError::Invalid));
    assert_eq!(read(&dev, 0, &mut []), Err(DeviceError::Invalid));
    drop(dev);
    assert_eq!(std::fs::read(&p).unwrap(), model);
}

#[test]
fn writeback_multi_segment_vectors() {
    let p = make_file("wb-vec", 64 << 10);
    let dev = HostFile::open(&p, &writeback()).unwrap();
    let (mut a, mut b, mut c) = (vec![1u8; 100], vec![2u8; 4096], vec![3u8; 3]);
    let len = (a.len() + b.len() + c.len()) as u64;
    run(&dev, DeviceOp::Write, 5000, len, &[Segment::from_ref(&a), Segment::from_ref(&b), Segment::from_ref(&c)]).unwrap();
    let mut expect: Vec<u8> = (0..(64u64 << 10)).map(pattern).collect();
    expect[5000..5100].fill(1);
    expect[5100..9196].fill(2);
    expect[9196..9199].fill(3);
    // Read back through differently split segments.
    let mut parts: Vec<Vec<u8>> = [1usize, 999, 3000, 200].iter().map(|&n| vec![0u8; n]).collect();
    let total: usize = parts.iter().map(Vec::len).sum();
    let segs: Vec<Segment> = parts.iter_mut().map(|v| Segment::from_mut(v)).collect();
    run(&dev, DeviceOp::Read, 4990, total as u64, &segs).unwrap();
    let got: Vec<u8> = parts.concat();
    assert_eq!(got, expect[4990..4990 + total]);
    // A length that does not match the segments is refused.
    a.truncate(10);
    b.truncate(10);
    c.truncate(10);
    assert_eq!(run(&dev, DeviceOp::Write, 0, 21, &[Segment::from_ref(&a), Segment::from_ref(&b)]), Err(DeviceError::Invalid));
}

#[test]
fn writeback_busy_and_tickets() {
    let p = make_file("wb-busy", 8192);
    let dev = HostFile::open(&p, &HostFileOptions { queue_depth: 2, ..writeback() }).unwrap();
    let mut bufs = [[0u8; 16]; 3];
    let [b0, b1, b2] = &mut bufs;
    let segs = [Segment::from_mut(b0), Segment::from_mut(b1), Segment::from_mut(b2)];
    let req = |i: usize| DeviceRequest { op: DeviceOp::Read, offset: 16 * i as u64, len: 16, segments: &segs[i..i + 1] };
    // SAFETY: `bufs` outlives every ticket, all polled below.
    let t0 = unsafe { dev.submit(&req(0)) }.unwrap();
    // SAFETY: as above.
    let t1 = unsafe { dev.submit(&req(1)) }.unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { dev.submit(&req(2)) }, Err(SubmitError::Busy));
    assert_eq!(block_on(Wait { dev: &dev, ticket: t1 }), Ok(()));
    // Polling a finished ticket again is Invalid.
    assert_eq!(block_on(Wait { dev: &dev, ticket: t1 }), Err(DeviceError::Invalid));
    // SAFETY: as above.
    let t2 = unsafe { dev.submit(&req(2)) }.unwrap();
    assert_eq!(block_on(Wait { dev: &dev, ticket: t0 }), Ok(()));
    assert_eq!(block_on(Wait { dev: &dev, ticket: t2 }), Ok(()));
    assert_eq!(block_on(Wait { dev: &dev, ticket: Ticket(0xdead_0001) }), Err(DeviceError::Invalid));
    for (i, b) in bufs.iter().enumerate() {
        let expect: Vec<u8> = (16 * i as u64..16 * i as u64 + 16).map(pattern).collect();
        assert_eq!(&b[..], &expect[..]);
    }
}

/// Keeps up to `depth` requests in flight on `dev` the way an executor of `depth` futures does
/// (submit while there is room, then poll each once), for `count` requests of 4 KiB at pseudo-random
/// blocks of a `blocks`-block file; `write` writes block `b` full of `b as u8 ^ 0x5a`, reads
/// check it (or the file's `pattern` for blocks never written, as `written` says).
fn at_depth(dev: &HostFile, depth: usize, count: usize, blocks: u64, write: bool, written: &mut [bool]) {
    let waker = Waker::from(Arc::new(NoopWake));
    let mut cx = Context::from_waker(&waker);
    let mut bufs = vec![[0u8; 4096]; depth];
    let mut busy: Vec<Option<(Ticket, u64)>> = vec![None; depth];
    let (mut issued, mut done, mut x) = (0usize, 0usize, 0x9e37_79b9_7f4a_7c15u64);
    while done < count {
        for (slot, (buf, entry)) in bufs.iter_mut().zip(busy.iter_mut()).enumerate() {
            match *entry {
                None if issued < count => {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Distinct blocks per slot: requests in flight never overlap.
                    let block = (x % (blocks / depth as u64)) * depth as u64 + slot as u64;
                    if write {
                        buf.fill(block as u8 ^ 0x5a);
                    }
                    let seg = if write { Segment::from_ref(&buf[..]) } else { Segment::from_mut(&mut buf[..]) };
                    let op = if write { DeviceOp::Write } else { DeviceOp::Read };
                    let req = DeviceRequest { op, offset: block * 4096, len: 4096, segments: core::slice::from_ref(&seg) };
                    // SAFETY: `bufs` outlives every ticket (all polled to completion below), and a
                    // slot's buffer is not touched while its request is in flight.
                    let ticket = unsafe { dev.submit(&req) }.unwrap();
                    *entry = Some((ticket, block));
                    issued += 1;
                }
                None => {}
                Some((ticket, block)) => {
                    if let Poll::Ready(r) = dev.poll(ticket, &mut cx) {
                        r.unwrap();
                        *entry = None;
                        done += 1;
                        if write {
                            written[block as usize] = true;
                        } else if written[block as usize] {
                            assert!(buf.iter().all(|&b| b == block as u8 ^ 0x5a), "block {block}");
                        } else {
                            assert!(buf.iter().enumerate().all(|(i, &b)| b == pattern(block * 4096 + i as u64)), "block {block}");
                        }
                    }
                }
            }
        }
        dev.unplug();
    }
}

#[test]
fn adaptive_engine_follows_the_callers_depth() {
    let blocks = 512u64;
    let p = make_file("wb-adaptive", blocks * 4096);
    let dev = HostFile::open(&p, &writeback()).unwrap();
    let mut written = vec![false; blocks as usize];
    // One request at a time: every request runs inside submit, apart from the probes.
    at_depth(&dev, 1, 1000, blocks, false, &mut written);
    assert_eq!(dev.adaptive_shared(), Some(false));
    let before = dev.engine_counts().unwrap();
    assert_eq!(before.queued, 0);
    // 32 in flight: the first probe sees other submits and the helpers join in (for how long
    // depends on whether they get a core: a busy machine sends the engine back inline).
    at_depth(&dev, 32, 3000, blocks, true, &mut written);
    at_depth(&dev, 32, 3000, blocks, false, &mut written);
    let counts = dev.engine_counts().unwrap();
    assert!(counts.queued > 0, "{counts:?}");
    assert_eq!(counts.inline + counts.queued, before.inline + 6000);
    assert_eq!(dev.in_flight(), 0);
    // Back to one at a time: inline again after a few calm submits.
    at_depth(&dev, 1, 100, blocks, false, &mut written);
    assert_eq!(dev.adaptive_shared(), Some(false));
    assert_eq!(run(&dev, DeviceOp::Flush, 0, 0, &[]), Ok(()));
    drop(dev);
    let file = std::fs::read(&p).unwrap();
    for (b, chunk) in file.chunks(4096).enumerate() {
        if written[b] {
            assert!(chunk.iter().all(|&v| v == b as u8 ^ 0x5a), "block {b} on disk");
        }
    }
}

#[test]
fn in_thread_engine_is_writeback_only() {
    let p = make_file("wb-inthread", 8192);
    let dev = HostFile::open(&p, &HostFileOptions { engine: Engine::InThread, ..writeback() }).unwrap();
    assert_eq!(dev.engine(), ActiveEngine::InThread);
    let mut buf = [0u8; 100];
    read(&dev, 10, &mut buf).unwrap();
    assert!(buf.iter().enumerate().all(|(i, &b)| b == pattern(10 + i as u64)));
    let e = HostFile::open(&p, &direct(Engine::InThread)).err().unwrap();
    assert!(matches!(e, FileError::InvalidOptions(_)), "{e}");
}

#[test]
fn writeback_queue_engines() {
    for engine in ENGINES {
        let p = make_file(&format!("wb-queue-{engine:?}"), 1 << 20);
        let Some(dev) = open_queue(&p, &HostFileOptions { engine, ..writeback() }) else { continue };
        assert!(!dev.is_direct());
        assert_eq!(dev.info().block_size, 1);
        let mut written = vec![false; 256];
        at_depth(&dev, 16, 500, 256, true, &mut written);
        at_depth(&dev, 16, 500, 256, false, &mut written);
    }
}

/// Flush, discard and write-zeroes on `dev` over a file filled with `pattern`; `bs` is the
/// request granularity and `buf` a (suitably aligned) scratch buffer of at least 64 KiB.
fn check_flush_discard_zeroes(dev: &HostFile, bs: u64, buf: &mut [u8]) {
    assert_eq!(run(dev, DeviceOp::Flush, 0, 0, &[]), Ok(()));
    let chunk = 16 * bs.max(4096);
    let cases = [(DeviceOp::WriteZeroes { unmap: false }, 1), (DeviceOp::WriteZeroes { unmap: true }, 3), (DeviceOp::Discard, 5)];
    for (op, at) in cases {
        let off = at * chunk;
        if op == DeviceOp::Discard && !dev.info().features.contains(DeviceFeatures::DISCARD) {
            println!("note: no discard on this file system");
            continue;
        }
        assert_eq!(run(dev, op, off, chunk, &[]), Ok(()), "{op:?}");
        let n = (3 * chunk) as usize;
        let buf = &mut buf[..n];
        read(dev, off - chunk, buf).unwrap();
        let before: Vec<u8> = (off - chunk..off).map(pattern).collect();
        let after: Vec<u8> = (off + chunk..off + 2 * chunk).map(pattern).collect();
        assert_eq!(&buf[..chunk as usize], &before[..], "{op:?}: data before intact");
        assert!(buf[chunk as usize..2 * chunk as usize].iter().all(|&b| b == 0), "{op:?}: zeros");
        assert_eq!(&buf[2 * chunk as usize..], &after[..], "{op:?}: data after intact");
    }
    assert_eq!(run(dev, DeviceOp::Flush, 0, 0, &[]), Ok(()));
}

#[test]
fn writeback_flush_discard_write_zeroes() {
    let p = make_file("wb-zero", 1 << 20);
    let dev = HostFile::open(&p, &writeback()).unwrap();
    let mut buf = vec![0u8; 256 << 10];
    check_flush_discard_zeroes(&dev, 1, &mut buf);
    // Unaligned write-zeroes works at any byte in writeback mode.
    assert_eq!(run(&dev, DeviceOp::WriteZeroes { unmap: false }, 700_001, 333, &[]), Ok(()));
    let mut b = [1u8; 335];
    read(&dev, 700_000, &mut b).unwrap();
    assert_eq!(b[0], pattern(700_000));
    assert!(b[1..334].iter().all(|&x| x == 0));
    assert_eq!(b[334], pattern(700_334));
}

#[test]
fn emulated_write_zeroes_path() {
    // The fallback used where the file system has no ZERO_RANGE: write zeros from the buffer.
    let p = make_file("wb-emul", 1 << 20);
    let dev = HostFile::open(&p, &writeback()).unwrap();
    dev.exec.write_zeroes_emulated(4096, 600 << 10).unwrap();
    let data = std::fs::read(&p).unwrap();
    assert_eq!(data[4095], pattern(4095));
    assert!(data[4096..4096 + (600 << 10)].iter().all(|&b| b == 0));
    assert_eq!(data[4096 + (600 << 10)], pattern(4096 + (600 << 10)));
}

#[test]
fn read_only_refuses_writes() {
    let p = make_file("ro", 8192);
    let dev = HostFile::open(&p, &HostFileOptions { read_only: true, ..writeback() }).unwrap();
    assert!(dev.info().read_only);
    assert_eq!(write(&dev, 0, &[1, 2, 3]), Err(DeviceError::ReadOnly));
    assert_eq!(run(&dev, DeviceOp::Discard, 0, 4096, &[]), Err(DeviceError::ReadOnly));
    assert_eq!(run(&dev, DeviceOp::WriteZeroes { unmap: false }, 0, 4096, &[]), Err(DeviceError::ReadOnly));
    let mut b = [0u8; 8];
    read(&dev, 4, &mut b).unwrap();
    assert_eq!(b.to_vec(), (4..12).map(pattern).collect::<Vec<_>>());
    assert_eq!(run(&dev, DeviceOp::Flush, 0, 0, &[]), Ok(()));
    // force-share needs read-only.
    let e = HostFile::open(&p, &HostFileOptions { force_share: true, ..writeback() }).err().unwrap();
    assert!(matches!(e, FileError::InvalidOptions(_)), "{e}");
}

#[test]
fn open_errors() {
    let missing = temp_path("missing");
    let e = HostFile::open(&missing, &writeback()).err().unwrap();
    assert!(matches!(e, FileError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("No such file"), "{e}");
    let dir = missing.parent().unwrap();
    let e = HostFile::open(dir, &HostFileOptions { read_only: true, ..writeback() }).err().unwrap();
    assert!(matches!(e, FileError::NotAFile { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Queue (O_DIRECT) mode

#[test]
fn direct_alignment_probe_and_capacity() {
    let len = (1 << 20) + 1000;
    let p = make_file("dio-probe", len);
    let dev = open_queue(&p, &direct(Engine::Auto)).unwrap();
    let info = dev.info().clone();
    assert!(dev.is_direct());
    assert!([512, 1024, 2048, 4096].contains(&info.block_size), "block size {}", info.block_size);
    assert!(info.mem_alignment.is_power_of_two() && info.mem_alignment <= 4096, "mem alignment {}", info.mem_alignment);
    assert_eq!(info.capacity, len, "the partial last block is reachable");
    assert_eq!(info.max_transfer, 1 << 20);
    assert_eq!(info.queue_depth, 64);
    println!("O_DIRECT probe: block_size {} mem_alignment {} engine {:?}", info.block_size, info.mem_alignment, dev.engine());

    // The probed values work: a buffer aligned to exactly `mem_alignment`, `block_size` bytes.
    let bs = info.block_size as usize;
    let ma = info.mem_alignment as usize;
    let mut dma = Dma::new(8192 + 4096);
    let buf = &mut dma.as_mut()[ma.min(4096) % 4096..];
    let buf = &mut buf[..bs];
    read(&dev, info.block_size.into(), buf).unwrap();
    assert_eq!(buf.to_vec(), (bs as u64..2 * bs as u64).map(pattern).collect::<Vec<_>>());
    // And the kernel does refuse less than the probed request alignment (if there is less).
    if bs > 512 {
        println!("note: request alignment {bs} > 512 on this file system");
    }
    // Misaligned requests never reach the kernel.
    let mut b = vec![0u8; 4096];
    assert_eq!(read(&dev, 1, &mut b[..bs]), Err(DeviceError::Invalid));
    let whole = dma.as_mut();
    assert_eq!(read(&dev, 0, &mut whole[1..1 + bs]), Err(DeviceError::Invalid));
    assert_eq!(read(&dev, info.capacity, &mut whole[..bs]), Err(DeviceError::Invalid));
}

#[test]
fn direct_unsupported_or_fallback() {
    // tmpfs refused O_DIRECT before Linux 6.6; test the error where it still does.
    let dir = Path::new("/dev/shm");
    if !dir.is_dir() {
        println!("note: no /dev/shm; skipping");
        return;
    }
    let p = dir.join(format!("strata-dio-{}.img", std::process::id()));
    std::fs::write(&p, vec![7u8; 8192]).unwrap();
    let r = HostFile::open(&p, &direct(Engine::Auto));
    match r {
        Ok(dev) => println!("note: this tmpfs accepts O_DIRECT (block size {}); fallback not exercised", dev.info().block_size),
        Err(FileError::DirectUnsupported { .. }) => {
            let dev = HostFile::open(&p, &HostFileOptions { direct_fallback: true, ..direct(Engine::Auto) }).unwrap();
            assert!(!dev.is_direct());
            assert_eq!(dev.info().block_size, 1);
            let mut b = [0u8; 3];
            read(&dev, 5, &mut b).unwrap();
            assert_eq!(b, [7; 3]);
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn queue_many_in_flight() {
    for engine in ENGINES {
        let p = make_file(&format!("dio-qd-{engine:?}"), 1 << 20);
        let Some(dev) = open_queue(&p, &HostFileOptions { queue_depth: 32, ..direct(engine) }) else { continue };
        let bs = 4096usize;
        let n = 32usize;
        // 32 writes of distinct blocks in flight, completed in reverse order.
        let mut wbuf = Dma::new(n * bs);
        let w = wbuf.as_mut();
        for (i, chunk) in w.chunks_mut(bs).enumerate() {
            chunk.fill(i as u8 + 1);
        }
        let segs: Vec<Segment> = w.chunks(bs).map(Segment::from_ref).collect();
        let mut tickets = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let req = DeviceRequest { op: DeviceOp::Write, offset: (i * 2 * bs) as u64, len: bs as u64, segments: core::slice::from_ref(seg) };
            // SAFETY: `wbuf` outlives the tickets, all polled below.
            tickets.push(unsafe { dev.submit(&req) }.unwrap());
        }
        assert_eq!(dev.in_flight(), n, "{engine:?}");
        dev.unplug();
        for t in tickets.drain(..).rev() {
            assert_eq!(block_on(Wait { dev: &dev, ticket: t }), Ok(()), "{engine:?}");
        }
        assert_eq!(dev.in_flight(), 0);
        // 32 reads in flight (each two blocks: the written one and the untouched one after it).
        let mut rbuf = Dma::new(n * 2 * bs);
        let r = rbuf.as_mut();
        let segs: Vec<Segment> = r.chunks_mut(2 * bs).map(Segment::from_mut).collect();
        for (i, seg) in segs.iter().enumerate() {
            let req = DeviceRequest { op: DeviceOp::Read, offset: (i * 2 * bs) as u64, len: 2 * bs as u64, segments: core::slice::from_ref(seg) };
            // SAFETY: `rbuf` outlives the tickets, all polled below.
            tickets.push(unsafe { dev.submit(&req) }.unwrap());
        }
        dev.unplug();
        for t in tickets.drain(..) {
            assert_eq!(block_on(Wait { dev: &dev, ticket: t }), Ok(()), "{engine:?}");
        }
        for (i, chunk) in rbuf.as_mut().chunks(2 * bs).enumerate() {
            assert!(chunk[..bs].iter().all(|&b| b == i as u8 + 1), "{engine:?} block {i}");
            let base = (i * 2 * bs + bs) as u64;
            assert!(chunk[bs..].iter().enumerate().all(|(j, &b)| b == pattern(base + j as u64)), "{engine:?} block {i} after");
        }
    }
}

#[test]
fn queue_multi_segment_vectors() {
    for engine in ENGINES {
        let p = make_file(&format!("dio-vec-{engine:?}"), 1 << 20);
        let Some(dev) = open_queue(&p, &direct(engine)) else { continue };
        let bs = dev.info().block_size as usize;
        let mut dma = Dma::new(64 << 10);
        let buf = dma.as_mut();
        buf.fill(0xab);
        let (a, rest) = buf.split_at_mut(bs);
        let (b, rest) = rest.split_at_mut(3 * bs);
        let c = &mut rest[..2 * bs];
        b.fill(0xcd);
        c.fill(0xef);
        let segs = [Segment::from_ref(a), Segment::from_ref(b), Segment::from_ref(c)];
        run(&dev, DeviceOp::Write, 8 * bs as u64, 6 * bs as u64, &segs).unwrap();
        let mut out = Dma::new(64 << 10);
        let o = out.as_mut();
        let (x, rest) = o.split_at_mut(2 * bs);
        let (y, rest) = rest.split_at_mut(bs);
        let z = &mut rest[..4 * bs];
        let segs = [Segment::from_mut(x), Segment::from_mut(y), Segment::from_mut(z)];
        run(&dev, DeviceOp::Read, 7 * bs as u64, 7 * bs as u64, &segs).unwrap();
        let o = &out.as_mut()[..7 * bs];
        let expect: Vec<u8> = (7 * bs as u64..8 * bs as u64).map(pattern).collect();
        assert_eq!(&o[..bs], &expect[..], "{engine:?}");
        assert!(o[bs..2 * bs].iter().all(|&v| v == 0xab));
        assert!(o[2 * bs..5 * bs].iter().all(|&v| v == 0xcd));
        assert!(o[5 * bs..].iter().all(|&v| v == 0xef));
    }
}

#[test]
fn queue_busy_when_full_and_poll_before_unplug() {
    for engine in ENGINES {
        let p = make_file(&format!("dio-busy-{engine:?}"), 1 << 20);
        let Some(dev) = open_queue(&p, &HostFileOptions { queue_depth: 4, ..direct(engine) }) else { continue };
        let mut dma = Dma::new(5 * 4096);
        let segs: Vec<Segment> = dma.as_mut().chunks_mut(4096).map(Segment::from_mut).collect();
        let req = |i: usize| DeviceRequest { op: DeviceOp::Read, offset: (i * 4096) as u64, len: 4096, segments: &segs[i..i + 1] };
        let mut tickets: Vec<Ticket> = (0..4)
            .map(|i| {
                // SAFETY: `dma` outlives the tickets, all polled below.
                unsafe { dev.submit(&req(i)) }.unwrap()
            })
            .collect();
        // SAFETY: as above.
        assert_eq!(unsafe { dev.submit(&req(4)) }, Err(SubmitError::Busy), "{engine:?}");
        // No unplug: polling must still get the requests to the kernel.
        let first = tickets.remove(0);
        assert_eq!(block_on(Wait { dev: &dev, ticket: first }), Ok(()));
        // SAFETY: as above.
        tickets.push(unsafe { dev.submit(&req(4)) }.unwrap());
        dev.unplug();
        for t in tickets {
            assert_eq!(block_on(Wait { dev: &dev, ticket: t }), Ok(()));
        }
        for (i, chunk) in dma.as_mut().chunks(4096).enumerate() {
            assert!(chunk.iter().enumerate().all(|(j, &b)| b == pattern((i * 4096 + j) as u64)), "{engine:?} {i}");
        }
        assert_eq!(block_on(Wait { dev: &dev, ticket: Ticket(3) }), Err(DeviceError::Invalid));
    }
}

#[test]
fn queue_flush_discard_write_zeroes() {
    for engine in ENGINES {
        let p = make_file(&format!("dio-zero-{engine:?}"), 1 << 20);
        let Some(dev) = open_queue(&p, &direct(engine)) else { continue };
        let bs = u64::from(dev.info().block_size);
        let mut dma = Dma::new(512 << 10);
        check_flush_discard_zeroes(&dev, bs, dma.as_mut());
    }
}

#[test]
fn queue_read_only_refuses_writes() {
    for engine in ENGINES {
        let p = make_file(&format!("dio-ro-{engine:?}"), 1 << 16);
        let Some(dev) = open_queue(&p, &HostFileOptions { read_only: true, ..direct(engine) }) else { continue };
        let mut dma = Dma::new(4096);
        assert_eq!(write(&dev, 0, dma.as_mut()), Err(DeviceError::ReadOnly));
        read(&dev, 0, dma.as_mut()).unwrap();
        assert_eq!(dma.as_mut()[5], pattern(5));
    }
}

#[test]
fn drop_waits_for_requests_in_flight() {
    for engine in ENGINES {
        let len = 8u64 << 20;
        let p = make_file(&format!("dio-drop-{engine:?}"), len);
        let Some(dev) = open_queue(&p, &HostFileOptions { queue_depth: 32, threads: 4, ..direct(engine) }) else { continue };
        let chunk = 256usize << 10;
        let mut dma = Dma::new(32 * chunk);
        let segs: Vec<Segment> = dma.as_mut().chunks_mut(chunk).map(Segment::from_mut).collect();
        for (i, seg) in segs.iter().enumerate() {
            let req = DeviceRequest { op: DeviceOp::Read, offset: (i * chunk) as u64, len: chunk as u64, segments: core::slice::from_ref(seg) };
            // SAFETY: `dma` outlives `dev`, whose drop waits for these requests.
            unsafe { dev.submit(&req) }.unwrap();
        }
        // Half unplugged, half never: drop must hand over and wait for both.
        dev.unplug();
        drop(dev);
        let data = dma.as_mut();
        for (i, b) in data.iter().enumerate().step_by(997) {
            assert_eq!(*b, pattern(i as u64), "{engine:?} byte {i}");
        }
    }
}

/// Submits one request of `segments` (polled later, or never: the device's drop waits).
fn submit_only(dev: &HostFile, op: DeviceOp, offset: u64, segments: &[Segment]) -> Ticket {
    let len = segments.iter().map(|s| s.len as u64).sum();
    // SAFETY: every caller keeps the segments' memory alive and untouched until the ticket is
    // polled done or the device is dropped (whose drop waits for its requests).
    unsafe { dev.submit(&DeviceRequest { op, offset, len, segments }) }.unwrap()
}

/// Takes the adaptive engine into shared mode the way a caller at depth does: one request at a
/// time until a probe is held, then a second request beside it. Returns the two tickets.
fn into_shared_mode(dev: &HostFile, bufs: &mut [[u8; 4096]; 2]) -> [Ticket; 2] {
    let [a, b] = bufs;
    let seg = Segment::from_mut(&mut a[..]);
    let mut held = None;
    for _ in 0..1000 {
        let t = submit_only(dev, DeviceOp::Read, 0, core::slice::from_ref(&seg));
        if dev.in_flight() == 1 {
            held = Some(t);
            break;
        }
        assert_eq!(block_on(Wait { dev, ticket: t }), Ok(()));
    }
    let held = held.expect("no probe within 1000 requests");
    let second = submit_only(dev, DeviceOp::Read, 0, &[Segment::from_mut(&mut b[..])]);
    assert_eq!(dev.adaptive_shared(), Some(true));
    [held, second]
}

/// Reads of one batch whose ranges follow one another are done by one system call: each gets
/// its own bytes, and nothing else is joined: not across a gap, a write, a request of several
/// segments or a request of another batch.
#[test]
fn adaptive_merges_adjacent_reads_of_a_batch() {
    let blocks = 64u64;
    let p = make_file("wb-merge", blocks * 4096);
    let dev = HostFile::open(&p, &writeback()).unwrap();
    let mut probe = [[0u8; 4096]; 2];
    let first = into_shared_mode(&dev, &mut probe);
    // One batch: blocks 10..18 (a run of 8), 20 (a gap before it), 21 written (a write ends the
    // run), 22 read in two segments, 23 and 24 (a run of 2, after a request of two segments).
    let mut bufs = vec![[0u8; 4096]; 16];
    let mut halves = [[0u8; 2048]; 2];
    let write_data = [0xa5u8; 4096];
    let mut tickets = Vec::new();
    {
        let (run, rest) = bufs.split_at_mut(8);
        for (i, buf) in run.iter_mut().enumerate() {
            tickets.push(submit_only(&dev, DeviceOp::Read, (10 + i as u64) * 4096, &[Segment::from_mut(&mut buf[..])]));
        }
        tickets.push(submit_only(&dev, DeviceOp::Read, 20 * 4096, &[Segment::from_mut(&mut rest[0][..])]));
        tickets.push(submit_only(&dev, DeviceOp::Write, 21 * 4096, &[Segment::from_ref(&write_data[..])]));
        let [h0, h1] = &mut halves;
        tickets.push(submit_only(&dev, DeviceOp::Read, 22 * 4096, &[Segment::from_mut(&mut h0[..]), Segment::from_mut(&mut h1[..])]));
        tickets.push(submit_only(&dev, DeviceOp::Read, 23 * 4096, &[Segment::from_mut(&mut rest[1][..])]));
        tickets.push(submit_only(&dev, DeviceOp::Read, 24 * 4096, &[Segment::from_mut(&mut rest[2][..])]));
    }
    dev.unplug();
    for t in first.into_iter().chain(tickets) {
        assert_eq!(block_on(Wait { dev: &dev, ticket: t }), Ok(()));
    }
    // The batch (the probe and the request beside it first) is 15 requests; its last 3 (the
    // request of two segments, 23 and 24) are kept back for the caller and merged apart from
    // the rest: 7 reads join the one before them in the run of 8, 24 joins 23.
    let counts = dev.engine_counts().unwrap();
    assert_eq!(counts.merged, 7 + 1, "{counts:?}");
    let expect = |block: u64, buf: &[u8]| buf.iter().enumerate().all(|(j, &b)| b == pattern(block * 4096 + j as u64));
    for (i, buf) in bufs[..8].iter().enumerate() {
        assert!(expect(10 + i as u64, buf), "block {}", 10 + i);
    }
    assert!(expect(20, &bufs[8]) && expect(23, &bufs[9]) && expect(24, &bufs[10]));
    assert!(halves.concat().iter().enumerate().all(|(j, &b)| b == pattern(22 * 4096 + j as u64)));
    // A second batch: 25 follows 24 on the file, but not in one batch. And a write-zeroes of
    // block 30 that comes with a stray segment of 16 bytes: its length is the request's.
    let t = submit_only(&dev, DeviceOp::Read, 25 * 4096, &[Segment::from_mut(&mut bufs[11][..])]);
    let stray = [0u8; 16];
    let req = DeviceRequest { op: DeviceOp::WriteZeroes { unmap: false }, offset: 30 * 4096, len: 4096, segments: &[Segment::from_ref(&stray[..])] };
    // SAFETY: `stray` outlives the request, polled below.
    let z = unsafe { dev.submit(&req) }.unwrap();
    dev.unplug();
    assert_eq!(block_on(Wait { dev: &dev, ticket: t }), Ok(()));
    assert_eq!(block_on(Wait { dev: &dev, ticket: z }), Ok(()));
    assert_eq!(dev.engine_counts().unwrap().merged, 8);
    assert!(expect(25, &bufs[11]));
    drop(dev);
    let file = std::fs::read(&p).unwrap();
    assert!(file[21 * 4096..22 * 4096].iter().all(|&b| b == 0xa5));
    assert!(file[30 * 4096..31 * 4096].iter().all(|&b| b == 0), "block 30 zeroed whole");
    assert!(expect(31, &file[31 * 4096..32 * 4096]));
}

/// A run of adjacent reads longer than one system call takes is split.
#[test]
fn adaptive_merged_runs_are_bounded() {
    let p = make_file("wb-merge-long", 64 * 4096);
    let dev = HostFile::open(&p, &writeback()).unwrap();
    let mut probe = [[0u8; 4096]; 2];
    let first = into_shared_mode(&dev, &mut probe);
    let mut bufs = vec![[0u8; 4096]; 48];
    let tickets: Vec<_> = bufs.iter_mut().enumerate().map(|(i, b)| submit_only(&dev, DeviceOp::Read, i as u64 * 4096, &[Segment::from_mut(&mut b[..])])).collect();
    dev.unplug();
    for t in first.into_iter().chain(tickets) {
        assert_eq!(block_on(Wait { dev: &dev, ticket: t }), Ok(()));
    }
    // 50 requests: the last 12 kept back (a run of 12: 11 merged); the 36 reads handed over
    // before them are a run of 32 (31 merged) and one of 4 (3), which would have been 35.
    assert_eq!(dev.engine_counts().unwrap().merged, 11 + 31 + 3);
    for (i, buf) in bufs.iter().enumerate() {
        assert!(buf.iter().enumerate().all(|(j, &b)| b == pattern(i as u64 * 4096 + j as u64)), "block {i}");
    }
}

/// Writeback at depth: a handed-over batch keeps some requests back for the caller to run,
/// which no helper ever will. Dropping the file must run those too, not only wait for the
/// helpers' share.
#[test]
fn writeback_drop_runs_requests_kept_back() {
    let blocks = 256u64;
    let p = make_file("wb-drop-kept", blocks * 4096);
    let dev = HostFile::open(&p, &writeback()).unwrap();
    let mut written = vec![false; blocks as usize];
    // Into shared mode, as far as the machine gives the helpers a core.
    at_depth(&dev, 32, 2000, blocks, false, &mut written);
    let mut bufs = vec![[0u8; 4096]; 32];
    // `bufs` outlives `dev`, whose drop waits for these requests.
    for (i, buf) in bufs.iter_mut().enumerate() {
        submit_only(&dev, DeviceOp::Read, i as u64 * 4096, &[Segment::from_mut(&mut buf[..])]);
    }
    dev.unplug();
    drop(dev);
    for (i, buf) in bufs.iter().enumerate() {
        assert!(buf.iter().enumerate().all(|(j, &b)| b == pattern(i as u64 * 4096 + j as u64)), "block {i}");
    }
}

#[test]
fn auto_engine_prefers_io_uring() {
    let p = make_file("dio-auto", 1 << 16);
    let dev = HostFile::open(&p, &direct(Engine::Auto)).unwrap();
    println!("auto engine: {:?}", dev.engine());
    assert_ne!(dev.engine(), ActiveEngine::InThread);
}

// ---------------------------------------------------------------------------------------------
// Image locks against real QEMU processes

/// A QEMU tool from `$var`, else next to `qemu-io` on PATH, else `None` (with a note).
fn qemu_tool(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file());
    if found.is_none() {
        println!("note: {name} not found (set {var}); skipping the QEMU lock test");
    }
    found
}

/// `qemu-io` holding `path` open until dropped.
struct QemuIo {
    child: Child,
}

impl QemuIo {
    /// Starts `qemu-io [args] path` and waits until it has the image open (a read answered).
    fn start(qemu_io: &Path, args: &[&str], path: &Path) -> Self {
        let mut child = Command::new(qemu_io).args(args).arg(path).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(b"read 0 512\n").unwrap();
        stdin.flush().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).unwrap();
            assert!(n > 0, "qemu-io exited before opening the image");
            if line.contains("read 512/512") {
                break;
            }
        }
        Self { child }
    }
}

impl Drop for QemuIo {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // EOF: qemu-io quits
        let _ = self.child.wait();
    }
}

/// Runs a QEMU tool; (success, stderr).
fn qemu(tool: &Path, args: &[&str], path: &Path) -> (bool, String) {
    let out = Command::new(tool).args(args).arg(path).stdin(Stdio::null()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout))
}

/// Bytes 0..512 of `path` (QEMU's lock bytes are 100.. and 200..) that some open file
/// description holds a lock on, probed one by one ([`lock::byte_taken`], `F_OFD_GETLK`) from a
/// descriptor of our own, which holds none.
///
/// Exact for each byte, unlike `/proc/locks`: that file is read a page at a time, each read
/// restarting at a position in the machine's whole list of locks, so while other tests take and
/// drop locks a read can skip lines (CI saw bytes 201 and 203 missing).
fn locked_bytes(path: &Path) -> Vec<u64> {
    use std::os::fd::AsRawFd;
    let probe = std::fs::File::open(path).unwrap();
    (0..512u64)
        .filter(|&byte| lock::byte_taken(probe.as_raw_fd(), byte as i64).unwrap_or_else(|e| panic!("F_OFD_GETLK: errno {e}")))
        .collect()
}

#[test]
fn locks_against_qemu() {
    let Some(qemu_io) = qemu_tool("QEMU_IO", "qemu-io") else { return };
    let Some(qemu_img) = qemu_tool("QEMU_IMG", "qemu-img") else { return };
    let p = temp_path("locks-qcow2");
    let out = Command::new(&qemu_img).args(["create", "-q", "-f", "qcow2"]).arg(&p).arg("1M").output().unwrap();
    assert!(out.status.success(), "qemu-img create: {}", String::from_utf8_lossy(&out.stderr));
    let rw = writeback();
    let ro = HostFileOptions { read_only: true, ..writeback() };

    // 1. A QEMU writer holds the image.
    {
        let _q = QemuIo::start(&qemu_io, &["-f", "qcow2"], &p);
        let e = HostFile::open(&p, &rw).err().expect("Strata writer must be refused");
        assert!(matches!(e, FileError::Locked { perm: "write", shared: false, .. }), "{e}");
        assert!(e.to_string().contains("Failed to get \"write\" lock"), "{e}");
        assert!(e.to_string().contains("Is another process using the image"), "{e}");
        let e = HostFile::open(&p, &ro).err().expect("Strata reader must be refused");
        assert!(matches!(e, FileError::Locked { perm: "write", shared: true, .. }), "{e}");
        assert!(e.to_string().contains("Failed to get shared \"write\" lock"), "{e}");
        // QEMU's -U and locking=off get through.
        let dev = HostFile::open(&p, &HostFileOptions { force_share: true, ..ro }).unwrap();
        assert!(dev.is_locked());
        drop(dev);
        let dev = HostFile::open(&p, &HostFileOptions { locking: Locking::Off, ..rw }).unwrap();
        assert!(!dev.is_locked());
        drop(dev);
        // Also in queue mode (same open path).
        let e = HostFile::open(&p, &direct(Engine::Auto)).err().unwrap();
        assert!(matches!(e, FileError::Locked { .. }), "{e}");
    }

    // 2. A Strata writer holds the image.
    {
        let dev = HostFile::open(&p, &HostFileOptions { locking: Locking::On, ..rw }).unwrap();
        assert!(dev.is_locked());
        let (ok, msg) = qemu(&qemu_img, &["info"], &p);
        assert!(!ok, "qemu-img info must fail while Strata writes: {msg}");
        assert!(msg.contains("Failed to get shared \"write\" lock"), "{msg}");
        let (ok, msg) = qemu(&qemu_img, &["info", "-U"], &p);
        assert!(ok, "qemu-img info -U: {msg}");
        let (_, msg) = qemu(&qemu_io, &["-f", "qcow2", "-c", "read 0 512"], &p);
        assert!(msg.contains("Failed to get \"write\" lock"), "qemu-io writer must fail: {msg}");
        // The very bytes QEMU's qcow2 writer holds (seen in /proc/locks during `qemu-io -f qcow2`).
        assert_eq!(locked_bytes(&p), [100, 101, 103, 201, 203]);
        // A second Strata opener conflicts too.
        let e = HostFile::open(&p, &rw).err().unwrap();
        assert!(matches!(e, FileError::Locked { .. }), "{e}");
        drop(dev);
        let (ok, msg) = qemu(&qemu_img, &["info"], &p);
        assert!(ok, "after close: {msg}");
    }

    // 3. A Strata reader holds the image: readers coexist, writers are refused.
    {
        let dev = HostFile::open(&p, &ro).unwrap();
        assert_eq!(locked_bytes(&p), [100, 201, 203]);
        let (ok, msg) = qemu(&qemu_img, &["info"], &p);
        assert!(ok, "qemu-img info beside a Strata reader: {msg}");
        let (_, msg) = qemu(&qemu_io, &["-f", "qcow2", "-c", "read 0 512"], &p);
        assert!(msg.contains("Failed to get \"write\" lock"), "qemu-io writer beside a Strata reader: {msg}");
        let (ok, msg) = qemu(&qemu_io, &["-r", "-f", "qcow2", "-c", "read 0 512"], &p);
        assert!(ok && !msg.contains("Failed"), "qemu-io reader beside a Strata reader: {msg}");
        let dev2 = HostFile::open(&p, &ro).unwrap();
        drop((dev, dev2));
    }

    // 4. A QEMU reader: Strata readers coexist, Strata writers are refused.
    {
        let _q = QemuIo::start(&qemu_io, &["-r", "-f", "qcow2"], &p);
        HostFile::open(&p, &ro).unwrap();
        let e = HostFile::open(&p, &rw).err().unwrap();
        assert!(matches!(e, FileError::Locked { perm: "write", shared: false, .. }), "{e}");
    }
}

/// Dropping a file releases its image locks at once, though a child forked meanwhile (as
/// `Command::spawn` does, between `fork` and `exec`) still shares the open file description:
/// otherwise a `qemu-img` started right after the close could find the image locked.
#[test]
fn dropping_releases_locks_a_forked_child_still_shares() {
    let p = make_file("lock-fork", 65536);
    let dev = HostFile::open(&p, &HostFileOptions::default()).unwrap();
    assert!(dev.is_locked());
    // SAFETY: the child only sleeps and exits (async-signal-safe calls) and never returns into
    // Rust code, so forking from a multi-threaded test process is sound.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::sleep(3);
            libc::_exit(0);
        }
    }
    assert!(pid > 0, "fork failed");
    drop(dev);
    let again = HostFile::open(&p, &HostFileOptions::default());
    // SAFETY: plain syscalls on the child this test forked.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, core::ptr::null_mut(), 0);
    }
    assert!(again.is_ok(), "the image stayed locked after the drop: {:?}", again.err());
}

/// A host file may move to another thread, but one thread drives it at a time, as every
/// [`BlockDevice`] (its engine's caller-side state is a `RefCell`, not a mutex: no locked
/// instruction per request).
#[test]
fn host_file_is_send() {
    fn check<T: Send>() {}
    check::<HostFile>();
}

/// A block device named by `STRATA_TEST_BLOCKDEV` (e.g. a loop device; its contents are
/// overwritten). Skipped when unset.
#[test]
fn block_device_from_env() {
    let Some(dev_path) = std::env::var_os("STRATA_TEST_BLOCKDEV") else {
        println!("note: STRATA_TEST_BLOCKDEV unset; skipping the block device test");
        return;
    };
    let p = PathBuf::from(dev_path);
    for opts in [writeback(), direct(Engine::IoUring), direct(Engine::Threads)] {
        let dev = HostFile::open(&p, &HostFileOptions { locking: Locking::Off, ..opts }).unwrap();
        let info = dev.info().clone();
        println!(
            "{}: {:?} capacity {} block {} mem {} features {:?}",
            p.display(),
            dev.engine(),
            info.capacity,
            info.block_size,
            info.mem_alignment,
            info.features
        );
        assert!(info.capacity > 0 && info.capacity.is_multiple_of(512));
        assert!(info.block_size >= 512);
        let mut dma = Dma::new(64 << 10);
        let buf = dma.as_mut();
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = pattern(i as u64));
        write(&dev, 1 << 20, buf).unwrap();
        buf.fill(0);
        read(&dev, 1 << 20, buf).unwrap();
        assert!(buf.iter().enumerate().all(|(i, &b)| b == pattern(i as u64)));
        assert_eq!(run(&dev, DeviceOp::Flush, 0, 0, &[]), Ok(()));
        assert_eq!(run(&dev, DeviceOp::WriteZeroes { unmap: false }, 1 << 20, 32 << 10, &[]), Ok(()));
        read(&dev, 1 << 20, buf).unwrap();
        assert!(buf[..32 << 10].iter().all(|&b| b == 0));
        assert!(buf[32 << 10..].iter().enumerate().all(|(i, &b)| b == pattern(i as u64 + (32 << 10))));
        let r = run(&dev, DeviceOp::Discard, 2 << 20, 64 << 10, &[]);
        assert!(matches!(r, Ok(()) | Err(DeviceError::Unsupported)), "{r:?}");
    }
}

#[test]
fn direct_partial_last_block_reads_and_writes() {
    // A qcow2 file fresh from qemu-img is 196616 bytes: its last block is partial.
    let len = 196_616u64;
    let p = make_file("dio-tail", len);
    let expect = std::fs::read(&p).unwrap();
    let Some(dev) = open_queue(&p, &direct(Engine::Auto)) else { return };
    let bs = u64::from(dev.info().block_size);
    let last = len / bs * bs;
    let mut buf = Dma::new(bs as usize);
    read(&dev, last, buf.as_mut()).unwrap();
    let tail = (len - last) as usize;
    assert_eq!(&buf.as_mut()[..tail], &expect[last as usize..]);
    assert!(buf.as_mut()[tail..].iter().all(|&b| b == 0), "past the end reads as zeros");
    buf.as_mut().fill(0x5a);
    write(&dev, last, buf.as_mut()).unwrap();
    drop(dev);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), last + bs);
}

#[test]
fn direct_grow_from_a_partial_block_waits_for_writes_in_flight() {
    // Extending a file that ends inside a file system block zeroes the rest of the block
    // through the page cache; a direct write into that block still in flight then fails to drop
    // the page and the kernel reports EIO at the next fsync. So the first grow of such a file
    // waits for what is in flight, and growth keeps the end on whole blocks afterwards.
    for engine in ENGINES {
        let p = make_file("dio-grow", 2560);
        let Some(dev) = open_queue(&p, &direct(engine)) else { continue };
        let bs = u64::from(dev.info().block_size);
        let mut buf = Dma::new(bs as usize);
        buf.as_mut().fill(0x77);
        for round in 0..200 {
            let end = dev.capacity();
            let at = (end - 1) / bs * bs;
            let segs = [Segment::from_ref(&buf.as_mut()[..])];
            let req = DeviceRequest { op: DeviceOp::Write, offset: at, len: bs, segments: &segs };
            // SAFETY: `buf` outlives the wait below.
            let ticket = unsafe { dev.submit(&req) }.unwrap();
            dev.unplug();
            let grown = dev.grow(end + 1).unwrap();
            if round == 0 {
                assert_eq!(dev.in_flight(), 0, "{engine:?}: the write into the partial last block finished before the file grew");
            }
            assert_eq!(grown % 4096, 0, "{engine:?}: grown to whole pages and file system blocks");
            block_on(Wait { dev: &dev, ticket }).unwrap();
        }
        assert_eq!(run(&dev, DeviceOp::Flush, 0, 0, &[]), Ok(()), "{engine:?}: no write-back error recorded");
        drop(dev);
        let data = std::fs::read(&p).unwrap();
        assert!(data[2048..2560].iter().all(|&b| b == 0x77), "{engine:?}: the write in flight landed");
    }
}

/// Sets `path`'s access and modification times to `atime` and `mtime` seconds before now;
/// returns the access time set.
fn set_times_ago(path: &Path, atime: u64, mtime: u64) -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    let ago = |s: u64| now - std::time::Duration::from_secs(s);
    let times = std::fs::FileTimes::new().set_accessed(ago(atime)).set_modified(ago(mtime));
    std::fs::File::options().write(true).open(path).unwrap().set_times(times).unwrap();
    ago(atime)
}

fn accessed(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().accessed().unwrap()
}

/// False on a `noatime` or read-only mount, where no read moves the access time.
fn mount_updates_atime(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: `statvfs` is plain data; all-zero is a valid value, filled in by fstatvfs.
    let mut st: libc::statvfs = unsafe { core::mem::zeroed() };
    // SAFETY: fstatvfs writes only the struct it is given.
    assert_eq!(unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) }, 0);
    // ST_NOATIME and ST_RDONLY have the MS_ flags' values on Linux.
    st.f_flag & (libc::MS_NOATIME | libc::MS_RDONLY) == 0
}

/// Reads of a file opened with the default `noatime` leave its access time alone, even one a
/// day old that the mount's relatime rule would update; with `noatime` off, a read updates it.
#[test]
fn noatime_reads_leave_the_access_time() {
    let p = make_file("noatime", 64 << 10);
    if !mount_updates_atime(&p) {
        return; // No read moves the access time here either way.
    }
    let mut buf = vec![0u8; 4096];
    let day = 24 * 3600;

    let dev = HostFile::open(&p, &writeback()).unwrap();
    let old = set_times_ago(&p, 2 * day, 3 * day);
    read(&dev, 0, &mut buf).unwrap();
    read(&dev, 8192, &mut buf).unwrap();
    assert_eq!(accessed(&p), old, "a read with O_NOATIME moved the access time");
    drop(dev);

    let dev = HostFile::open(&p, &HostFileOptions { noatime: false, ..writeback() }).unwrap();
    let old = set_times_ago(&p, 2 * day, 3 * day);
    read(&dev, 0, &mut buf).unwrap();
    assert!(accessed(&p) > old, "with noatime off, a read updates a day-old access time (relatime)");
}
