//! qcow2 images in the guest: `qemu-runner boot --drive file=top.qcow2` resolves the chain and
//! data files on the host, attaches every file raw with a serial (`S`, `S.1`, ...) and maps the
//! names the images write to those serials on the kernel command line; the guest's `sha256` of
//! the top must equal the host's `sha256sum` of `qemu-img convert -O raw` of the same image.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::Path;

use strata_tests::{boot, drive, random_raw_disk, records, scratch, sha256sum, BootOptions, Machine};
use util::*;

/// Boots `sha256 top` with `top` as the drive `top` and checks the guest's digest.
fn check_guest(machine: Machine, top: &Path) {
    let r = boot(machine, vec![drive(top, "top", false)], "sha256 top");
    assert!(r.is_ok(), "{}: {}\n{}", top.display(), r.summary(), r.console);
    let digest = records(&r, "sha256");
    assert_eq!(digest.len(), 1, "{}", r.console);
    assert_eq!(digest[0]["digest"], host_digest(top), "guest and host disagree on {}", top.display());
}

#[test]
fn qcow2_with_data_and_a_data_file() {
    let dir = scratch("guest-qcow2");
    let f = dir.join("a.qcow2");
    create(&f, "", &(4 * MIB).to_string(), &[]);
    qio("qcow2", &f, &["write -P 0x5a 0 64k", "write -P 0xa5 1M 4k", "write -z 2M 64k", "write -P 7 3M 100k"]);
    check_guest(Machine::Microvm, &f);
    let g = dir.join("ext.qcow2");
    create(&g, &format!("data_file={}", dir.join("ext.data").display()), &(2 * MIB).to_string(), &[]);
    qio("qcow2", &g, &["write -P 0x11 512k 128k"]);
    check_guest(Machine::Microvm, &g);
}

#[test]
fn three_deep_chain_microvm_and_pc() {
    let dir = scratch("guest-chain3");
    let top = chain(&dir, 2, 7);
    check_guest(Machine::Microvm, &top);
    check_guest(Machine::Pc, &top);
}

#[test]
fn compressed_image() {
    let dir = scratch("guest-compressed");
    let raw = dir.join("src.raw");
    random_raw_disk(&raw, 2 * MIB, 3);
    let c = dir.join("c.qcow2");
    qimg(&["convert", "-c", "-O", "qcow2", raw.to_str().unwrap(), c.to_str().unwrap()]);
    check_guest(Machine::Microvm, &c);
}

#[test]
fn sixteen_deep_chain() {
    let dir = scratch("guest-chain16");
    let top = chain(&dir, 16, 7);
    check_guest(Machine::Microvm, &top);
}

#[test]
fn a_missing_backing_file_fails_before_qemu_starts() {
    let dir = scratch("guest-missing");
    let top = dir.join("top.qcow2");
    create(&top, "", &MIB.to_string(), &["-b", "gone.raw", "-F", "raw", "-u"]);
    let opts = BootOptions { drives: vec![drive(&top, "top", false)], cmd: Some("sha256 top".into()), quiet: true, ..BootOptions::default() };
    let err = qemu_runner::boot(&opts).expect_err("a missing backing file is an error");
    assert!(err.to_string().contains("gone.raw"), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn a_name_the_guest_cannot_resolve_exits_2() {
    let dir = scratch("guest-unresolved");
    let f = dir.join("a.qcow2");
    create(&f, "", &MIB.to_string(), &[]);
    let r = boot(Machine::Microvm, vec![drive(&f, "top", false)], "sha256 driver=qcow2,file=top,backing=elsewhere.img");
    assert_eq!(r.exit_code, 2, "{}", r.console);
    assert!(r.console.contains("backing file \"elsewhere.img\""), "{}", r.console);
}

#[test]
fn a_chain_longer_than_the_slots_is_packed_and_too_many_drives_are_a_runner_error() {
    // A 20-deep chain (21 files) and four raw disks: 25 devices, more than microvm's 24 slots,
    // so the chain's files go into one pack disk (see qcow2_guest_deep.rs) and the chain reads.
    let dir = scratch("guest-chain20");
    let top = chain(&dir, 20, 7);
    let mut drives = vec![drive(&top, "top", false)];
    for i in 0..4 {
        let f = dir.join(format!("r{i}.raw"));
        random_raw_disk(&f, 64 * KIB, i);
        drives.push(drive(&f, &format!("r{i}"), false));
    }
    let r = boot(Machine::Microvm, drives, "sha256 top");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    assert!(r.cmdline.contains("=top.p@"), "the chain is packed: {}", r.cmdline);
    assert_eq!(records(&r, "sha256")[0]["digest"], host_digest(&top));
    // 24 drives of their own and a qcow2 with a backing file: 26 even packed.
    let mut drives = vec![drive(&dir.join("l1.qcow2"), "top", false)];
    for i in 0..24 {
        let f = dir.join(format!("r{i}.raw"));
        random_raw_disk(&f, 64 * KIB, i);
        drives.push(drive(&f, &format!("r{i}"), false));
    }
    let opts = BootOptions { drives, cmd: Some("devices".into()), quiet: true, ..BootOptions::default() };
    let err = qemu_runner::boot(&opts).expect_err("too many drives");
    assert!(err.to_string().contains("at most 24"), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn one_name_for_two_files_is_a_runner_error() {
    // Two chains whose images write the same names for different files: the guest resolves
    // by name only, so the runner refuses.
    let (one, two) = (scratch("guest-chain2a"), scratch("guest-chain2b"));
    let (a, b) = (chain(&one, 2, 7), chain(&two, 2, 7));
    let opts = BootOptions { drives: vec![drive(&a, "a", false), drive(&b, "b", false)], cmd: Some("devices".into()), quiet: true, ..BootOptions::default() };
    let err = qemu_runner::boot(&opts).expect_err("ambiguous names");
    assert!(err.to_string().contains("two different files"), "{err}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn map_flags_on_the_kernel_command_line() {
    let dir = scratch("guest-map");
    let f = dir.join("d.raw");
    random_raw_disk(&f, 256 * KIB, 5);
    // A name (with '/' and '.') mapped to a serial opens that device.
    let r = boot(Machine::Microvm, vec![drive(&f, "d0", false)], "sha256 dir/d.raw --map dir/d.raw=d0");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    assert_eq!(records(&r, "sha256")[0]["digest"], sha256sum(&f));
    for (cmd, expect) in [
        ("sha256 d0 --map nothing", "NAME=SERIAL"),
        ("sha256 d0 --map a=d0 --map a=d0", "mapped twice"),
        ("sha256 x --map x=nosuch", "mapped to serial \"nosuch\""),
    ] {
        let r = boot(Machine::Microvm, vec![drive(&f, "d0", false)], cmd);
        assert_eq!(r.exit_code, 2, "{cmd:?}: {}", r.console);
        assert!(r.console.contains(expect), "{cmd:?}: expected {expect:?} in:\n{}", r.console);
    }
}
