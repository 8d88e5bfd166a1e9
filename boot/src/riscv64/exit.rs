//! Ending the virtual machine with a status, through the SiFive test finisher (`sifive,test0`
//! in the device tree; 0x10_0000 on QEMU's `virt`): writing `status << 16 | 0x3333` ends QEMU
//! with exit status `status` (0x5555 would end it with 0 and no code).
//!
//! As on x86 (isa-debug-exit) and aarch64 (semihosting), QEMU's exit status is `code * 2 + 1`,
//! so a QEMU that ends for another reason (status 0, or 1 for its own errors) is never taken
//! for a kernel result and the runner reads every architecture the same way.

use core::sync::atomic::{AtomicU64, Ordering};

/// The finisher's address on QEMU's `virt` (VIRT_TEST), used until the device tree is read.
const BOARD_FINISHER: u64 = 0x10_0000;

/// FINISHER_FAIL: the status goes in the upper 16 bits.
const FAIL: u32 = 0x3333;

static FINISHER: AtomicU64 = AtomicU64::new(BOARD_FINISHER);

/// Uses the finisher at `base` (from the device tree's `sifive,test` node).
pub(super) fn set_finisher(base: u64) {
    FINISHER.store(base, Ordering::Relaxed);
}

/// Ends the machine; QEMU's exit status becomes `code * 2 + 1` (codes up to 127 reach the host
/// whole).
pub fn exit(code: u32) -> ! {
    let status = code.saturating_mul(2).saturating_add(1).min(0xffff);
    let at = FINISHER.load(Ordering::Relaxed) as usize as *mut u32;
    // SAFETY: the finisher's register (board address or the device tree's `reg`), 4-byte
    // aligned; paging is off. Writing it only asks QEMU to stop.
    unsafe { core::ptr::write_volatile(at, (status << 16) | FAIL) };
    loop {
        // SAFETY: waiting for an interrupt only idles this hart until QEMU stops.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
