//! The kernel on riscv64 `virt` under TCG and OpenSBI (`qemu-runner boot --arch riscv64`), its
//! disks on virtio-mmio: `sha256` of a raw disk and of a qcow2 chain against the host
//! (`sha256sum` of `qemu-img convert -O raw`), `io` with the host reading back what the guest
//! wrote, `bench` holding 32 requests, and the exit status, defmt log and boot-to-first-I/O
//! the runner reads the same way as on x86 and aarch64. Over PCI: `arch_riscv64_pci.rs`.
//!
//! The runner installs `qemu-system-riscv64` (Debian `qemu-system-misc`, at qemu-utils'
//! release) and the `riscv64gc-unknown-none-elf` target through `scripts/setup.sh` when they
//! are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use qemu_runner::Transport;
use strata_tests::arch_guest::Guest;
use strata_tests::{records, Machine};
use util::{chain, host_digest};

const GUEST: Guest = Guest {
    machine: Machine::RiscvVirt,
    transport: Transport::Mmio,
    tag: "riscv64",
};

#[test]
fn sha256_of_a_raw_disk_matches_the_host() {
    let r = GUEST.sha256_of_a_raw_disk(17);
    // The same channels as elsewhere: the defmt log (semihosting), the footprint, and a clock
    // whose rate came from the device tree.
    assert!(
        r.log
            .iter()
            .any(|l| l.message.contains("virtio-blk devices")),
        "defmt log: {:?}",
        r.log
    );
    assert!(
        r.block_footprint.is_some_and(|f| f.text > 0),
        "block layer footprint missing"
    );
    let boot_rec = records(&r, "boot");
    assert_eq!(
        boot_rec[0]["tsc_calibrated"], true,
        "timebase-frequency not read: {}",
        r.console
    );
}

#[test]
fn sha256_of_a_qcow2_chain_matches_qemu_img_convert() {
    let top = chain(&GUEST.scratch("chain"), 3, 7);
    GUEST.sha256_of_a_qcow2_chain(&top, &host_digest(&top));
}

#[test]
fn io_writes_what_the_host_reads_and_exit_codes_pass_through() {
    GUEST.io_writes_what_the_host_reads(19);
    // The test finisher carries kernel codes 1 and 2 as QEMU's status 3 and 5.
    GUEST.exit_codes_pass_through(20);
}

#[test]
fn bench_holds_32_requests() {
    GUEST.bench_holds_32_requests();
}
