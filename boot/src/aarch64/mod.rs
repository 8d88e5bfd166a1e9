//! aarch64 boot support for QEMU's `virt` machine: an ELF loaded by `-kernel` is entered at EL1
//! with the MMU off; the entry code enables FP/SIMD, turns the MMU on (identity map: Device
//! memory below 1 GiB, Normal memory for RAM from 1 GiB to 4 GiB), zeroes `.bss` and calls the
//! kernel's `strata_main` with the device tree's address.
//!
//! The public modules are the boot surface every architecture provides (see the crate docs).

pub mod board;
pub mod boot_info;
pub mod clock;
pub mod console;
mod entry;
pub mod exit;
mod semihosting;
pub mod trace;
pub mod traps;
