//! The Strata kernel's boot surface: everything it needs from the CPU and the board before
//! devices exist, with one shape on every architecture.
//!
//! - [`clock`]: `now()` in ticks, `hz()`, `calibrate()`, `mark_boot()`/`boot_ticks()`,
//!   `ticks_to_ns()`, `ns_since_boot()`.
//! - [`console`]: `Console::init()` and a `core::fmt::Write` console for people.
//! - [`trace`]: `write(bytes)`, the sink defmt's frames go to, and `channels()` for `logbench`.
//! - [`exit`]: `exit(code) -> !`, ending the machine with a status the runner reads.
//! - [`boot_info`]: `BootInfo::read(handle)` (the value the loader passed to the entry point):
//!   command line, memory map, RAM size.
//! - [`traps`]: `init()` and the `Frame` the trap stubs hand to the kernel's
//!   `strata_exception(&Frame) -> !`.
//! - [`board`]: device discovery: `pci()` (configuration access, ports or ECAM),
//!   `virtio_mmio(&BootInfo)` (fixed table or device tree), `is_mapped(addr, size)`.
//!
//! Every architecture's module provides these names and the kernel uses only them; the
//! architecture is chosen by one `cfg` re-export below (Hermit's habit). Each architecture's
//! entry code calls the kernel's `strata_main(boot_handle: u64) -> !`. Linker scripts live in
//! `targets/<board>/`.
//!
//! On the host (for `cargo test` of the workspace) only the shared types in [`common`] and the
//! device tree reader [`fdt`] exist.

#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod common;
pub mod fdt;
pub mod pci;
pub mod tick_clock;

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod x86_64;

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub use self::x86_64::{board, boot_info, clock, console, exit, trace, traps};

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod aarch64;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use self::aarch64::{board, boot_info, clock, console, exit, trace, traps};

#[cfg(all(target_arch = "riscv64", target_os = "none"))]
mod riscv64;

#[cfg(all(target_arch = "riscv64", target_os = "none"))]
pub use self::riscv64::{board, boot_info, clock, console, exit, trace, traps};

#[cfg(all(any(target_arch = "aarch64", target_arch = "riscv64"), target_os = "none"))]
mod semihosting_trace;
