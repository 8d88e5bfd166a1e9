//! Ending the virtual machine with a status, through semihosting SYS_EXIT (`-semihosting`;
//! PSCI SYSTEM_OFF would carry no status).
//!
//! As on x86 (isa-debug-exit), QEMU's exit status is `code * 2 + 1`, so a QEMU that ends for
//! another reason (status 0, or 1 for its own errors) is never taken for a kernel result and the
//! runner reads every architecture the same way.

use super::semihosting;

/// Ends the machine; QEMU's exit status becomes `code * 2 + 1` (codes up to 127). It never
/// returns: without semihosting the call traps (reported once by the trap handler) and the CPU
/// parks.
pub fn exit(code: u32) -> ! {
    semihosting::exit(code.saturating_mul(2).saturating_add(1));
    loop {
        // SAFETY: waiting for an event only idles this CPU.
        unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
    }
}
