//! The real kernel booted in QEMU on raw disks made by `qemu-img`: the device table, `sha256`
//! against the host's `sha256sum`, the demo, and every way a run can go wrong ending in a clear
//! message and the right status — never a hang.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use strata_tests::*;

const MIB: u64 = 1024 * 1024;

/// Two disks: 64 MiB of random bytes (rw) and 8 MiB of other random bytes (ro).
fn two_disks(name: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<Drive>) {
    let dir = scratch(name);
    let (a, b) = (dir.join("a.img"), dir.join("b.img"));
    random_raw_disk(&a, 64 * MIB, 1);
    random_raw_disk(&b, 8 * MIB, 2);
    let drives = vec![drive(&a, "alpha", false), drive(&b, "beta-ro", true)];
    (a, b, drives)
}

fn assert_device_table(machine: Machine, transport: &str) {
    let (_a, _b, drives) = two_disks(&format!("devices-{machine:?}"));
    let r = boot(machine, drives, "devices");
    assert_eq!(r.exit_code, 0, "console:\n{}", r.console);
    let devices = records(&r, "device");
    assert_eq!(devices.len(), 2, "console:\n{}", r.console);
    let by_serial = |s: &str| *devices.iter().find(|d| d["serial"] == s).unwrap_or_else(|| panic!("no {s}:\n{}", r.console));
    assert_eq!(by_serial("alpha")["capacity"], 64 * MIB);
    assert_eq!(by_serial("alpha")["read_only"], false);
    assert_eq!(by_serial("beta-ro")["capacity"], 8 * MIB);
    assert_eq!(by_serial("beta-ro")["read_only"], true);
    assert!(devices.iter().all(|d| d["transport"] == transport));
    assert!(r.console.contains("alpha") && r.console.contains("beta-ro"));
    assert!(r.boot_to_first_io_us.is_some(), "first I/O time reported");
}

#[test]
fn device_table_microvm() {
    assert_device_table(Machine::Microvm, "virtio-mmio");
}

#[test]
fn device_table_pc() {
    assert_device_table(Machine::Pc, "virtio-pci");
}

#[test]
fn device_table_q35() {
    assert_device_table(Machine::Q35, "virtio-pci");
}

fn assert_sha256_matches_host(machine: Machine) {
    let (a, b, drives) = two_disks(&format!("sha256-{machine:?}"));
    for (path, serial) in [(&a, "alpha"), (&b, "beta-ro")] {
        let r = boot(machine, drives.clone(), &format!("sha256 {serial}"));
        assert_eq!(r.exit_code, 0, "console:\n{}", r.console);
        let digest = records(&r, "sha256");
        assert_eq!(digest.len(), 1);
        assert_eq!(digest[0]["digest"], sha256sum(path), "guest and host disagree on {serial}");
        assert_eq!(digest[0]["bytes"], std::fs::metadata(path).unwrap().len());
    }
}

#[test]
fn sha256_matches_host_microvm() {
    assert_sha256_matches_host(Machine::Microvm);
}

#[test]
fn sha256_matches_host_pc() {
    assert_sha256_matches_host(Machine::Pc);
}

#[test]
fn demo_writes_and_verifies() {
    let dir = scratch("demo");
    let disk = dir.join("demo.img");
    raw_disk(&disk, 32 * MIB);
    let r = boot(Machine::Microvm, vec![drive(&disk, "scratch", false)], "demo scratch,size=8M");
    assert_eq!(r.exit_code, 0, "console:\n{}", r.console);
    let demo = records(&r, "demo");
    assert_eq!(demo.len(), 1);
    assert_eq!(demo[0]["verified"], true);
    assert_eq!(demo[0]["bytes"], 8 * MIB);
    // The pattern really reached the host file, and nothing past the demo's range changed.
    let bytes = std::fs::read(&disk).unwrap();
    assert!(bytes[..(8 * MIB) as usize].iter().any(|&b| b != 0));
    assert!(bytes[(8 * MIB) as usize..].iter().all(|&b| b == 0));
}

#[test]
fn demo_refuses_a_read_only_disk() {
    let dir = scratch("demo-ro");
    let disk = dir.join("ro.img");
    raw_disk(&disk, 16 * MIB);
    let r = boot(Machine::Microvm, vec![drive(&disk, "ro", true)], "demo");
    assert_eq!(r.exit_code, 1, "console:\n{}", r.console);
    assert_eq!(r.status, "failed");
    assert!(r.console.contains("read-only"), "console:\n{}", r.console);
    assert!(std::fs::read(&disk).unwrap().iter().all(|&b| b == 0), "a read-only disk was written");
}

#[test]
fn malformed_command_lines_are_usage_errors() {
    let dir = scratch("usage");
    let disk = dir.join("d.img");
    raw_disk(&disk, MIB);
    for (cmd, expect) in [
        ("frobnicate", "unknown workload"),
        ("sha256", "needs options"),
        ("sha256 device=d0,device=d0", "duplicate key"),
        ("sha256 d0,colour=red", "colour"),
        ("demo size=lots", "size"),
        ("devices extra words", "unexpected word"),
        ("sha256 nosuchdisk", "no device with serial"),
    ] {
        let r = boot(Machine::Microvm, vec![drive(&disk, "d0", false)], cmd);
        assert_eq!(r.exit_code, 2, "{cmd:?}: console:\n{}", r.console);
        assert_eq!(r.status, "usage");
        assert!(r.console.contains(expect), "{cmd:?}: expected {expect:?} in console:\n{}", r.console);
    }
}

#[test]
fn a_missing_disk_file_is_reported_before_qemu_starts() {
    let opts = BootOptions {
        drives: vec![drive(std::path::Path::new("/nonexistent/strata/disk.img"), "x", false)],
        cmd: Some("devices".into()),
        quiet: true,
        ..BootOptions::default()
    };
    let err = qemu_runner::boot(&opts).expect_err("a missing file is an error");
    let message = err.to_string();
    assert!(message.contains("/nonexistent/strata/disk.img"), "{message}");
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn a_hung_kernel_is_killed_at_the_timeout() {
    // `-kernel` of something that is not a kernel would fail fast; instead give QEMU a 1 s
    // budget for a workload that takes longer under TCG (hashing 64 MiB).
    let dir = scratch("timeout");
    let disk = dir.join("big.img");
    raw_disk(&disk, 64 * MIB);
    ensure_qemu();
    let opts = BootOptions {
        drives: vec![drive(&disk, "big", false)],
        cmd: Some("sha256 big".into()),
        accel: qemu_runner::Accel::Tcg,
        timeout: std::time::Duration::from_millis(300),
        quiet: true,
        ..BootOptions::default()
    };
    let started = std::time::Instant::now();
    let r = qemu_runner::boot(&opts).expect("runs");
    assert_eq!(r.status, "timeout");
    assert_eq!(r.exit_code, 124);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}
