//! x86_64 boot support: entered through QEMU's PVH boot protocol (`-kernel` with a Xen
//! `PHYS32_ENTRY` ELF note) in 32-bit protected mode, switched to long mode with the first 4 GiB
//! identity-mapped, then handed to the kernel's `strata_main`.
//!
//! The public modules are the boot surface every architecture provides (see the crate docs);
//! the rest is x86 machinery behind them.

pub mod board;
pub mod boot_info;
pub mod clock;
pub mod console;
mod entry;
pub mod exit;
mod port;
mod serial;
pub mod trace;
pub mod traps;
