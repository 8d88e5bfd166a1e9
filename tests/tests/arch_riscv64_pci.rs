//! The kernel on riscv64 `virt` with its disks as virtio-blk-pci (`qemu-runner boot --arch
//! riscv64 --transport pci`), under TCG and OpenSBI. Neither OpenSBI nor `-kernel` assigns
//! BARs: the board code finds the generic ECAM host bridge under `/soc` in the device tree
//! (0x3000_0000 on QEMU 7.2 and 10.x) and places every BAR in its windows (32-bit at
//! 0x4000_0000, 64-bit at 16 GiB), so these also check the allocator with one device (raw),
//! four (a 3-deep qcow2 chain arrives as one device per file) and 24 (the kernel's device
//! limit, three times the board's virtio-mmio slots).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use qemu_runner::Transport;
use strata_tests::arch_guest::Guest;
use strata_tests::Machine;
use util::{chain, host_digest};

const GUEST: Guest = Guest {
    machine: Machine::RiscvVirt,
    transport: Transport::Pci,
    tag: "riscv64-pci",
};

#[test]
fn sha256_of_a_raw_disk_over_pci_matches_the_host() {
    GUEST.sha256_of_a_raw_disk(23);
}

#[test]
fn sha256_of_a_qcow2_chain_over_pci_matches_qemu_img_convert() {
    let top = chain(&GUEST.scratch("chain"), 3, 9);
    GUEST.sha256_of_a_qcow2_chain(&top, &host_digest(&top));
}

#[test]
fn io_over_pci_writes_what_the_host_reads() {
    GUEST.io_writes_what_the_host_reads(25);
}

#[test]
fn twenty_four_disks_each_get_bars_and_answer() {
    GUEST.every_disk_answers(24);
}

#[test]
fn bench_over_pci_holds_32_requests() {
    GUEST.bench_holds_32_requests();
}
