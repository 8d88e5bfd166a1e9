//! The kernel on riscv64 `virt` with its disks as virtio-blk-pci (`qemu-runner boot --arch
//! riscv64 --transport pci`), under TCG and OpenSBI. Neither OpenSBI nor `-kernel` assigns
//! BARs: the board code finds the generic ECAM host bridge under `/soc` in the device tree
//! (0x3000_0000 on QEMU 7.2 and 10.x) and places every BAR in its windows (32-bit at
//! 0x4000_0000, 64-bit at 16 GiB), so these also check the allocator with one device (raw),
//! four (a 3-deep qcow2 chain arrives as one device per file) and 24 (the kernel's device
//! limit, three times the board's virtio-mmio slots). The workloads: `strata_tests::arch_guest`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use qemu_runner::Transport;
use strata_tests::arch_guest::Guest;
use strata_tests::Machine;

const GUEST: Guest = Guest {
    machine: Machine::RiscvVirt,
    transport: Transport::Pci,
    tag: "riscv64-pci",
};

strata_tests::guest_workload_tests!(GUEST, 23, util::chain, util::host_digest);

#[test]
fn twenty_four_disks_each_get_bars_and_answer() {
    GUEST.every_disk_answers(24);
}
