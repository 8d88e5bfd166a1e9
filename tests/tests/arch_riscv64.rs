//! The kernel on riscv64 `virt` under TCG and OpenSBI (`qemu-runner boot --arch riscv64`), its
//! disks on virtio-mmio: `sha256` of a raw disk and of a qcow2 chain against the host
//! (`sha256sum` of `qemu-img convert -O raw`), `io` with the host reading back what the guest
//! wrote, `bench` holding 32 requests, and the exit status, defmt log, clock rate (the device
//! tree's timebase) and boot-to-first-I/O the runner reads the same way as on x86 and aarch64
//! (`strata_tests::arch_guest`). Over PCI: `arch_riscv64_pci.rs`.
//!
//! The runner installs `qemu-system-riscv64` (Debian `qemu-system-misc`, at qemu-utils'
//! release) and the `riscv64gc-unknown-none-elf` target through `scripts/setup.sh` when they
//! are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use qemu_runner::Transport;
use strata_tests::arch_guest::Guest;
use strata_tests::Machine;

const GUEST: Guest = Guest {
    machine: Machine::RiscvVirt,
    transport: Transport::Mmio,
    tag: "riscv64",
};

strata_tests::guest_workload_tests!(GUEST, 17, util::chain, util::host_digest);

#[test]
fn exit_codes_pass_through() {
    // The test finisher carries kernel codes 1 and 2 as QEMU's status 3 and 5.
    GUEST.exit_codes_pass_through(20);
}
