//! The kernel on riscv64 `virt` under TCG and OpenSBI (`qemu-runner boot --arch riscv64`):
//! `sha256` of a raw disk and of a qcow2 chain against the host (`sha256sum` of `qemu-img
//! convert -O raw`), `io` with the host reading back what the guest wrote, `bench` holding 32
//! requests, and the exit status, defmt log and boot-to-first-I/O the runner reads the same way
//! as on x86 and aarch64.
//!
//! The runner installs `qemu-system-riscv64` (Debian `qemu-system-misc`, at qemu-utils'
//! release) and the `riscv64gc-unknown-none-elf` target through `scripts/setup.sh` when they
//! are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::process::Command;

use strata_tests::{boot, drive, random_raw_disk, records, scratch, sha256sum, Drive, Machine};
use util::{chain, host_digest, qemu_io_bin, MIB};

#[test]
fn sha256_of_a_raw_disk_matches_the_host() {
    let dir = scratch("riscv64-raw");
    let disk = dir.join("d.raw");
    random_raw_disk(&disk, 8 * MIB, 17);
    let r = boot(Machine::RiscvVirt, vec![drive(&disk, "d", true)], "sha256 d");
    assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
    assert_eq!(r.machine, Machine::RiscvVirt);
    let digest = records(&r, "sha256");
    assert_eq!(digest.len(), 1, "{}", r.console);
    assert_eq!(digest[0]["digest"], sha256sum(&disk), "guest and host disagree");
    assert_eq!(digest[0]["bytes"], 8 * MIB);
    // The same channels as elsewhere: the exit record, the defmt log (semihosting), the timings,
    // and a clock whose rate came from the device tree.
    assert!(r.boot_to_first_io_us.is_some(), "first I/O time reported");
    assert!(r.log.iter().any(|l| l.message.contains("virtio-blk devices")), "defmt log: {:?}", r.log);
    assert!(r.block_footprint.is_some_and(|f| f.text > 0), "block layer footprint missing");
    assert!(r.qemu_command.iter().any(|a| a.ends_with("qemu-system-riscv64")), "{:?}", r.qemu_command);
    let boot_rec = records(&r, "boot");
    assert_eq!(boot_rec[0]["tsc_calibrated"], true, "timebase-frequency not read: {}", r.console);
}

#[test]
fn sha256_of_a_qcow2_chain_matches_qemu_img_convert() {
    let dir = scratch("riscv64-chain");
    let top = chain(&dir, 3, 7);
    let r = boot(Machine::RiscvVirt, vec![drive(&top, "top", false)], "sha256 top");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    let digest = records(&r, "sha256");
    assert_eq!(digest.len(), 1, "{}", r.console);
    assert_eq!(digest[0]["digest"], host_digest(&top), "guest and host disagree on the chain");
}

#[test]
fn io_writes_what_the_host_reads_and_exit_codes_pass_through() {
    let dir = scratch("riscv64-io");
    let raw = dir.join("d.raw");
    random_raw_disk(&raw, 4 * MIB, 19);
    let cmd = "io d -c write,-P,0xaa,0,64k -c read,-P,0xaa,0,64k -c write,-z,64k,64k -c flush";
    let r = boot(Machine::RiscvVirt, vec![drive(&raw, "d", false)], cmd);
    assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
    let io = records(&r, "io");
    assert_eq!(io.len(), 4, "{}", r.console);
    assert!(io.iter().all(|r| r["ok"] == true), "{}", r.console);
    let out = Command::new(qemu_io_bin())
        .args(["-f", "raw", "-c", "read -P 0xaa 0 64k", "-c", "read -P 0 64k 64k"])
        .arg(&raw)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("verification failed"), "{text}");

    // A failed verification is kernel code 1; a malformed command line is 2 (usage): the test
    // finisher carries them as QEMU's status 3 and 5.
    let r = boot(Machine::RiscvVirt, vec![drive(&raw, "d", true)], "io d -c read,-P,0xab,0,4k");
    assert_eq!((r.exit_code, r.kernel_code), (1, Some(1)), "{}\n{}", r.summary(), r.console);
    let r = boot(Machine::RiscvVirt, vec![drive(&raw, "d", true)], "sha256");
    assert_eq!((r.exit_code, r.kernel_code), (2, Some(2)), "{}\n{}", r.summary(), r.console);
}

#[test]
fn bench_holds_32_requests() {
    let r = boot(Machine::RiscvVirt, vec![Drive::null_co(1 << 30, "null0")], "bench null0 --rw randread --bs 4k --qd 32 --count 5000");
    assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
    let b = records(&r, "bench");
    assert_eq!(b.len(), 1, "{}", r.console);
    let b = b[0];
    assert_eq!(b["ios"], 5000);
    assert!(b["iops"].as_u64().unwrap() > 0, "{b}");
    assert!(b["max_in_flight"].as_u64().unwrap() >= 32, "the device never held 32 requests: {b}");
    let (p50, p99) = (b["lat_p50_ns"].as_u64().unwrap(), b["lat_p99_ns"].as_u64().unwrap());
    assert!(0 < p50 && p50 <= p99, "{b}");
}
