//! `peer-bench`: `qemu-img bench`'s request loop over the other Rust qcow2 libraries, so that
//! `scripts/bench-peers.sh` can set them beside `qemu-runner img bench` and `qemu-img bench`.
//!
//! ```text
//! peer-bench imago|qcow2-rs|pread [-c COUNT] [-d DEPTH] [-s SIZE] [-S STEP] [-o OFFSET]
//!            [-w [--pattern N]] [-t none|writeback] [-f qcow2|raw] [--engine sync|uring]
//!            [--verify RAW] FILE
//! ```
//!
//! Flags, defaults and offsets are qemu-img bench's as `qemu-runner/src/img/bench.rs` implements
//! them: COUNT requests of SIZE bytes at offsets advancing by STEP from OFFSET and wrapping to 0
//! when a request would pass the image's end, DEPTH of them in flight. Prints qemu-img's two
//! lines, "Sending ..." and "Run completed in X.XXX seconds.". The clock covers the requests only:
//! opening the image before and, after `-w`, the final flush are outside it, as in qemu-img.
//!
//! How each library runs (its fastest configuration we found that its API offers):
//! - `imago`, built with its `sync` feature (plain functions, no tokio), which its README
//!   recommends to synchronous callers over its sync wrappers of the async API: its `File` storage does blocking `preadv`/`pwritev`
//!   in either mode, so its async API overlaps requests only across threads too, and the sync
//!   build was ~25% faster at QD1 here (page-cached 4 KiB reads). DEPTH > 1: min(DEPTH, cores)
//!   threads share one image, one request in flight each.
//! - `qcow2-rs`: `--engine sync` (plain pread/pwrite; a request never yields, so DEPTH > 1 runs
//!   one request at a time) or `--engine uring` (tokio-uring, one thread, DEPTH requests in
//!   flight through io_uring). Default: uring for `-t none` at DEPTH > 1, where requests wait for
//!   the device; sync otherwise: page-cached reads never wait, and io_uring only added cost here
//!   (4 KiB reads, -t writeback, 1 GiB image: sync ~2.3x faster at QD1, ~1.4x at QD32).
//! - `pread`: no image format at all: SIZE-byte preads of a raw FILE (e.g. the raw source of the
//!   qcow2 images) at the same offsets, from min(DEPTH, cores) threads: the physical limit, which
//!   no qcow2 library reading through the page cache can pass on this machine.
//!
//! `-t none` opens every file of the chain with O_DIRECT (both libraries support it).
//! `--verify RAW` compares every buffer read with the same bytes of RAW (a raw image of the same
//! content, e.g. from `qemu-img convert -O raw`) and fails on the first difference; the time it
//! prints then includes the comparisons.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const USAGE: &str = "usage: peer-bench imago|qcow2-rs|pread [-c COUNT] [-d DEPTH] [-s SIZE] \
[-S STEP] [-o OFFSET] [-w [--pattern N]] [-t none|writeback] [-f qcow2|raw] \
[--engine sync|uring] [--verify RAW] FILE";

/// Buffers are aligned to this, enough for O_DIRECT on any common device.
const ALIGN: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lib {
    Imago,
    Qcow2Rs,
    Pread,
}

/// The command line.
struct Opts {
    lib: Lib,
    count: u64,
    depth: usize,
    size: u64,
    step: u64,
    start: u64,
    write: bool,
    pattern: u8,
    direct: bool,
    /// qcow2-rs only: `sync` or `uring`.
    engine: Option<String>,
    verify: Option<PathBuf>,
    file: PathBuf,
}

/// `4096`, `4k`, `64K`, `1M`, `1G`: bytes, with qemu's binary suffixes.
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 10),
        Some((i, 'm' | 'M')) => (&s[..i], 20),
        Some((i, 'g' | 'G')) => (&s[..i], 30),
        Some((i, 'b' | 'B')) => (&s[..i], 0),
        _ => (s, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("invalid size {s:?}"))
}

fn parse_args(argv: &[String]) -> Result<Opts, String> {
    let lib = match argv.first().map(String::as_str) {
        Some("imago") => Lib::Imago,
        Some("qcow2-rs") => Lib::Qcow2Rs,
        Some("pread") => Lib::Pread,
        _ => return Err("the first argument names the library: imago, qcow2-rs or pread".into()),
    };
    let mut o = Opts {
        lib,
        count: 75_000,
        depth: 64,
        size: 4096,
        step: 0,
        start: 0,
        write: false,
        pattern: 0,
        direct: false,
        engine: None,
        verify: None,
        file: PathBuf::new(),
    };
    let mut files = Vec::new();
    let mut args = argv[1..].iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "-c" => o.count = value()?.parse().map_err(|_| "-c takes a number")?,
            "-d" => o.depth = value()?.parse().map_err(|_| "-d takes a number")?,
            "-s" => o.size = parse_size(value()?)?,
            "-S" => o.step = parse_size(value()?)?,
            "-o" => o.start = parse_size(value()?)?,
            "-w" => o.write = true,
            "--pattern" => o.pattern = value()?.parse().map_err(|_| "--pattern takes 0..255")?,
            "-t" => {
                o.direct = match value()?.as_str() {
                    "none" => true,
                    "writeback" => false,
                    other => return Err(format!("-t {other}: only none and writeback")),
                }
            }
            "-f" => {
                let want = if lib == Lib::Pread { "raw" } else { "qcow2" };
                let fmt = value()?;
                if fmt != want {
                    return Err(format!("-f {fmt}: this mode reads {want} images only"));
                }
            }
            "--engine" => o.engine = Some(value()?.clone()),
            "--verify" => o.verify = Some(value()?.into()),
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            file => files.push(PathBuf::from(file)),
        }
    }
    let [file] = &files[..] else {
        return Err("exactly one image file".into());
    };
    o.file = file.clone();
    o.depth = o.depth.clamp(1, 1024);
    if o.step == 0 {
        o.step = o.size;
    }
    match (lib, o.engine.as_deref()) {
        (_, None) | (Lib::Qcow2Rs, Some("sync" | "uring")) => {}
        (_, Some(e)) => {
            return Err(format!(
                "--engine {e}: only qcow2-rs has engines (sync, uring)"
            ))
        }
    }
    Ok(o)
}

/// The requests of one run: their offsets, handed out in order to whichever worker asks first.
struct Plan {
    offsets: Vec<u64>,
    next: AtomicUsize,
    size: usize,
    write: bool,
    pattern: u8,
    reference: Option<File>,
}

impl Plan {
    /// qemu-img bench's offsets as img/bench.rs computes them: from `start` by `step`, a request
    /// that would pass the end starting at 0 instead. (qemu-img's own wrap differs by version:
    /// modulo the image size in 10.0, modulo size - SIZE later. All agree until the first wrap,
    /// which bench-peers.sh's runs never reach: 200000 x 4 KiB < 1 GiB.)
    fn new(o: &Opts, image_size: u64) -> Result<Plan, String> {
        if o.size == 0 || o.size > image_size || o.start >= image_size {
            return Err(format!(
                "buffer size {} and offset {} must fit in the image ({image_size} bytes)",
                o.size, o.start
            ));
        }
        let mut next = o.start;
        let offsets = (0..o.count)
            .map(|_| {
                let offset = if next + o.size > image_size { 0 } else { next };
                next = (offset + o.step) % image_size;
                offset
            })
            .collect();
        let reference = match &o.verify {
            Some(path) => Some(File::open(path).map_err(|e| format!("{}: {e}", path.display()))?),
            None => None,
        };
        Ok(Plan {
            offsets,
            next: AtomicUsize::new(0),
            size: o.size as usize,
            write: o.write,
            pattern: o.pattern,
            reference,
        })
    }

    /// The next request's offset, or None when all have been issued.
    fn take(&self) -> Option<u64> {
        self.offsets
            .get(self.next.fetch_add(1, Ordering::Relaxed))
            .copied()
    }

    /// With `--verify`: `buf`, read at `offset`, must equal the reference's bytes there.
    fn check(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let Some(reference) = &self.reference else {
            return Ok(());
        };
        let mut want = vec![0; buf.len()];
        reference.read_exact_at(&mut want, offset)?;
        match want.iter().zip(buf).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(io::Error::other(format!(
                "data differs from the reference at byte {}",
                offset + i as u64
            ))),
        }
    }

    /// A worker's buffer: SIZE bytes of the pattern, at an ALIGN-aligned address inside `store`.
    fn buffer<'a>(&self, store: &'a mut Vec<u8>) -> &'a mut [u8] {
        *store = vec![self.pattern; self.size + ALIGN];
        let skip = store.as_ptr().align_offset(ALIGN);
        &mut store[skip..skip + self.size]
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// imago, built with its `sync` feature: min(DEPTH, cores) threads over one `FormatAccess`.
fn run_imago(o: &Opts) -> Result<f64, String> {
    use imago::file::File as ImagoFile;
    use imago::qcow2::Qcow2;
    use imago::{
        FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate, StorageOpenOptions,
    };

    // The permissive gate lets imago open the backing chain named in the image headers (relative
    // names resolved against the referring image), with the same storage options.
    let img = Qcow2::<ImagoFile>::builder_path(&o.file)
        .storage_open_options(StorageOpenOptions::new().direct(o.direct))
        .write(o.write)
        .open(PermissiveImplicitOpenGate::default())
        .map_err(|e| format!("imago: opening {}: {e}", o.file.display()))?;
    let img = FormatAccess::new(img);
    let plan = Plan::new(o, img.size())?;
    let seconds = on_threads(o.depth.min(cores()), &plan, |offset, buf| {
        if plan.write {
            img.write(&*buf, offset)
        } else {
            img.read(&mut *buf, offset)
        }
    })
    .map_err(|e| format!("imago: {e}"))?;
    if o.write {
        img.flush().map_err(|e| format!("imago: flush: {e}"))?;
    }
    Ok(seconds)
}

/// qcow2-rs: DEPTH futures joined on one thread, over its sync or io_uring engine.
fn run_qcow2_rs(o: &Opts) -> Result<f64, String> {
    use qcow2_rs::dev::{Qcow2Dev, Qcow2DevParams};
    use qcow2_rs::ops::Qcow2IoOps;
    use qcow2_rs::utils::{qcow2_setup_dev_sync, qcow2_setup_dev_uring};

    async fn worker<T: Qcow2IoOps>(dev: &Qcow2Dev<T>, plan: &Plan) -> Result<(), String> {
        let mut store = Vec::new();
        let buf = plan.buffer(&mut store);
        while let Some(offset) = plan.take() {
            if plan.write {
                dev.write_at(buf, offset)
                    .await
                    .map_err(|e| format!("write at {offset}: {e:?}"))?;
            } else {
                let n = dev
                    .read_at(buf, offset)
                    .await
                    .map_err(|e| format!("read at {offset}: {e:?}"))?;
                if n != buf.len() {
                    return Err(format!(
                        "short read at {offset}: {n} of {} bytes",
                        buf.len()
                    ));
                }
                plan.check(offset, buf).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    async fn drive<T: Qcow2IoOps>(dev: &Qcow2Dev<T>, o: &Opts) -> Result<f64, String> {
        let plan = Plan::new(o, dev.info.virtual_size())?;
        let t0 = Instant::now();
        let results = futures::future::join_all((0..o.depth).map(|_| worker(dev, &plan))).await;
        let seconds = t0.elapsed().as_secs_f64();
        results.into_iter().collect::<Result<Vec<()>, String>>()?;
        if o.write {
            dev.flush_meta()
                .await
                .map_err(|e| format!("flush: {e:?}"))?;
        }
        Ok(seconds)
    }

    // qcow2-rs opens a backing file by the name in the header as it stands, i.e. relative to the
    // current directory rather than to the image: run from the image's directory.
    let name = o
        .file
        .file_name()
        .map(PathBuf::from)
        .ok_or("no image file name")?;
    if let Some(dir) = o.file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::env::set_current_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let params = Qcow2DevParams::new(9, None, None, !o.write, o.direct);
    let uring = o
        .engine
        .as_deref()
        .map_or(o.direct && o.depth > 1, |e| e == "uring");
    let result = if uring {
        tokio_uring::start(async {
            let dev = qcow2_setup_dev_uring(&name, &params)
                .await
                .map_err(|e| format!("open: {e:?}"))?;
            drive(&dev, o).await
        })
    } else {
        let dev = qcow2_setup_dev_sync(&name, &params).map_err(|e| format!("open: {e:?}"))?;
        futures::executor::block_on(async {
            // The sync setup leaves the tables of the chain to load (the uring one loads them).
            dev.qcow2_prep_io()
                .await
                .map_err(|e| format!("open: {e:?}"))?;
            drive(&dev, o).await
        })
    };
    result.map_err(|e| format!("qcow2-rs: {e}"))
}

/// The physical limit: preads (pwrites with `-w`) of a raw file from min(DEPTH, cores) threads.
fn run_pread(o: &Opts) -> Result<f64, String> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(o.write)
        .custom_flags(if o.direct { libc::O_DIRECT } else { 0 })
        .open(&o.file)
        .map_err(|e| format!("{}: {e}", o.file.display()))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let plan = Plan::new(o, size)?;
    let seconds = on_threads(o.depth.min(cores()), &plan, |offset, buf| {
        if plan.write {
            file.write_all_at(buf, offset)
        } else {
            file.read_exact_at(buf, offset)
        }
    })
    .map_err(|e| format!("pread: {e}"))?;
    if o.write {
        file.sync_data()
            .map_err(|e| format!("pread: fdatasync: {e}"))?;
    }
    Ok(seconds)
}

/// Runs `plan` on `threads` threads, each issuing one blocking request at a time through `io`
/// (and checking reads); returns the seconds from the first request to the last completion.
fn on_threads(
    threads: usize,
    plan: &Plan,
    io: impl Fn(u64, &mut [u8]) -> io::Result<()> + Sync,
) -> io::Result<f64> {
    let worker = || -> io::Result<()> {
        let mut store = Vec::new();
        let buf = plan.buffer(&mut store);
        while let Some(offset) = plan.take() {
            io(offset, buf)
                .map_err(|e| io::Error::new(e.kind(), format!("request at byte {offset}: {e}")))?;
            if !plan.write {
                plan.check(offset, buf)?;
            }
        }
        Ok(())
    };
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("worker panicked")))
        })
    })?;
    Ok(t0.elapsed().as_secs_f64())
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut o = match parse_args(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("peer-bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Absolute paths: the qcow2-rs run changes the current directory.
    fn absolute(p: &Path) -> PathBuf {
        std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
    }
    o.file = absolute(&o.file);
    o.verify = o.verify.as_deref().map(absolute);
    println!(
        "Sending {} {} requests, {} bytes each, {} in parallel (starting at offset {}, step size {})",
        o.count,
        if o.write { "write" } else { "read" },
        o.size,
        o.depth,
        o.start,
        o.step
    );
    let result = match o.lib {
        Lib::Imago => run_imago(&o),
        Lib::Qcow2Rs => run_qcow2_rs(&o),
        Lib::Pread => run_pread(&o),
    };
    match result {
        Ok(seconds) => {
            println!("Run completed in {seconds:.3} seconds.");
            if let (Some(reference), false) = (&o.verify, o.write) {
                println!(
                    "verified: all {} reads equal {}",
                    o.count,
                    reference.display()
                );
            }
        }
        Err(e) => {
            eprintln!("peer-bench: {e}");
            std::process::exit(1);
        }
    }
}
