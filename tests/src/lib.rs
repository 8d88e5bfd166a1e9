//! Helpers shared by the integration tests: scratch directories, disks made by `qemu-img`, the
//! host-side oracles (`sha256sum`), and booting the kernel through `qemu-runner`.
//!
//! Tests find `qemu-img` through `QEMU_IMG` (default: PATH) and pin the accelerator to TCG (on
//! nested KVM every VM exit costs tens of microseconds).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: test helpers; a failure is a test failure

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

pub use qemu_runner::{BootOptions, BootResult, Drive, Machine};

/// The `qemu-img` to use (`QEMU_IMG`, default from PATH).
pub fn qemu_img() -> String {
    std::env::var("QEMU_IMG").unwrap_or_else(|_| "qemu-img".into())
}

/// Makes sure QEMU (system emulator and tools) is installed, once per test process.
pub fn ensure_qemu() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| qemu_runner::ensure_qemu(true).expect("QEMU is needed for the integration tests"));
}

/// A fresh directory for one test under the workspace's target dir, named `NAME-PID`.
///
/// A failed test's directory is kept (its images are the evidence); those of tests that passed
/// are removed when the test process exits (see [`scratch_cleanup`]), so a whole run does not
/// fill the disk of a machine with little room. `STRATA_KEEP_SCRATCH=1` keeps them all. The
/// first call in a test process also removes the kept directories of ended processes last
/// changed more than [`KEEP_SCRATCH`] ago.
pub fn scratch(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/strata/tests");
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        remove_stale(&root);
        scratch_cleanup::install();
    });
    let dir = root.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    scratch_cleanup::register(&dir);
    dir
}

pub mod scratch_cleanup;

pub mod arch_guest;

/// How long the scratch directory of an ended test process is kept for inspection.
pub const KEEP_SCRATCH: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes the scratch directories under `root` of processes (the `-PID` suffix) that have ended
/// and that were last changed more than [`KEEP_SCRATCH`] ago.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.rsplit('-').next()).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > KEEP_SCRATCH);
        if !alive && old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Runs `qemu-img ARGS`, panicking with its output on failure.
pub fn run_qemu_img(args: &[&str]) {
    ensure_qemu();
    let out = Command::new(qemu_img()).args(args).output().expect("qemu-img runs");
    assert!(out.status.success(), "qemu-img {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Creates a raw disk of `size` bytes with `qemu-img create`.
pub fn raw_disk(path: &Path, size: u64) {
    run_qemu_img(&["create", "-q", "-f", "raw", path.to_str().unwrap(), &size.to_string()]);
}

/// Creates a raw disk with `qemu-img` and fills it with reproducible pseudo-random bytes.
pub fn random_raw_disk(path: &Path, size: u64, seed: u64) {
    raw_disk(path, size);
    let mut state = seed | 1;
    let mut bytes = vec![0u8; size as usize];
    for word in bytes.chunks_mut(8) {
        // xorshift64*: fast and good enough to make every sector distinct.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
    std::fs::write(path, bytes).unwrap();
}

/// The host's `sha256sum` of a file, as lowercase hex.
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A drive for `qemu-runner`.
pub fn drive(file: &Path, serial: &str, read_only: bool) -> Drive {
    Drive { read_only, ..Drive::new(file, serial) }
}

/// Boots the kernel on `machine` under TCG with `drives` and `cmd`.
pub fn boot(machine: Machine, drives: Vec<Drive>, cmd: &str) -> BootResult {
    ensure_qemu();
    let opts = BootOptions {
        drives,
        cmd: Some(cmd.into()),
        machine,
        accel: qemu_runner::Accel::Tcg,
        timeout: std::time::Duration::from_secs(120),
        quiet: true,
        ..BootOptions::default()
    };
    qemu_runner::boot(&opts).expect("the runner starts QEMU")
}

/// The records of one type the kernel emitted.
pub fn records<'r>(result: &'r BootResult, kind: &str) -> Vec<&'r serde_json::Value> {
    result.records.iter().filter(|r| r["type"] == kind).collect()
}
