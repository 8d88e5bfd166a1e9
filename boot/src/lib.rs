//! Per-architecture entry code for the Strata kernel.
//!
//! Everything the kernel needs from the CPU and the board before devices exist: the entry point
//! the loader jumps to, page tables, the serial console, a clock, port I/O and a way to end the
//! virtual machine with a status. The architecture is chosen by one `cfg` re-export (Hermit's
//! habit); the kernel uses `strata_boot::arch::*` and never names an architecture itself.
//!
//! On the host (for `cargo test` of the workspace) this crate is empty.

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub mod x86_64;

/// The current architecture's boot support.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub use self::x86_64 as arch;
