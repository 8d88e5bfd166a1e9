//! Ending the virtual machine with a status, through QEMU's `isa-debug-exit` device.
//!
//! The runner attaches `-device isa-debug-exit,iobase=0xf4,iosize=0x04`; writing `code` there
//! makes QEMU exit with status `(code << 1) | 1`, so a clean QEMU shutdown (status 0) can never be
//! mistaken for a kernel result.

use super::port;

/// The I/O port of QEMU's `isa-debug-exit` device as the runner configures it.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Ends the machine with `code` (QEMU's exit status becomes `code * 2 + 1`).
///
/// Without the debug-exit device this falls back to a triple fault, which with `-no-reboot`
/// ends QEMU with status 0 (the runner reports it as "kernel reset without a status"). It never
/// returns.
pub fn exit(code: u32) -> ! {
    // SAFETY: the runner dedicates port 0xf4 to isa-debug-exit; on a machine without it the write
    // goes to an unassigned port and is dropped.
    unsafe { port::outl(DEBUG_EXIT_PORT, code) };
    triple_fault()
}

/// Resets the CPU by loading an empty IDT and raising an exception.
fn triple_fault() -> ! {
    #[repr(C, packed)]
    struct IdtPointer {
        limit: u16,
        base: u64,
    }
    let empty = IdtPointer { limit: 0, base: 0 };
    // SAFETY: deliberately resets the machine; nothing after this runs.
    unsafe {
        core::arch::asm!("lidt [{}]", "int3", in(reg) &empty, options(readonly, nostack));
    }
    loop {
        // SAFETY: halting with interrupts off only stops this CPU.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) };
    }
}
