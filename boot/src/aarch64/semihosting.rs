//! Arm semihosting calls (`hlt #0xf000` on AArch64), which QEMU serves with `-semihosting`:
//! the exit status (SYS_EXIT) and the trace channel (SYS_WRITE0 and SYS_WRITEC, which QEMU
//! sends to the semihosting console's chardev; a handle from SYS_OPEN `:tt` would be QEMU's own
//! stdout, the human console).
//!
//! Without `-semihosting` the `hlt` raises an exception, which the trap handler reports.

const SYS_WRITEC: u64 = 0x03;
const SYS_WRITE0: u64 = 0x04;
const SYS_EXIT: u64 = 0x18;

/// SYS_EXIT's reason for a normal application exit; on AArch64 the second word of the block is
/// the exit status (what SYS_EXIT_EXTENDED does on AArch32).
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// Makes semihosting call `op` with the parameter block at `params`.
///
/// # Safety
/// `params` must point to the block `op` expects, valid for the call.
unsafe fn call(op: u64, params: *const u64) -> u64 {
    let ret: u64;
    // SAFETY: the semihosting trap reads the parameter block the caller vouches for and writes
    // only x0 (and guest memory that a block names as a buffer for reading, which we never ask).
    unsafe {
        core::arch::asm!("hlt #0xf000", inout("x0") op => ret, in("x1") params, options(nostack));
    }
    ret
}

/// Ends QEMU with `code` as its exit status (only its low 8 bits reach the host).
pub fn exit(code: u32) {
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    // SAFETY: SYS_EXIT reads the two-word block above.
    unsafe { call(SYS_EXIT, block.as_ptr()) };
}

/// Writes one byte (any value, NUL included) to the semihosting console.
pub fn write_char(byte: u8) {
    // SAFETY: SYS_WRITEC reads the one byte its parameter points to.
    unsafe { call(SYS_WRITEC, (&byte as *const u8).cast()) };
}

/// Writes a NUL-terminated string to the semihosting console.
///
/// # Safety
/// `text` must hold a NUL.
pub unsafe fn write_nul_terminated(text: &[u8]) {
    // SAFETY: SYS_WRITE0 reads up to the NUL, which the caller promises is in `text`.
    unsafe { call(SYS_WRITE0, text.as_ptr().cast()) };
}
