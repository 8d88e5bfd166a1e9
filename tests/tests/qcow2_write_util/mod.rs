//! Helpers for the qcow2 write conformance suite: operations run through Strata's backend on the
//! host (read-write opens as `qemu-runner img` makes them, several requests in flight at once),
//! a byte model of what the guest must see, the same operations as `qemu-io` commands, and the
//! oracles (`qemu-img check` clean, `qemu-img convert` equal to the model, `qemu-img map` with
//! the layer depth of every run).

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // reason: test helpers

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::task::Poll;

use qemu_runner::img::block::dev::file::CacheMode;
use qemu_runner::img::image::{self, HostBackend, Image, OpenOptions};
use qemu_runner::img::ImgError;

#[path = "../qcow2_util/mod.rs"]
mod util;
pub use util::*;

/// One guest operation.
#[derive(Clone, Debug)]
pub enum Op {
    /// Write these bytes.
    Write { off: u64, data: Vec<u8> },
    /// Write zeroes (`unmap`: deallocation allowed).
    Zeroes { off: u64, len: u64, unmap: bool },
    /// Discard.
    Discard { off: u64, len: u64 },
    /// Flush.
    Flush,
    /// Read `len` bytes (the outcome carries them).
    Read { off: u64, len: u64 },
}

impl Op {
    /// A write of `len` bytes of pattern `seed` at `off`.
    pub fn write(off: u64, len: u64, seed: u64) -> Op {
        Op::Write { off, data: pattern(seed, len) }
    }

    /// A write of `len` bytes of the single byte `byte` at `off`.
    pub fn fill(off: u64, len: u64, byte: u8) -> Op {
        Op::Write { off, data: vec![byte; len as usize] }
    }

    /// The same operation as a `qemu-io` command, if it has one.
    pub fn qemu_io(&self) -> Option<String> {
        match self {
            Op::Write { .. } | Op::Read { .. } => None,
            Op::Zeroes { off, len, unmap: false } => Some(format!("write -z {off} {len}")),
            Op::Zeroes { off, len, unmap: true } => Some(format!("write -z -u {off} {len}")),
            Op::Discard { off, len } => Some(format!("discard {off} {len}")),
            Op::Flush => Some("flush".into()),
        }
    }
}

/// Reproducible pseudo-random bytes (never a whole zero sector, so detect-zeroes has no say).
pub fn pattern(seed: u64, len: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = vec![0u8; len as usize];
    for word in out.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
    out
}

/// What one operation gave: `Ok(Some(bytes))` for a read, `Ok(None)` otherwise, or the error.
pub type Outcome = Result<Option<Vec<u8>>, String>;

/// Runs one operation on `b`.
pub async fn run_op(b: &HostBackend<'_, '_>, op: &Op) -> Outcome {
    let r = match op {
        Op::Write { off, data } => b.write(*off, data).await,
        Op::Zeroes { off, len, unmap } => b.write_zeroes(*off, *len, *unmap).await,
        Op::Discard { off, len } => b.discard(*off, *len).await,
        Op::Flush => b.flush().await,
        Op::Read { off, len } => {
            let mut buf = vec![0u8; *len as usize];
            return b.read(*off, &mut buf).await.map(|()| Some(buf)).map_err(|e| format!("{op:?}: {e}"));
        }
    };
    r.map(|()| None).map_err(|e| format!("{}: {e}", describe(op)))
}

/// A short description of `op` (no data bytes).
pub fn describe(op: &Op) -> String {
    match op {
        Op::Write { off, data } => format!("write {off}+{}", data.len()),
        other => format!("{other:?}"),
    }
}

/// Polls every future until all are done, in the order given on every round (so each starts in
/// issue order); the outputs in the same order.
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Runs `ops` on the image all at once (issued in order); their outcomes.
pub fn exec(img: &Image<'_, '_>, ops: &[Op]) -> Vec<Outcome> {
    let b = &img.backend;
    image::block_on(join_all(ops.iter().map(|op| run_op(b, op)).collect()))
}

/// Like [`exec`], panicking on the first failed operation.
pub fn exec_ok(img: &Image<'_, '_>, ops: &[Op]) -> Vec<Option<Vec<u8>>> {
    exec(img, ops).into_iter().map(|r| r.unwrap()).collect()
}

/// Options for a read-write open through the page cache (`-t writeback`).
pub fn rw() -> OpenOptions {
    OpenOptions { read_only: false, ..OpenOptions::default() }
}

/// Options for a read-write open with `O_DIRECT` (`-t none`: requests really queue).
pub fn rw_direct() -> OpenOptions {
    OpenOptions { read_only: false, cache: CacheMode::None, ..OpenOptions::default() }
}

/// Opens `file` with `opts` and runs `f` on it (on a thread, under a timeout); the image is
/// closed cleanly afterwards. `Err` carries the open or close error, a panic or a hang.
pub fn with_open<R: Send + 'static>(
    file: &Path,
    opts: OpenOptions,
    f: impl FnOnce(&Image<'_, '_>) -> R + Send + 'static,
) -> Result<R, String> {
    let spec = file.to_str().unwrap().to_string();
    with_timeout(move || image::with_image(&spec, &opts, |img| Ok::<R, ImgError>(f(img))).map_err(|e| e.to_string()))?
}

/// Opens `file` read-write (page cache), runs every batch of `batches` in turn (each batch all
/// at once) and closes; panics on any failed operation. The outcomes per batch.
pub fn run(file: &Path, batches: Vec<Vec<Op>>) -> Vec<Vec<Option<Vec<u8>>>> {
    run_with(file, rw(), batches)
}

/// [`run`] with open options `opts`.
pub fn run_with(file: &Path, opts: OpenOptions, batches: Vec<Vec<Op>>) -> Vec<Vec<Option<Vec<u8>>>> {
    with_open(file, opts, move |img| batches.iter().map(|b| exec_ok(img, b)).collect::<Vec<_>>())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The guest-visible bytes an image must show.
#[derive(Clone)]
pub struct Model {
    /// The bytes now.
    pub bytes: Vec<u8>,
    /// What the backing chain shows (zeros without one).
    pub backing: Vec<u8>,
    /// Cluster size.
    pub cluster: u64,
    /// qcow2 version 3 (discard leaves zeros rather than the backing file's bytes).
    pub v3: bool,
    /// The image has a backing file (a v2 discard there does nothing, as QEMU's).
    pub has_backing: bool,
}

impl Model {
    /// A model of an image of `size` bytes over `backing` (its bytes, cut or padded with zeros).
    pub fn new(size: u64, backing: Option<&[u8]>, cluster: u64, v3: bool) -> Model {
        let mut base = vec![0u8; size as usize];
        if let Some(b) = backing {
            let n = b.len().min(base.len());
            base[..n].copy_from_slice(&b[..n]);
        }
        Model { bytes: base.clone(), backing: base, cluster, v3, has_backing: backing.is_some() }
    }

    /// Applies `op` as QEMU's qcow2 does: discard drops whole clusters only (unaligned parts
    /// stay); a dropped cluster reads zeros in v3 and in v2 without a backing file; v2 over a
    /// backing file refuses discards (`qcow2_co_pdiscard`: they "could expose stale data from
    /// the backing file"), so the data stays.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Write { off, data } => self.bytes[*off as usize..*off as usize + data.len()].copy_from_slice(data),
            Op::Zeroes { off, len, .. } => self.bytes[*off as usize..(*off + *len) as usize].fill(0),
            Op::Discard { off, len } => {
                let c = self.cluster;
                let start = off.div_ceil(c) * c;
                // A partial last cluster counts when the request reaches the end of the image.
                let end = if off + len == self.bytes.len() as u64 { off + len } else { (off + len) / c * c };
                if end <= start {
                    return;
                }
                let (s, e) = (start as usize, end as usize);
                if self.v3 || !self.has_backing {
                    self.bytes[s..e].fill(0);
                }
            }
            Op::Flush | Op::Read { .. } => {}
        }
    }

    /// Applies every op in order.
    pub fn apply_all(&mut self, ops: &[Op]) {
        for op in ops {
            self.apply(op);
        }
    }
}

/// `qemu-img ARGS`, retried for a moment while another test's child process (between its
/// fork and exec) still holds a copy of a just-closed image's descriptor, and so its lock.
pub fn qimg_locked(args: &[&str]) -> std::process::Output {
    ensure_qemu();
    for _ in 0..50 {
        let out = Command::new(qemu_img()).args(args).output().unwrap();
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("lock") {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Command::new(qemu_img()).args(args).output().unwrap()
}

/// The bytes `qemu-img convert -O raw` makes of `file` (extra args such as `-l` first).
pub fn qemu_bytes(file: &Path, extra: &[&str]) -> Vec<u8> {
    let out = file.with_extension("qemu-raw");
    let mut args = vec!["convert"];
    args.extend_from_slice(extra);
    args.extend(["-O", "raw", file.to_str().unwrap(), out.to_str().unwrap()]);
    let done = qimg_locked(&args);
    assert!(done.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&done.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    bytes
}

/// The first difference between `actual` and `expected`, described (offset, run length, bytes).
pub fn diff(actual: &[u8], expected: &[u8]) -> Option<String> {
    if actual.len() != expected.len() {
        return Some(format!("size {} != expected {}", actual.len(), expected.len()));
    }
    let first = actual.iter().zip(expected).position(|(a, b)| a != b)?;
    let run = actual[first..].iter().zip(&expected[first..]).take_while(|(a, b)| a != b).count();
    let total = actual.iter().zip(expected).filter(|(a, b)| a != b).count();
    let show = |b: &[u8]| b[first..(first + 8).min(b.len())].iter().map(|x| format!("{x:02x}")).collect::<String>();
    Some(format!(
        "first difference at byte {first} ({first:#x}), {run} differing in a row, {total} in all; actual {} expected {}",
        show(actual),
        show(expected)
    ))
}

/// Asserts that qemu-img reads `file` as `expected`.
pub fn assert_bytes(file: &Path, expected: &[u8], what: &str) {
    if let Some(d) = diff(&qemu_bytes(file, &[]), expected) {
        panic!("{what}: {}: {d}", file.display());
    }
}

/// `qemu-img check --output=json`: exit status and the parsed report.
pub fn check(file: &Path) -> (i32, serde_json::Value) {
    let out = qimg_locked(&["check", "--output=json", file.to_str().unwrap()]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

/// Asserts `qemu-img check` finds neither corruptions nor leaks.
pub fn assert_clean(file: &Path) {
    let (code, v) = check(file);
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    assert!(
        code == 0 && n("corruptions") == 0 && n("leaks") == 0 && n("check-errors") == 0,
        "qemu-img check {}: exit {code}: {v}",
        file.display()
    );
}

/// One `qemu-img map --output=json` run, with its depth (0: this layer) and whether it is
/// data or zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRun {
    pub start: u64,
    pub length: u64,
    pub depth: u64,
    pub data: bool,
    pub zero: bool,
}

/// `qemu-img map --output=json` of `file`.
pub fn map(file: &Path) -> Vec<MapRun> {
    let out = qimg_locked(&["map", "--output=json", file.to_str().unwrap()]);
    assert!(out.status.success(), "qemu-img map {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| MapRun {
            start: e["start"].as_u64().unwrap(),
            length: e["length"].as_u64().unwrap(),
            depth: e["depth"].as_u64().unwrap(),
            data: e["data"].as_bool().unwrap(),
            zero: e["zero"].as_bool().unwrap(),
        })
        .collect()
}

/// The map run holding byte `at`.
pub fn map_at(runs: &[MapRun], at: u64) -> MapRun {
    *runs.iter().find(|r| r.start <= at && at < r.start + r.length).unwrap()
}

/// A raw file of `size` random bytes (seed `seed`); its bytes.
pub fn random_raw(path: &Path, size: u64, seed: u64) -> Vec<u8> {
    random_raw_disk(path, size, seed);
    std::fs::read(path).unwrap()
}

/// `dir/name` as a qcow2 of `size` over the raw `backing` (a name in `dir`) with options `opts`.
pub fn overlay(dir: &Path, name: &str, opts: &str, size: u64, backing: &str, backing_fmt: &str) -> PathBuf {
    let f = dir.join(name);
    create(&f, opts, &size.to_string(), &["-b", backing, "-F", backing_fmt]);
    f
}

/// `dir/name` as a qcow2 of `size` without backing, with options `opts`.
pub fn fresh(dir: &Path, name: &str, opts: &str, size: u64) -> PathBuf {
    let f = dir.join(name);
    create(&f, opts, &size.to_string(), &[]);
    f
}

/// Runs `ops` through Strata (one batch each, in order), checks the image reads as the model
/// and is clean.
pub fn run_and_verify(file: &Path, model: &mut Model, ops: Vec<Op>, what: &str) {
    model.apply_all(&ops);
    run(file, ops.into_iter().map(|o| vec![o]).collect());
    assert_bytes(file, &model.bytes, what);
    assert_clean(file);
}

/// A small xorshift generator for the randomized tests.
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
