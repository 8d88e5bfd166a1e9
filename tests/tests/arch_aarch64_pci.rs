//! The kernel on aarch64 `virt` with its disks as virtio-blk-pci (`qemu-runner boot --arch
//! aarch64 --transport pci`), under TCG. Nothing assigns BARs under `-kernel`: the board code
//! reads the generic ECAM host bridge from the device tree (QEMU 7.2 and 10.x place its ECAM
//! above 4 GiB by default) and places every BAR in the bridge's 32-bit window, so these also
//! check the allocator with one device (raw), four (a 3-deep qcow2 chain arrives as one device
//! per file) and 24 (the kernel's device limit). The workloads: `strata_tests::arch_guest`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use qemu_runner::Transport;
use strata_tests::arch_guest::Guest;
use strata_tests::{BootOptions, Machine};

const GUEST: Guest = Guest {
    machine: Machine::Virt,
    transport: Transport::Pci,
    tag: "aarch64-pci",
};

strata_tests::guest_workload_tests!(GUEST, 21, util::chain, util::host_digest);

#[test]
fn twenty_four_disks_each_get_bars_and_answer() {
    GUEST.every_disk_answers(24);
}

#[test]
fn pci_is_refused_where_the_machine_has_none() {
    let opts = BootOptions {
        machine: Machine::Microvm,
        transport: Some(Transport::Pci),
        quiet: true,
        ..BootOptions::default()
    };
    assert!(matches!(
        qemu_runner::boot(&opts),
        Err(qemu_runner::RunnerError::Usage(_))
    ));
}
