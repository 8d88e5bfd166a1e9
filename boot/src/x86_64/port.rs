//! x86 port I/O.
//!
//! Port I/O is inherently unsafe in general (a port can reprogram the machine), so every function
//! here is `unsafe` and callers state why their port is harmless.

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device whose side effects the caller owns.
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller owns the device behind `port`; `out` touches no memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As [`outb`].
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller owns the device behind `port`; `in` touches no memory.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Writes a 32-bit word to an I/O port.
///
/// # Safety
/// As [`outb`].
#[inline]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller owns the device behind `port`; `out` touches no memory.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) }
}

/// Reads a 32-bit word from an I/O port.
///
/// # Safety
/// As [`outb`].
#[inline]
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller owns the device behind `port`; `in` touches no memory.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags)) }
    value
}

/// Writes a whole buffer to one I/O port with `rep outsb`.
///
/// Under KVM a string I/O instruction leaves the guest once per batch (up to a page) rather than
/// once per byte, which is what makes QEMU's debugcon a cheap log channel.
///
/// # Safety
/// As [`outb`].
#[inline]
pub unsafe fn outsb(port: u16, bytes: &[u8]) {
    // SAFETY: the caller owns the device behind `port`; `rep outsb` only reads `bytes`, whose
    // pointer and length come from a valid slice. The direction flag is clear (the ABI
    // guarantees it at function boundaries).
    unsafe {
        asm!("rep outsb", in("dx") port, inout("rsi") bytes.as_ptr() => _,
             inout("rcx") bytes.len() => _, options(nostack, preserves_flags, readonly))
    }
}
