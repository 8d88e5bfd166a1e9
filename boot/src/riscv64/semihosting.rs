//! RISC-V semihosting calls, which QEMU serves with `-semihosting`: the trace channel
//! (SYS_WRITE0 and SYS_WRITEC, sent to the semihosting console's chardev, as on aarch64).
//!
//! A call is `ebreak` between `slli x0, x0, 0x1f` and `srai x0, x0, 7`, all three uncompressed
//! and in one page (the RISC-V semihosting specification), with the operation in a0 and the
//! parameter in a1; the result comes back in a0. The sequence lives in one 16-byte-aligned
//! function so it never straddles a page. Without `-semihosting` the `ebreak` is a breakpoint
//! exception, which the trap handler reports.

use core::arch::global_asm;

const SYS_WRITEC: usize = 0x03;
const SYS_WRITE0: usize = 0x04;

global_asm!(
    r#"
    .pushsection .text.semihosting, "ax"
    .balign 16
    .global strata_semihosting_call
strata_semihosting_call:
    .option push
    .option norvc
    slli    x0, x0, 0x1f
    ebreak
    srai    x0, x0, 7
    .option pop
    ret
    .popsection
    "#
);

extern "C" {
    /// The call sequence above: a0 = operation, a1 = parameter, returns a0.
    fn strata_semihosting_call(op: usize, param: *const u8) -> usize;
}

/// Writes one byte (any value, NUL included) to the semihosting console.
pub fn write_char(byte: u8) {
    // SAFETY: SYS_WRITEC reads the one byte its parameter points to.
    unsafe { strata_semihosting_call(SYS_WRITEC, &byte) };
}

/// Writes a NUL-terminated string to the semihosting console.
///
/// # Safety
/// `text` must hold a NUL.
pub unsafe fn write_nul_terminated(text: &[u8]) {
    // SAFETY: SYS_WRITE0 reads up to the NUL, which the caller promises is in `text`.
    unsafe { strata_semihosting_call(SYS_WRITE0, text.as_ptr()) };
}
