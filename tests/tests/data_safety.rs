//! Commands that must not lose data however they are misused (issue 11's reproducers): an output
//! that is one of the command's own inputs, an image another process holds, and images whose
//! qcow2 version Strata does not open (probed as qcow2, refused, never written as raw).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use strata_tests::*;

/// Runs `qemu-runner img ARGS` in this process and returns its status.
fn img(args: &[&str]) -> i32 {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    qemu_runner::img::main(&args)
}

/// A 1 MiB qcow2 image full of 0x5a, written by qemu-io.
fn patterned_qcow2(dir: &Path, name: &str) -> PathBuf {
    let f = dir.join(name);
    run_qemu_img(&["create", "-q", "-f", "qcow2", f.to_str().unwrap(), "1M"]);
    let out = Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x5a 0 1M"]).arg(&f).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    f
}

/// `qemu-io FILE` left open in interactive mode: it holds QEMU's write lock until killed.
struct Holder(Child);

impl Holder {
    fn new(file: &Path) -> Self {
        let mut child = Command::new("qemu-io")
            .arg(file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it holds the lock (looking only: a lock of ours would make it fail).
        for _ in 0..200 {
            if write_lock_held(file) {
                return Holder(child);
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("qemu-io never took the lock on {}", file.display());
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether some process holds QEMU's "write" permission byte (101) of `path`, from
/// `/proc/locks` (`N: OFDLCK ADVISORY READ -1 MAJ:MIN:INODE START END`).
fn write_lock_held(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(path).unwrap().ino();
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [_, "OFDLCK", _, _, _, id, start, end] = words[..] else { return false };
        let covers = start.parse::<u64>().is_ok_and(|s| s <= 101) && end.parse::<u64>().is_ok_and(|e| e >= 101);
        id.rsplit(':').next() == Some(&inode.to_string()) && covers
    })
}

#[test]
fn convert_onto_its_own_input_leaves_it_intact() {
    let dir = scratch("safety-convert-self");
    let x = patterned_qcow2(&dir, "x.qcow2");
    let before = sha256sum(&x);
    std::fs::hard_link(&x, dir.join("hard.qcow2")).unwrap();
    std::os::unix::fs::symlink("x.qcow2", dir.join("sym.raw")).unwrap();
    let xs = x.to_str().unwrap();
    for out in [xs.to_string(), dir.join("hard.qcow2").to_str().unwrap().into(), dir.join("sym.raw").to_str().unwrap().into(), format!("{}/./x.qcow2", dir.display())] {
        assert_eq!(img(&["convert", "-O", "raw", xs, &out]), 1, "convert onto {out}");
        assert_eq!(sha256sum(&x), before, "the input survives convert onto {out}");
    }
    run_qemu_img(&["check", "-q", xs]);

    // Onto the backing file of an overlay being converted.
    let top = dir.join("top.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "x.qcow2", "-F", "qcow2", top.to_str().unwrap()]);
    assert_eq!(img(&["convert", "-O", "raw", top.to_str().unwrap(), xs]), 1);
    assert_eq!(sha256sum(&x), before, "the backing file survives");

    // A different output still works, and equals qemu-img's.
    let out = dir.join("out.raw");
    assert_eq!(img(&["convert", "-O", "raw", top.to_str().unwrap(), out.to_str().unwrap()]), 0);
    run_qemu_img(&["compare", "-f", "qcow2", "-F", "raw", top.to_str().unwrap(), out.to_str().unwrap()]);
}

#[test]
fn convert_onto_a_held_file_leaves_it_intact() {
    let dir = scratch("safety-convert-held");
    let src = patterned_qcow2(&dir, "src.qcow2");
    let held = patterned_qcow2(&dir, "held.qcow2");
    let before = sha256sum(&held);
    let holder = Holder::new(&held);
    assert_eq!(img(&["convert", "-O", "raw", src.to_str().unwrap(), held.to_str().unwrap()]), 1);
    assert_eq!(sha256sum(&held), before, "a file another process holds is not truncated");
    drop(holder);
    run_qemu_img(&["check", "-q", held.to_str().unwrap()]);
}

#[test]
fn create_onto_its_backing_file_leaves_it_intact() {
    let dir = scratch("safety-create-self");
    let x = patterned_qcow2(&dir, "x.qcow2");
    let before = sha256sum(&x);
    let xs = x.to_str().unwrap();
    assert_eq!(img(&["create", "-q", "-f", "qcow2", "-b", "x.qcow2", "-F", "qcow2", xs]), 1);
    assert_eq!(sha256sum(&x), before);
    let holder = Holder::new(&x);
    assert_eq!(img(&["create", "-q", "-f", "raw", xs, "1M"]), 1, "a held file is not recreated");
    assert_eq!(sha256sum(&x), before);
    drop(holder);
}

#[test]
fn replay_onto_its_base_leaves_it_intact() {
    let dir = scratch("safety-replay-self");
    let base = patterned_qcow2(&dir, "base.qcow2");
    let log = dir.join("crash.log");
    std::fs::write(&log, b"STRCRSH1").unwrap();
    let before = sha256sum(&base);
    let (b, l) = (base.to_str().unwrap(), log.to_str().unwrap());
    assert_eq!(img(&["replay", l, b, b, "--cut", "0"]), 1);
    assert_eq!(img(&["replay", l, b, l, "--cut", "0"]), 1);
    assert_eq!(sha256sum(&base), before);
}

#[test]
fn boot_never_grows_an_image_another_process_holds() {
    let dir = scratch("safety-boot-held");
    let x = patterned_qcow2(&dir, "x.qcow2");
    let (len, before) = (std::fs::metadata(&x).unwrap().len(), sha256sum(&x));
    let holder = Holder::new(&x);
    let opts = BootOptions {
        drives: vec![drive(&x, "s", false)],
        cmd: Some("io s -c write,0,4k".into()),
        accel: qemu_runner::Accel::Tcg,
        quiet: true,
        ..BootOptions::default()
    };
    let err = qemu_runner::boot(&opts).expect_err("a held image is refused before QEMU starts");
    assert!(err.to_string().contains("lock"), "{err}");
    assert_eq!(std::fs::metadata(&x).unwrap().len(), len, "not extended by its headroom");
    assert_eq!(sha256sum(&x), before);
    drop(holder);
}

/// Sets the version field (bytes 4..8) of a copy of `src`.
fn with_version(src: &Path, dir: &Path, version: u32) -> PathBuf {
    let f = dir.join(format!("v{version}.qcow2"));
    let mut bytes = std::fs::read(src).unwrap();
    bytes[4..8].copy_from_slice(&version.to_be_bytes());
    std::fs::write(&f, bytes).unwrap();
    f
}

#[test]
fn unknown_qcow2_versions_are_refused_never_written_as_raw() {
    let dir = scratch("safety-version");
    let x = patterned_qcow2(&dir, "x.qcow2");
    for version in [0, 1, 4, 0xffff_ffff] {
        let f = with_version(&x, &dir, version);
        let before = sha256sum(&f);
        let fs = f.to_str().unwrap();
        assert_eq!(img(&["io", "-c", "write -P 0xee 0 512", fs]), 1, "version {version}: written");
        assert_eq!(img(&["info", fs]), 1, "version {version}: opened");
        assert_eq!(img(&["convert", "-O", "raw", fs, dir.join("out.raw").to_str().unwrap()]), 1, "version {version}: read");
        assert_eq!(sha256sum(&f), before, "version {version}: the header is untouched");
        // Named as raw, it is raw: the user asked for it.
        assert_eq!(img(&["io", "-f", "raw", "-c", "read 0 512", fs]), 0, "version {version}: -f raw");
    }
}

/// A raw disk whose first sector holds a qcow2 header naming a backing file (as a guest could
/// have written it): the drive's `format=raw` makes it raw on both sides, header included.
#[test]
fn a_drive_named_raw_is_raw_whatever_its_first_bytes_say() {
    let dir = scratch("safety-format-raw");
    patterned_qcow2(&dir, "secret.qcow2");
    let disk = dir.join("disk.raw");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "secret.qcow2", "-F", "qcow2", disk.to_str().unwrap(), "1M"]);
    // Whole sectors, as a virtio disk shows a file.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.set_len(f.metadata().unwrap().len().next_multiple_of(512)).unwrap();
    drop(f);
    let want = sha256sum(&disk);
    let len = std::fs::metadata(&disk).unwrap().len();
    let raw = Drive { format: Some(qemu_runner::drives::Format::Raw), ..drive(&disk, "d", false) };
    let r = boot(Machine::Microvm, vec![raw.clone()], "sha256 d");
    assert_eq!(records(&r, "sha256")[0]["digest"], want, "read as raw, not through the header");
    assert!(r.warnings.iter().all(|w| !w.contains("probing guessed raw")), "{:?}", r.warnings);
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), len, "a raw drive gets no qcow2 headroom");
    // Probed, the same file is qcow2 and brings its backing file.
    let r = boot(Machine::Microvm, vec![drive(&disk, "d", true)], "sha256 d");
    assert_ne!(records(&r, "sha256")[0]["digest"], want);
    // format=qcow2 on a file that is not qcow2 is refused before QEMU starts.
    let plain = dir.join("plain.raw");
    raw_disk(&plain, 1 << 20);
    let q = Drive { format: Some(qemu_runner::drives::Format::Qcow2), ..drive(&plain, "p", true) };
    let opts = BootOptions { drives: vec![q], cmd: Some("sha256 p".into()), quiet: true, ..BootOptions::default() };
    assert!(matches!(qemu_runner::boot(&opts), Err(qemu_runner::RunnerError::Usage(_))));
}

/// QEMU's warning for a writable drive whose format was probed as raw; none when it is named.
#[test]
fn a_writable_probed_raw_drive_is_warned_about() {
    let dir = scratch("safety-probe-warning");
    let disk = dir.join("disk.raw");
    raw_disk(&disk, 1 << 20);
    let r = boot(Machine::Microvm, vec![drive(&disk, "d", false)], "sha256 d");
    assert!(r.warnings.iter().any(|w| w.contains("probing guessed raw")), "{:?}", r.warnings);
    let named = Drive { format: Some(qemu_runner::drives::Format::Raw), ..drive(&disk, "d", false) };
    let r = boot(Machine::Microvm, vec![named], "sha256 d");
    assert!(r.warnings.iter().all(|w| !w.contains("probing guessed raw")), "{:?}", r.warnings);
    let r = boot(Machine::Microvm, vec![drive(&disk, "d", true)], "sha256 d");
    assert!(r.warnings.iter().all(|w| !w.contains("probing guessed raw")), "read-only: {:?}", r.warnings);
}

#[test]
fn one_file_on_two_drives_and_too_much_memory_are_usage_errors() {
    let dir = scratch("safety-usage");
    let disk = dir.join("disk.raw");
    raw_disk(&disk, 1 << 20);
    let usage = |opts: BootOptions| matches!(qemu_runner::boot(&opts), Err(qemu_runner::RunnerError::Usage(_)));
    let two = |ro_a, ro_b| BootOptions { drives: vec![drive(&disk, "a", ro_a), drive(&disk, "b", ro_b)], quiet: true, ..BootOptions::default() };
    assert!(usage(two(false, true)));
    assert!(usage(two(false, false)));
    assert!(!usage(two(true, true)), "two readers share a file");
    assert!(usage(BootOptions { memory_mib: 4_294_967_295, quiet: true, ..BootOptions::default() }));
}

/// A drive's write log is emptied before the boot: it must never be a file a drive reads.
#[test]
fn a_write_log_is_never_a_drive_file() {
    let dir = scratch("safety-log-self");
    let x = patterned_qcow2(&dir, "x.qcow2");
    let before = sha256sum(&x);
    std::fs::hard_link(&x, dir.join("alias.log")).unwrap();
    for log in [x.clone(), dir.join("alias.log")] {
        let opts = BootOptions {
            drives: vec![Drive { log: Some(log.clone()), ..drive(&x, "s", false) }],
            cmd: Some("sha256 s".into()),
            quiet: true,
            ..BootOptions::default()
        };
        assert!(matches!(qemu_runner::boot(&opts), Err(qemu_runner::RunnerError::Usage(_))), "log={}", log.display());
        assert_eq!(sha256sum(&x), before, "log={}", log.display());
    }
}
