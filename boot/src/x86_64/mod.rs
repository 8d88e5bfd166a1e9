//! x86_64 boot support: entered through QEMU's PVH boot protocol (`-kernel` with a Xen
//! `PHYS32_ENTRY` ELF note) in 32-bit protected mode, switched to long mode with the first 4 GiB
//! identity-mapped, then handed to the kernel's `strata_main`.

pub mod entry;
pub mod exit;
pub mod idt;
pub mod port;
pub mod serial;
pub mod start_info;
pub mod tsc;
