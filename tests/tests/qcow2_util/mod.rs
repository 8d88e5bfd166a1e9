//! Helpers for the qcow2 conformance tests: images made by `qemu-img`/`qemu-io` (through
//! `QEMU_IMG`/`QEMU_IO`), header and table patching, and the oracles (`qemu-img convert`,
//! `qemu-img map`) compared with `qemu-runner img` run in this process. Every open of a possibly
//! hostile image runs on a thread under a timeout, so a hang or a panic fails the test instead
//! of stopping it.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // reason: test helpers

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use qemu_runner::img::image::{self, OpenOptions};
pub use strata_tests::*;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// `QEMU_IO`, default from PATH.
pub fn qemu_io_bin() -> String {
    std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into())
}

/// Runs `qemu-img ARGS`; panics with its output on failure.
pub fn qimg(args: &[&str]) -> String {
    ensure_qemu();
    let out = Command::new(qemu_img()).args(args).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `qemu-img ARGS`; true on success.
pub fn qimg_ok(args: &[&str]) -> bool {
    ensure_qemu();
    match Command::new(qemu_img()).args(args).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!("qemu-img {args:?}: {}", String::from_utf8_lossy(&o.stderr));
            false
        }
        Err(e) => {
            eprintln!("qemu-img {args:?}: {e}");
            false
        }
    }
}

/// Runs qemu-io commands on `file` (format `fmt`); panics if one fails (its exit status, or a
/// failure qemu-io prints, such as a `read -P` pattern mismatch).
pub fn qio(fmt: &str, file: &Path, cmds: &[&str]) {
    qio_out(fmt, file, cmds);
}

/// [`qio`], returning qemu-io's stdout.
pub fn qio_out<S: AsRef<str> + std::fmt::Debug>(fmt: &str, file: &Path, cmds: &[S]) -> String {
    ensure_qemu();
    let mut c = Command::new(qemu_io_bin());
    c.args(["-f", fmt]);
    for cmd in cmds {
        c.args(["-c", cmd.as_ref()]);
    }
    let out = c.arg(file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !stdout.contains("Pattern verification failed") && !stdout.contains("failed:"),
        "qemu-io {cmds:?} on {}: {stdout} {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What `qemu-img convert -O raw` makes of `file`, hashed on the host.
pub fn host_digest(file: &Path) -> String {
    let raw = file.with_extension("converted.raw");
    qimg(&["convert", "-O", "raw", file.to_str().unwrap(), raw.to_str().unwrap()]);
    let digest = sha256sum(&raw);
    let _ = std::fs::remove_file(&raw);
    digest
}

/// `qemu-img create -f qcow2 -o OPTS FILE SIZE` (plus extra args such as `-b`).
pub fn create(file: &Path, opts: &str, size: &str, extra: &[&str]) {
    let f = file.to_str().unwrap();
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend_from_slice(extra);
    args.extend([f, size]);
    qimg(&args);
}

/// Runs `qemu-runner img ARGS` in this process.
pub fn img(args: &[&str]) -> i32 {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    qemu_runner::img::main(&args)
}

/// Converts `file` to raw with qemu-img and with `img` (same extra args, e.g. `-l`) and checks
/// the outputs are equal byte for byte.
pub fn check_convert(file: &Path, extra: &[&str]) {
    let dir = file.parent().unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let (ours, theirs) = (dir.join(format!("{name}.ours")), dir.join(format!("{name}.theirs")));
    let f = file.to_str().unwrap();
    let mut a: Vec<String> = vec!["convert".into()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(["-O".into(), "raw".into(), f.into(), ours.to_str().unwrap().into()]);
    let status = with_timeout(move || qemu_runner::img::main(&a));
    assert_eq!(status, Ok(0), "img convert {extra:?} {f}");
    let mut q = vec!["convert"];
    q.extend_from_slice(extra);
    q.extend(["-O", "raw", f, theirs.to_str().unwrap()]);
    qimg(&q);
    let (x, y) = (std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap());
    assert_eq!(x.len(), y.len(), "size of {f} {extra:?}");
    if let Some(i) = x.iter().zip(&y).position(|(a, b)| a != b) {
        panic!("{f} {extra:?}: first difference at byte {i}");
    }
    let _ = std::fs::remove_file(&ours);
    let _ = std::fs::remove_file(&theirs);
}

/// (start, length, data, zero) runs, adjacent runs with equal flags merged.
pub type Runs = Vec<(u64, u64, bool, bool)>;

fn merge(mut runs: Runs) -> Runs {
    let mut out: Runs = Vec::new();
    for r in runs.drain(..) {
        if r.1 == 0 {
            continue;
        }
        match out.last_mut() {
            Some(l) if l.2 == r.2 && l.3 == r.3 && l.0 + l.1 == r.0 => l.1 += r.1,
            _ => out.push(r),
        }
    }
    out
}

/// `qemu-img map --output=json` as runs.
pub fn qemu_map(file: &Path) -> Runs {
    let out = qimg(&["map", "--output=json", file.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    merge(
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap(), e["data"].as_bool().unwrap(), e["zero"].as_bool().unwrap()))
            .collect(),
    )
}

/// `img map` as runs (with a metadata cache of `cache` bytes, if given).
pub fn our_map(file: &Path, cache: Option<u64>) -> Runs {
    let f = file.to_str().unwrap().to_string();
    let entries = with_timeout(move || {
        let opts = OpenOptions { read_only: true, cache_bytes: cache, ..OpenOptions::default() };
        image::with_image(&f, &opts, qemu_runner::img::map::map).map_err(|e| e.to_string())
    })
    .unwrap()
    .unwrap();
    merge(entries.iter().map(|e| (e.start, e.length, e.data, e.zero)).collect())
}

/// Checks `img map` agrees with `qemu-img map` on start, length, data and zero everywhere.
pub fn check_map(file: &Path) {
    assert_eq!(our_map(file, None), qemu_map(file), "map of {}", file.display());
}

/// Runs `f` on a thread; `Err` if it panics or takes longer than 20 s.
pub fn with_timeout<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(r) => {
            let _ = handle.join();
            Ok(r)
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err("timed out (hang)".into()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("panicked".into()),
    }
}

/// Opens `file` with `img`'s options and reads all of it; the error text, or `Ok` if it reads.
pub fn read_all(file: &Path, opts: OpenOptions) -> Result<(), String> {
    let f = file.to_str().unwrap().to_string();
    with_timeout(move || {
        image::with_image(&f, &opts, |img| {
            let size = img.backend.size();
            let mut buf = vec![0u8; MIB as usize];
            let mut pos = 0;
            while pos < size {
                let n = (size - pos).min(MIB);
                image::block_on(img.backend.read(pos, &mut buf[..n as usize]))
                    .map_err(|e| qemu_runner::img::ImgError::failed(format!("read at {pos}: {e}")))?;
                pos += n;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
    })?
}

/// Asserts that reading `file` fails with a message containing `what` (and neither panics nor
/// hangs).
pub fn assert_refused(file: &Path, what: &str) {
    assert_refused_as(file, None, what)
}

/// [`assert_refused`], opening with format `format` (`None`: probed).
pub fn assert_refused_as(file: &Path, format: Option<&str>, what: &str) {
    let opts = OpenOptions { read_only: true, format: format.map(str::to_string), ..OpenOptions::default() };
    match read_all(file, opts) {
        Ok(()) => panic!("{}: read without error, expected \"{what}\"", file.display()),
        Err(e) => assert!(e.contains(what), "{}: expected \"{what}\", got \"{e}\"", file.display()),
    }
}

/// Writes `bytes` at `offset` of `file`.
pub fn patch(file: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

/// Reads a big-endian u64 at `offset` of `file`.
pub fn be64(file: &Path, offset: u64) -> u64 {
    let b = std::fs::read(file).unwrap();
    u64::from_be_bytes(b[offset as usize..offset as usize + 8].try_into().unwrap())
}

/// Reads a big-endian u32 at `offset` of `file`.
pub fn be32(file: &Path, offset: u64) -> u32 {
    let b = std::fs::read(file).unwrap();
    u32::from_be_bytes(b[offset as usize..offset as usize + 4].try_into().unwrap())
}

/// A copy of `src` named `name` in the same directory.
pub fn copy_as(src: &Path, name: &str) -> PathBuf {
    let dst = src.parent().unwrap().join(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

/// Offset of the header extension of type `kind` (its 8-byte head), if any.
pub fn find_extension(file: &Path, kind: u32) -> Option<u64> {
    let b = std::fs::read(file).unwrap();
    let version = be32(file, 4);
    let mut pos = if version == 2 { 72 } else { be32(file, 100) as u64 } as usize;
    while pos + 8 <= b.len().min(65536) {
        let t = u32::from_be_bytes(b[pos..pos + 4].try_into().unwrap());
        let len = u32::from_be_bytes(b[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if t == 0 {
            return None;
        }
        if t == kind {
            return Some(pos as u64);
        }
        pos += 8 + len.div_ceil(8) * 8;
    }
    None
}

/// Turns the backing-format extension into an unknown one: the image keeps its backing file but
/// no longer names its format (probed), and shows an unknown extension.
pub fn drop_backing_format(file: &Path) {
    if let Some(at) = find_extension(file, 0xe279_2aca) {
        patch(file, at, &0x1234_5678u32.to_be_bytes());
    }
}

/// base.raw <- l1.qcow2 <- ... <- lN.qcow2 (raw can only be the bottom: it has no backing; its
/// bytes come from `seed`), every other link without a backing format (probed), sizes going up
/// and down, each layer writing its own pattern and every fifth some zeroes.
pub fn chain(dir: &Path, depth: usize, seed: u64) -> PathBuf {
    let base = dir.join("base.raw");
    random_raw_disk(&base, 3 * MIB, seed);
    let mut below = ("base.raw".to_string(), "raw");
    let mut top = base;
    for i in 1..=depth {
        let name = format!("l{i}.qcow2");
        let f = dir.join(&name);
        let size = [2 * MIB, 4 * MIB, 3 * MIB + 512][i % 3];
        create(&f, if i % 4 == 0 { "cluster_size=4k" } else { "" }, &size.to_string(), &["-b", &below.0, "-F", below.1]);
        let at = (i as u64 * 97 * KIB) % (2 * MIB);
        qio("qcow2", &f, &[&format!("write -P {} {at} 40k", 0x30 + i)]);
        if i % 5 == 0 {
            qio("qcow2", &f, &[&format!("write -z {} 64k", at + 512 * KIB)]);
        }
        if i % 2 == 0 {
            drop_backing_format(&f);
        }
        below = (name, "qcow2");
        top = f;
    }
    top
}
