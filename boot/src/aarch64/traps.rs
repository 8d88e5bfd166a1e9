//! Traps: the EL1 exception vector table (VBAR_EL1, installed by the entry code before any Rust
//! runs). Every one of its 16 entries reports and ends the machine through the kernel's
//! `strata_exception(&Frame) -> !`. No interrupts are used.

use core::arch::global_asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// What the vector stub saved, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    /// Vector entry: 0-3 current EL with SP_EL0, 4-7 with SP_ELx, 8-15 lower EL; within each
    /// group synchronous, IRQ, FIQ, SError.
    pub entry: u64,
    /// ESR_EL1: the syndrome.
    pub esr: u64,
    /// ELR_EL1: the faulting instruction.
    pub elr: u64,
    /// FAR_EL1: the faulting address (aborts).
    pub far: u64,
    /// SPSR_EL1.
    pub spsr: u64,
    /// Stack pointer at the exception.
    pub sp: u64,
}

impl Frame {
    /// The faulting instruction's address.
    pub fn pc(&self) -> u64 {
        self.elr
    }

    /// A short name for the exception class (ESR_EL1.EC).
    pub fn name(&self) -> &'static str {
        if !self.entry.is_multiple_of(4) {
            return ["synchronous", "IRQ", "FIQ", "SError"][(self.entry % 4) as usize];
        }
        match (self.esr >> 26) & 0x3f {
            0x00 => "unknown reason",
            0x01 => "WFI/WFE",
            0x07 => "FP/SIMD access",
            0x0e => "illegal execution state",
            0x15 => "SVC",
            0x18 => "system register access",
            0x20 | 0x21 => "instruction abort",
            0x22 => "PC alignment",
            0x24 | 0x25 => "data abort",
            0x26 => "SP alignment",
            0x2c => "floating point",
            0x2f => "SError",
            0x3c => "BRK",
            _ => "other",
        }
    }
}

impl fmt::Display for Frame {
    /// One line: entry, class, where, syndrome, faulting address for aborts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) at pc {:#x}, esr {:#x}, sp {:#x}",
            self.entry,
            self.name(),
            self.elr,
            self.esr,
            self.sp
        )?;
        if matches!((self.esr >> 26) & 0x3f, 0x20 | 0x21 | 0x24 | 0x25) {
            write!(f, ", fault address {:#x}", self.far)?;
        }
        Ok(())
    }
}

/// Installs the vectors. The entry code has done it already; this only arms the guard below.
pub fn init() {}

static IN_TRAP: AtomicBool = AtomicBool::new(false);

/// Called by the stubs: a second trap while the first is being reported (say, exiting without
/// semihosting) parks the CPU instead of recursing.
#[no_mangle]
extern "C" fn strata_trap_entry(frame: &Frame) -> ! {
    extern "C" {
        fn strata_exception(frame: &Frame) -> !;
    }
    if IN_TRAP.swap(true, Ordering::Relaxed) {
        loop {
            // SAFETY: idling this CPU for ever.
            unsafe { core::arch::asm!("wfe", options(nomem, nostack)) };
        }
    }
    // SAFETY: the kernel defines `strata_exception` with this signature.
    unsafe { strata_exception(frame) }
}

global_asm!(
    r#"
    .pushsection .text.vectors, "ax"
    .balign 2048
    .global strata_vectors
strata_vectors:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .balign 128
    sub     sp, sp, #48
    mov     x9, #\n
    b       strata_trap_common
    .endr

strata_trap_common:
    mrs     x10, esr_el1
    mrs     x11, elr_el1
    mrs     x12, far_el1
    mrs     x13, spsr_el1
    add     x14, sp, #48
    stp     x9, x10, [sp]
    stp     x11, x12, [sp, #16]
    stp     x13, x14, [sp, #32]
    mov     x0, sp
    bl      strata_trap_entry
    b       .
    .popsection
    "#
);
