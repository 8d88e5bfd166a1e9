//! Traps: the S-mode trap vector (`stvec`, direct mode, installed by the entry code before any
//! Rust runs). Every trap OpenSBI delegates or redirects to S-mode reports and ends the machine
//! through the kernel's `strata_exception(&Frame) -> !`. No interrupts are enabled.

use core::arch::global_asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// What the trap stub saved, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    /// `scause`: bit 63 set for an interrupt, the low bits the exception code.
    pub cause: u64,
    /// `sepc`: the faulting instruction.
    pub epc: u64,
    /// `stval`: the faulting address (access faults, misaligned accesses) or instruction bits.
    pub tval: u64,
    /// `sstatus`.
    pub status: u64,
    /// Stack pointer at the trap.
    pub sp: u64,
}

const INTERRUPT: u64 = 1 << 63;

impl Frame {
    /// The faulting instruction's address.
    pub fn pc(&self) -> u64 {
        self.epc
    }

    /// A short name for the cause (privileged specification, table "scause values").
    pub fn name(&self) -> &'static str {
        if self.cause & INTERRUPT != 0 {
            return "interrupt";
        }
        match self.cause {
            0 => "instruction address misaligned",
            1 => "instruction access fault",
            2 => "illegal instruction",
            3 => "breakpoint",
            4 => "load address misaligned",
            5 => "load access fault",
            6 => "store address misaligned",
            7 => "store access fault",
            8 => "ecall from U-mode",
            9 => "ecall from S-mode",
            12 => "instruction page fault",
            13 => "load page fault",
            15 => "store page fault",
            _ => "other",
        }
    }

    /// True if `tval` holds a faulting address.
    fn has_address(&self) -> bool {
        self.cause & INTERRUPT == 0 && matches!(self.cause, 0 | 1 | 4..=7 | 12 | 13 | 15)
    }
}

impl fmt::Display for Frame {
    /// One line: cause, where, status, faulting address when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x} ({}) at pc {:#x}, sstatus {:#x}, sp {:#x}",
            self.cause,
            self.name(),
            self.epc,
            self.status,
            self.sp
        )?;
        if self.has_address() {
            write!(f, ", fault address {:#x}", self.tval)?;
        }
        Ok(())
    }
}

/// Installs the vector. The entry code has done it already.
pub fn init() {}

static IN_TRAP: AtomicBool = AtomicBool::new(false);

/// Called by the stub: a second trap while the first is being reported parks the hart instead
/// of recursing.
#[no_mangle]
extern "C" fn strata_trap_entry(frame: &Frame) -> ! {
    extern "C" {
        fn strata_exception(frame: &Frame) -> !;
    }
    if IN_TRAP.swap(true, Ordering::Relaxed) {
        loop {
            // SAFETY: idling this hart for ever.
            unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
        }
    }
    // SAFETY: the kernel defines `strata_exception` with this signature.
    unsafe { strata_exception(frame) }
}

global_asm!(
    r#"
    .pushsection .text.vectors, "ax"
    .balign 4
    .global strata_trap_vector
strata_trap_vector:
    addi    sp, sp, -48
    sd      t0, 40(sp)
    csrr    t0, scause
    sd      t0, 0(sp)
    csrr    t0, sepc
    sd      t0, 8(sp)
    csrr    t0, stval
    sd      t0, 16(sp)
    csrr    t0, sstatus
    sd      t0, 24(sp)
    addi    t0, sp, 48
    sd      t0, 32(sp)
    mv      a0, sp
    call    strata_trap_entry
1:  wfi
    j       1b
    .popsection
    "#
);
