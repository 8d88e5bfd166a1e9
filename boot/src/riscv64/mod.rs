//! riscv64 boot support for QEMU's `virt` machine under the OpenSBI QEMU ships (`-bios
//! default`): an ELF loaded by `-kernel` is entered in S-mode with paging off (`satp` Bare),
//! the hart id in a0 and the device tree's address in a1; the entry code turns the FPU on
//! (`sstatus.FS`), installs the trap vector, zeroes `.bss` and calls the kernel's `strata_main`
//! with the device tree's address.
//!
//! The public modules are the boot surface every architecture provides (see the crate docs).
//! Devices: NS16550A console at 0x1000_0000, `rdtime` at the device tree's
//! `/cpus/timebase-frequency`, the SiFive test finisher for the exit status, virtio-mmio slots
//! from the device tree, defmt on the semihosting console.

pub mod board;
pub mod boot_info;
pub mod clock;
pub mod console;
mod entry;
pub mod exit;
mod semihosting;
pub mod trace;
pub mod traps;
