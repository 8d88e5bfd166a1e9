//! The kernel's exit statuses, handed to the board's exit (x86: `isa-debug-exit`, QEMU exits
//! with `2 * code + 1`).
//! `qemu-runner` maps them to its own exit status; keep the two lists in step.

/// The workload succeeded.
pub const SUCCESS: u32 = 0;
/// The workload ran and failed (I/O error, verification mismatch, read-only device, ...).
pub const FAILURE: u32 = 1;
/// The command line was malformed or named something that does not exist.
pub const USAGE: u32 = 2;
/// The kernel panicked.
pub const PANIC: u32 = 3;
/// The kernel was not booted the way it needs (no usable boot information).
pub const BOOT_ERROR: u32 = 4;

/// Records the exit on the console and ends the machine.
pub fn exit(code: u32) -> ! {
    crate::stack_depth::report();
    crate::report::exit(code);
    strata_boot::exit::exit(code)
}
