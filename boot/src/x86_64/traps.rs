//! Traps: an IDT whose 32 exception vectors report and end the machine.
//!
//! Without it any fault (a bad pointer, a divide by zero) triple-faults and QEMU resets, losing
//! where it happened. Each stub pushes the vector (and a zero where the CPU pushes no error code)
//! and calls the kernel's `strata_exception(&Frame) -> !`. No interrupts are used.

use core::arch::{asm, global_asm};
use core::fmt;

/// The frame the kernel's `strata_exception` receives (the same name on every architecture).
pub type Frame = ExceptionFrame;

/// What the CPU and the stub pushed, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    /// Exception vector (0 = divide error, 13 = general protection, 14 = page fault, ...).
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    /// Faulting instruction.
    pub rip: u64,
    /// Code segment.
    pub cs: u64,
    /// Flags.
    pub rflags: u64,
    /// Stack pointer at the fault.
    pub rsp: u64,
    /// Stack segment.
    pub ss: u64,
}

impl ExceptionFrame {
    /// A short name for the vector.
    pub fn name(&self) -> &'static str {
        match self.vector {
            0 => "divide error",
            1 => "debug",
            2 => "NMI",
            3 => "breakpoint",
            4 => "overflow",
            5 => "bound range",
            6 => "invalid opcode",
            7 => "device not available",
            8 => "double fault",
            10 => "invalid TSS",
            11 => "segment not present",
            12 => "stack fault",
            13 => "general protection",
            14 => "page fault",
            16 => "x87 floating point",
            17 => "alignment check",
            18 => "machine check",
            19 => "SIMD floating point",
            _ => "reserved",
        }
    }
}

impl fmt::Display for ExceptionFrame {
    /// One line: vector, its name, where, and for a page fault the address (from CR2).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) at rip {:#x}, error code {:#x}, rsp {:#x}",
            self.vector,
            self.name(),
            self.rip,
            self.error_code,
            self.rsp
        )?;
        if self.vector == 14 {
            write!(f, ", page fault address {:#x}", cr2())?;
        }
        Ok(())
    }
}

impl ExceptionFrame {
    /// The faulting instruction's address.
    pub fn pc(&self) -> u64 {
        self.rip
    }
}

/// Reads CR2, the faulting address of the last page fault.
pub fn cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

#[repr(C, align(16))]
struct Idt([u64; 64]);

static mut IDT: Idt = Idt([0; 64]);

extern "C" {
    static exception_stubs: [u64; 32];
}

/// Installs the IDT. Call once, early.
pub fn init() {
    // SAFETY: runs once on the only CPU before anything can raise an exception we care about;
    // IDT is only written here. `exception_stubs` is the table of 32 stub addresses below.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (vector, &stub) in exception_stubs.iter().enumerate() {
            // 64-bit interrupt gate: selector 0x08, present, DPL 0, type 0xe.
            let low = (stub & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((stub >> 16) & 0xffff) << 48;
            let high = stub >> 32;
            idt.0[vector * 2] = low;
            idt.0[vector * 2 + 1] = high;
        }
        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let pointer = Pointer { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: idt as *const Idt as u64 };
        asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack, preserves_flags));
    }
}

// Vectors 8, 10-14, 17, 21, 29, 30 push an error code; the others get a zero so every frame has
// the same shape.
global_asm!(
    r#"
    .pushsection .text.exceptions, "ax"
    .macro STUB vector, has_error
    .balign 16
    exception_stub_\vector:
    .if \has_error == 0
    push 0
    .endif
    push \vector
    jmp exception_common
    .endm

    STUB 0,0
    STUB 1,0
    STUB 2,0
    STUB 3,0
    STUB 4,0
    STUB 5,0
    STUB 6,0
    STUB 7,0
    STUB 8,1
    STUB 9,0
    STUB 10,1
    STUB 11,1
    STUB 12,1
    STUB 13,1
    STUB 14,1
    STUB 15,0
    STUB 16,0
    STUB 17,1
    STUB 18,0
    STUB 19,0
    STUB 20,0
    STUB 21,1
    STUB 22,0
    STUB 23,0
    STUB 24,0
    STUB 25,0
    STUB 26,0
    STUB 27,0
    STUB 28,0
    STUB 29,1
    STUB 30,1
    STUB 31,0

    exception_common:
    mov rdi, rsp
    and rsp, -16
    call strata_exception
    ud2
    .popsection

    .pushsection .rodata.exception_stubs, "a"
    .balign 8
    .global exception_stubs
    exception_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_stub_\v
    .endr
    .popsection
    "#
);
