//! Ending the virtual machine with a status, through the SiFive test finisher (`sifive,test0`
//! in the device tree; 0x10_0000 on QEMU's `virt`): writing `status << 16 | 0x3333` ends QEMU
//! with exit status `status` (0x5555 would end it with 0 and no code).
//!
//! As on x86 (isa-debug-exit) and aarch64 (semihosting), QEMU's exit status is `code * 2 + 1`,
//! so a QEMU that ends for another reason (status 0, or 1 for its own errors) is never taken
//! for a kernel result and the runner reads every architecture the same way.

use super::entry::PHYS_END;
use crate::fdt::Fdt;

/// The finisher's address on QEMU's `virt` (VIRT_TEST), used before the device tree is read.
const BOARD_FINISHER: u64 = 0x10_0000;

/// FINISHER_FAIL: the status goes in the upper 16 bits.
const FAIL: u32 = 0x3333;

/// The test finisher's register (`sifive,test0`/`sifive,test1`), if the tree has one.
fn finisher(fdt: &Fdt) -> Option<u64> {
    let node = fdt
        .shallow_nodes()
        .find(|n| n.is_compatible("sifive,test0") || n.is_compatible("sifive,test1"))?;
    let (base, size) = node.reg().next()?;
    (size >= 4 && base.is_multiple_of(4) && base < PHYS_END).then_some(base)
}

/// Ends the machine; QEMU's exit status becomes `code * 2 + 1` (codes up to 127 reach the host
/// whole).
pub fn exit(code: u32) -> ! {
    let status = code.saturating_mul(2).saturating_add(1).min(0xffff);
    let base = super::boot_info::saved()
        .as_ref()
        .and_then(finisher)
        .unwrap_or(BOARD_FINISHER);
    let at = base as usize as *mut u32;
    // SAFETY: the finisher's register (board address or the device tree's `reg`), 4-byte
    // aligned; paging is off. Writing it only asks QEMU to stop.
    unsafe { core::ptr::write_volatile(at, (status << 16) | FAIL) };
    loop {
        // SAFETY: waiting for an interrupt only idles this hart until QEMU stops.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}
