//! Writable qcow2 images in the guest: the runner extends a writable qcow2 drive's file by its
//! `headroom=` before the boot and cuts it back to the image's end afterwards; workloads that
//! write close the image cleanly, so `qemu-img check` finds neither leaks nor corruption; an
//! image that outgrows its room fails cleanly (exit 1, "out of room"); workloads that only read
//! open read-only, so a dirty image still hashes and is not touched, and a writer repairs it
//! first (as QEMU's open does).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::Path;
use std::process::Command;

use strata_tests::{boot, drive, records, scratch, sha256sum, Drive, Machine};
use util::*;

/// `qemu-img check --output=json` of `file` (exit 0 clean, 2 corruption, 3 leaks).
fn check(file: &Path) -> serde_json::Value {
    ensure_qemu();
    let out = Command::new(qemu_img()).args(["check", "--output=json", file.to_str().unwrap()]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("qemu-img check {}: {e}: {}", file.display(), String::from_utf8_lossy(&out.stderr)))
}

/// Asserts `file` checks clean (no corruption, no leaks, no check errors) and that the runner
/// cut it back to the image's end (or its size before the boot, `before`, if that is larger).
fn assert_clean_and_shrunk(file: &Path, before: u64) {
    let c = check(file);
    for key in ["corruptions", "leaks", "check-errors"] {
        assert_eq!(c[key].as_u64().unwrap_or(0), 0, "{key} in {}: {c}", file.display());
    }
    let len = std::fs::metadata(file).unwrap().len();
    let end = c["image-end-offset"].as_u64().unwrap();
    assert_eq!(len, end.max(before), "{}: file length vs image end {end} (before {before})", file.display());
}

/// A writable drive `top` on `file` with `headroom` bytes (`None`: the default).
fn top(file: &Path, headroom: Option<u64>) -> Drive {
    Drive { headroom, ..drive(file, "top", false) }
}

fn len(file: &Path) -> u64 {
    std::fs::metadata(file).unwrap().len()
}

#[test]
fn randwrite_into_an_empty_overlay_over_a_qcow2_base() {
    let dir = scratch("guest-write-overlay");
    let base = dir.join("base.qcow2");
    create(&base, "", &(16 * MIB).to_string(), &[]);
    qio("qcow2", &base, &["write -P 0x11 0 16M", "write -P 0x22 5M 1M"]);
    let t = dir.join("top.qcow2");
    create(&t, "", &(16 * MIB).to_string(), &["-b", "base.qcow2", "-F", "qcow2"]);
    let before = len(&t);
    let r = boot(Machine::Microvm, vec![top(&t, None)], "bench top --rw randwrite --bs 4k --qd 16 --count 2000");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    let bench = records(&r, "bench");
    assert_eq!(bench[0]["ios"], 2000, "{}", r.console);
    eprintln!("randwrite 4k qd16 on a qcow2 overlay: {} IOPS; file {} -> {} bytes", bench[0]["iops"], before, len(&t));
    assert!(len(&t) > before + MIB, "the overlay grew: {} bytes", len(&t));
    assert_clean_and_shrunk(&t, before);
    // The guest reads back what the host reads (a read-only open: the file is not touched).
    let sum = sha256sum(&t);
    let r = boot(Machine::Microvm, vec![top(&t, None)], "sha256 top");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    assert_eq!(records(&r, "sha256")[0]["digest"], host_digest(&t));
    assert_eq!(sha256sum(&t), sum, "sha256 changed the image file");
}

#[test]
fn demo_on_a_qcow2() {
    let dir = scratch("guest-write-demo");
    let f = dir.join("d.qcow2");
    create(&f, "", &(32 * MIB).to_string(), &[]);
    let before = len(&f);
    let r = boot(Machine::Microvm, vec![top(&f, None)], "demo top");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    assert_eq!(records(&r, "demo")[0]["verified"], true, "{}", r.console);
    assert!(len(&f) >= before + 16 * MIB, "16 MiB written: {} bytes", len(&f));
    assert_clean_and_shrunk(&f, before);
    // The image file is a plain qcow2 again: QEMU opens it read-write.
    qio("qcow2", &f, &["read 0 4k"]);
}

/// The default headroom lets a guest write an image full, also past the old fixed 256 MiB.
#[test]
fn the_default_headroom_fits_an_image_written_full() {
    let dir = scratch("guest-write-full");
    let f = dir.join("full.qcow2");
    create(&f, "", &(320 * MIB).to_string(), &[]);
    let before = len(&f);
    let r = boot(Machine::Microvm, vec![top(&f, None)], "bench top --rw write --bs 1M --qd 4 --count 320");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    assert_eq!(records(&r, "bench")[0]["ios"], 320, "{}", r.console);
    assert!(len(&f) >= before + 320 * MIB, "the whole image was written: {} bytes", len(&f));
    assert_clean_and_shrunk(&f, before);
}

#[test]
fn an_image_that_outgrows_its_headroom_fails_cleanly() {
    let dir = scratch("guest-write-nospace");
    let f = dir.join("n.qcow2");
    create(&f, "", &(64 * MIB).to_string(), &[]);
    let before = len(&f);
    // 8 MiB of writes into 1 MiB of room.
    let r = boot(Machine::Microvm, vec![top(&f, Some(MIB))], "bench top --rw write --bs 64k --qd 4 --count 128");
    assert_eq!(r.exit_code, 1, "{}\n{}", r.summary(), r.console);
    assert!(r.console.contains("out of room on the device holding the image"), "{}", r.console);
    assert!(r.message.as_deref().unwrap_or("").contains("out of room"), "{:?}", r.message);
    // Closed cleanly after the failure: no corruption and no leaks.
    assert_clean_and_shrunk(&f, before);
    assert!(len(&f) <= before + MIB, "{} bytes", len(&f));
    // headroom=0: no room at all.
    let r = boot(Machine::Microvm, vec![top(&f, Some(0))], "bench top --rw write --bs 64k --qd 4 --count 128");
    assert_eq!(r.exit_code, 1, "{}\n{}", r.summary(), r.console);
    assert_clean_and_shrunk(&f, before);
}

#[test]
fn a_dirty_image_hashes_read_only_and_a_writer_repairs_it() {
    let dir = scratch("guest-write-dirty");
    let f = dir.join("lazy.qcow2");
    create(&f, "lazy_refcounts=on", &(4 * MIB).to_string(), &[]);
    // qemu-io aborts without closing: the dirty bit stays set.
    ensure_qemu();
    let _ = Command::new(qemu_io_bin()).args(["-f", "qcow2", "-c", "write -P 0x5a 0 1M", "-c", "abort", f.to_str().unwrap()]).output().unwrap();
    assert_eq!(be64(&f, 72) & 1, 1, "the image is dirty");
    let sum = sha256sum(&f);
    let r = boot(Machine::Microvm, vec![top(&f, None)], "sha256 top");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    assert_eq!(records(&r, "sha256")[0]["digest"], host_digest(&f));
    assert_eq!(sha256sum(&f), sum, "a read-only open changed the file");
    // bench in a read mode opens read-only too.
    let r = boot(Machine::Microvm, vec![top(&f, None)], "bench top --rw randread --count 100");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    // A writer's read-write open repairs the refcounts first and clears the bit (as QEMU's
    // open does): qemu-img check finds the image clean afterwards.
    let r = boot(Machine::Microvm, vec![top(&f, None)], "demo top");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    assert_eq!(be64(&f, 72) & 1, 0, "the repair cleared the dirty bit");
    assert!(qimg_ok(&["check", f.to_str().unwrap()]), "{}", qimg(&["check", f.to_str().unwrap()]));
}

#[test]
fn guest_io_writes_what_qemu_io_reads() {
    let dir = scratch("guest-write-io");
    let base = dir.join("base.qcow2");
    create(&base, "", &(8 * MIB).to_string(), &[]);
    qio("qcow2", &base, &["write -P 0x11 0 8M"]);
    let t = dir.join("top.qcow2");
    create(&t, "", &(8 * MIB).to_string(), &["-b", "base.qcow2", "-F", "qcow2"]);
    let before = len(&t);
    let cmd = "io top -c write,-P,0xaa,0,64k -c write,-P,0xbb,1M,4k -c write,-P,0xcc,3146240,3k -c write,-z,5M,128k -c flush -c read,-P,0xaa,0,64k";
    let r = boot(Machine::Microvm, vec![top(&t, None)], cmd);
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    assert_clean_and_shrunk(&t, before);
    qio(
        "qcow2",
        &t,
        &[
            "read -P 0xaa 0 64k",
            "read -P 0x11 64k 960k",
            "read -P 0xbb 1M 4k",
            "read -P 0x11 1028k 2044k",
            "read -P 0xcc 3146240 3k",
            "read -P 0x11 3149312 2044k",
            "read -P 0 5M 128k",
            "read -P 0x11 5248k 2944k",
        ],
    );
}

#[test]
fn writes_into_the_headroom_skip_zeros_and_read_back_exactly() {
    // The runner passes `--zeroed=top=<old length>`: clusters allocated in the headroom get no
    // zero copy-on-write (their bytes are zeros already); what was not written must read as
    // zeros all the same, with and without extended L2.
    for opts in ["cluster_size=64k", "cluster_size=64k,extended_l2=on"] {
        let dir = scratch(&format!("guest-write-zeroed-{}", opts.len()));
        let t = dir.join("top.qcow2");
        create(&t, opts, &(8 * MIB).to_string(), &[]);
        let before = len(&t);
        let cmd = "io top -c write,-P,0x5a,4096,4096 -c write,-P,0x5b,200000,1000 -c write,-P,0x5c,1M,64k -c flush";
        let r = boot(Machine::Microvm, vec![top(&t, None)], cmd);
        assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
        assert!(r.console.contains("--zeroed=top="), "the runner passes the zeroed tail: {}", r.console);
        assert_clean_and_shrunk(&t, before);
        qio(
            "qcow2",
            &t,
            &[
                "read -P 0 0 4096",
                "read -P 0x5a 4096 4096",
                "read -P 0 8192 191808",
                "read -P 0x5b 200000 1000",
                "read -P 0 201000 847576",
                "read -P 0x5c 1M 64k",
                "read -P 0 1088k 7104k",
            ],
        );
    }
}

#[test]
fn killing_qemu_mid_stress_leaves_no_corruption() {
    // A smoke test, not a crash test (the host page cache keeps what QEMU wrote): the image was
    // not closed, so leaks are allowed; corruption is not.
    let dir = scratch("guest-write-kill");
    let f = dir.join("s.qcow2");
    create(&f, "cluster_size=4k", &(16 * MIB).to_string(), &[]);
    let before = len(&f);
    let opts = qemu_runner::BootOptions {
        drives: vec![top(&f, None)],
        cmd: Some("stress top --seed 7 --ops 10000000 --qd 16 --max-len 64k".into()),
        accel: qemu_runner::Accel::Tcg,
        timeout: std::time::Duration::from_secs(4),
        quiet: true,
        ..qemu_runner::BootOptions::default()
    };
    ensure_qemu();
    let r = qemu_runner::boot(&opts).unwrap();
    assert_eq!(r.exit_code, 124, "the run outlasts the timeout: {}\n{}", r.summary(), r.console.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
    assert!(!records(&r, "stress_op").is_empty(), "stress ran: {}", r.console);
    let c = check(&f);
    assert_eq!(c["corruptions"].as_u64().unwrap_or(0), 0, "{c}");
    assert_eq!(c["check-errors"].as_u64().unwrap_or(0), 0, "{c}");
    eprintln!("killed mid-stress after {} ops: leaks {}, file {} -> {} bytes", records(&r, "stress_op").len(), c["leaks"], before, len(&f));
    assert!(len(&f) >= c["image-end-offset"].as_u64().unwrap(), "cut below the image's end: {c}");
    assert!(len(&f) < before + 200 * MIB, "headroom given back: {} bytes", len(&f));
}
