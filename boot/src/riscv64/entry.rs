//! The entry point `_start`, linked first at 0x8020_0000 (`targets/riscv64-virt/link.ld`).
//!
//! OpenSBI (QEMU's `-bios default`, fw_dynamic) starts the boot hart at the ELF's entry in
//! S-mode, paging off, interrupts off, with a0 = hart id and a1 = the device tree's address
//! (QEMU puts the blob near the top of RAM, below 3 GiB). Before any Rust code runs:
//! `sstatus.FS` set to Initial (riscv64gc code uses the F/D registers: with FS Off every float
//! instruction is illegal), `fcsr` cleared, `stvec` pointed at the trap vector, `.bss` zeroed, a
//! stack. Other harts stay stopped in OpenSBI (HSM; the runner boots `-smp 1`).

use core::arch::global_asm;

/// Size of the boot stack, the only stack the single-threaded kernel has: 4 MiB, sized by
/// measurement as on x86 (`boot/src/x86_64/entry.rs`; the runner checks every run's mark).
pub const BOOT_STACK_SIZE: usize = 4 * 1024 * 1024;

#[repr(C, align(16))]
struct BootStack([u8; BOOT_STACK_SIZE]);

#[no_mangle]
static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

/// Paging stays off (`satp` Bare): every physical address below QEMU's 56-bit limit is
/// reachable as itself.
pub const PHYS_END: u64 = 1 << 56;

/// `sstatus.FS` = Initial (bits 14:13 = 01).
const SSTATUS_FS_INITIAL: usize = 1 << 13;

global_asm!(
    r#"
    .pushsection .text.boot, "ax"
    .global _start
_start:
    csrw    sie, zero                   # no interrupts are used
    mv      s1, a1                      # the device tree's address

    li      t0, {fs_initial}            # FPU on before any Rust code
    csrs    sstatus, t0
    csrwi   0x003, 0                    # fcsr (CSR number: global_asm has no F feature)

    la      t0, strata_trap_vector
    csrw    stvec, t0

    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:
    la      sp, BOOT_STACK
    li      t0, {stack_size}
    add     sp, sp, t0

    mv      a0, s1
    call    strata_main
9:  wfi
    j       9b
    .popsection
    "#,
    fs_initial = const SSTATUS_FS_INITIAL,
    stack_size = const BOOT_STACK_SIZE,
);
