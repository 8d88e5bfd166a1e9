//! The kernel on aarch64 `virt` under TCG (`qemu-runner boot --arch aarch64`), its disks on
//! virtio-mmio: `sha256` of a raw disk and of a qcow2 chain against the host (`sha256sum` of
//! `qemu-img convert -O raw`), `io` with the host reading back what the guest wrote, `bench`
//! holding 32 requests, and the exit status, defmt log and boot-to-first-I/O the runner reads
//! the same way as on x86 (`strata_tests::arch_guest`). Over PCI: `arch_aarch64_pci.rs`.
//!
//! The runner installs `qemu-system-aarch64` (Debian `qemu-system-arm`, at qemu-utils' release)
//! and the `aarch64-unknown-none` target through `scripts/setup.sh` when they are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use qemu_runner::Transport;
use strata_tests::arch_guest::Guest;
use strata_tests::Machine;

const GUEST: Guest = Guest {
    machine: Machine::Virt,
    transport: Transport::Mmio,
    tag: "aarch64",
};

strata_tests::guest_workload_tests!(GUEST, 11, util::chain, util::host_digest);

#[test]
fn exit_codes_pass_through() {
    // Semihosting SYS_EXIT carries kernel codes 1 and 2 as QEMU's status 3 and 5.
    GUEST.exit_codes_pass_through(14);
}
