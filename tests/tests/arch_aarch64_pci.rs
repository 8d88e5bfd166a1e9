//! The kernel on aarch64 `virt` with its disks as virtio-blk-pci (`qemu-runner boot --arch
//! aarch64 --transport pci`), under TCG. Nothing assigns BARs under `-kernel`: the board code
//! reads the generic ECAM host bridge from the device tree (QEMU 7.2 and 10.x place its ECAM
//! above 4 GiB by default) and places every BAR in the bridge's 32-bit window, so these also
//! check the allocator with one device (raw), four (a 3-deep qcow2 chain arrives as one device
//! per file) and 24 (the kernel's device limit).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::collections::BTreeSet;

use qemu_runner::{Accel, Transport};
use strata_tests::{drive, ensure_qemu, random_raw_disk, records, scratch, sha256sum, BootOptions, BootResult, Drive, Machine};
use util::{chain, host_digest, MIB};

/// Boots `virt` with `drives` on virtio-pci.
fn boot_pci(drives: Vec<Drive>, cmd: &str) -> BootResult {
    ensure_qemu();
    let opts = BootOptions {
        drives,
        cmd: Some(cmd.into()),
        machine: Machine::Virt,
        transport: Some(Transport::Pci),
        accel: Accel::Tcg,
        timeout: std::time::Duration::from_secs(120),
        quiet: true,
        ..BootOptions::default()
    };
    let r = qemu_runner::boot(&opts).expect("the runner starts QEMU");
    assert_eq!(r.transport, Transport::Pci);
    let pci = r.qemu_command.iter().filter(|a| a.starts_with("virtio-blk-pci,")).count();
    assert!(pci > 0 && !r.qemu_command.iter().any(|a| a.starts_with("virtio-blk-device")), "{:?}", r.qemu_command);
    r
}

#[test]
fn sha256_of_a_raw_disk_over_pci_matches_the_host() {
    let dir = scratch("aarch64-pci-raw");
    let disk = dir.join("d.raw");
    random_raw_disk(&disk, 8 * MIB, 21);
    let r = boot_pci(vec![drive(&disk, "d", true)], "sha256 d");
    assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
    let digest = records(&r, "sha256");
    assert_eq!(digest.len(), 1, "{}", r.console);
    assert_eq!(digest[0]["digest"], sha256sum(&disk), "guest and host disagree");
    assert_eq!(digest[0]["bytes"], 8 * MIB);
    assert!(r.boot_to_first_io_us.is_some(), "first I/O time reported");
}

#[test]
fn sha256_of_a_qcow2_chain_over_pci_matches_qemu_img_convert() {
    let dir = scratch("aarch64-pci-chain");
    let top = chain(&dir, 3, 7);
    let r = boot_pci(vec![drive(&top, "top", false)], "sha256 top");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    let digest = records(&r, "sha256");
    assert_eq!(digest.len(), 1, "{}", r.console);
    assert_eq!(digest[0]["digest"], host_digest(&top), "guest and host disagree on the chain");
}

#[test]
fn twenty_four_disks_each_get_bars_and_answer() {
    let dir = scratch("aarch64-pci-many");
    let mut drives = Vec::new();
    for i in 0..24 {
        let disk = dir.join(format!("d{i}.raw"));
        random_raw_disk(&disk, MIB + i * 4096, 100 + i);
        drives.push(drive(&disk, &format!("d{i:02}"), true));
    }
    let last = dir.join("d23.raw");
    let r = boot_pci(drives, "devices");
    assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
    let devices = records(&r, "device");
    assert_eq!(devices.len(), 24, "{}", r.console);
    let mut locations = BTreeSet::new();
    for (i, d) in devices.iter().enumerate() {
        assert_eq!(d["transport"], "virtio-pci", "{d}");
        assert_eq!(d["serial"], format!("d{i:02}"), "{d}");
        assert_eq!(d["capacity"], MIB + i as u64 * 4096, "{d}: the device's config space read back wrong");
        locations.insert(d["location"].as_str().unwrap().to_string());
    }
    assert_eq!(locations.len(), 24, "{locations:?}");
    // And the last one placed moves data.
    let mut drives = Vec::new();
    for i in 0..24 {
        drives.push(drive(&dir.join(format!("d{i}.raw")), &format!("d{i:02}"), true));
    }
    let r = boot_pci(drives, "sha256 d23");
    assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
    assert_eq!(records(&r, "sha256")[0]["digest"], sha256sum(&last));
}

#[test]
fn bench_over_pci_holds_32_requests() {
    let r = boot_pci(vec![Drive::null_co(1 << 30, "null0")], "bench null0 --rw randread --bs 4k --qd 32 --count 5000");
    assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
    let b = records(&r, "bench");
    assert_eq!(b.len(), 1, "{}", r.console);
    let b = b[0];
    assert_eq!(b["ios"], 5000);
    assert!(b["iops"].as_u64().unwrap() > 0, "{b}");
    assert!(b["max_in_flight"].as_u64().unwrap() >= 32, "the device never held 32 requests: {b}");
}

#[test]
fn pci_is_refused_where_the_machine_has_none() {
    let opts = BootOptions { machine: Machine::Microvm, transport: Some(Transport::Pci), quiet: true, ..BootOptions::default() };
    assert!(matches!(qemu_runner::boot(&opts), Err(qemu_runner::RunnerError::Usage(_))));
}
