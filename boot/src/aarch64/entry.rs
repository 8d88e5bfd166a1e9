//! The entry point `_start`, linked first at 0x4020_0000 (`targets/aarch64-virt/link.ld`).
//!
//! QEMU's `virt` loads an ELF `-kernel` at its physical addresses and starts the first CPU at
//! its entry at EL1, MMU and caches off, with the device tree at the start of RAM
//! (0x4000_0000) when it fits below the ELF (x0 is not set for an ELF). Before any Rust code
//! runs: FP/SIMD on (CPACR_EL1.FPEN: Rust for `aarch64-unknown-none` uses NEON registers),
//! the exception vectors installed, the MMU on with [`BOOT_L1`] (so that atomics and unaligned
//! accesses work: with the MMU off every access is Device-nGnRnE), `.bss` zeroed, a stack.
//! Other CPUs (there are none with the runner's `-smp 1`) park.

use core::arch::global_asm;

/// Size of the boot stack, the only stack the single-threaded kernel has: 4 MiB, sized by
/// measurement as on x86 (`boot/src/x86_64/entry.rs`; the runner checks every run's mark).
pub const BOOT_STACK_SIZE: usize = 4 * 1024 * 1024;

#[repr(C, align(16))]
struct BootStack([u8; BOOT_STACK_SIZE]);

#[no_mangle]
static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

/// Level-1 translation table (4 KiB granule, 39-bit addresses: 1 GiB blocks).
#[repr(C, align(4096))]
struct Table([u64; 512]);

/// MAIR_EL1 attribute indexes.
const ATTR_DEVICE: u64 = 0; // Device-nGnRE (MAIR byte 0x04)
const ATTR_NORMAL: u64 = 1; // Normal, write-back cacheable (MAIR byte 0xff)

const BLOCK: u64 = 0b01;
const AF: u64 = 1 << 10;
const INNER_SHAREABLE: u64 = 0b11 << 8;
const PXN_UXN: u64 = (1 << 53) | (1 << 54);

/// The first GiB is `virt`'s MMIO (GIC, PL011, virtio-mmio, PCIe windows and low ECAM):
/// Device memory, never executable. 1 GiB to 4 GiB is RAM (`-m` at most 3 GiB): Normal
/// memory. 4 GiB to 512 GiB is Device memory again, for the high MMIO `virt` places above RAM
/// (from 256 GiB with `-m` below it: the second GIC redistributor region and the high PCIe
/// ECAM at 0x40_1000_0000 that QEMU 7.2 to 10.x use by default); the 64-bit PCIe window at
/// 512 GiB is beyond the 39-bit address space, so BARs go below 4 GiB.
const fn boot_l1() -> Table {
    let mut t = [0u64; 512];
    let device = BLOCK | AF | (ATTR_DEVICE << 2) | PXN_UXN;
    t[0] = device;
    let mut gib = 1;
    while gib < 512 {
        t[gib] = if gib < 4 {
            ((gib as u64) << 30) | BLOCK | AF | INNER_SHAREABLE | (ATTR_NORMAL << 2)
        } else {
            ((gib as u64) << 30) | device
        };
        gib += 1;
    }
    Table(t)
}

/// The boot translation table, built at compile time (read by the MMU, never written).
#[no_mangle]
static BOOT_L1: Table = boot_l1();

/// Highest address (exclusive) of the RAM [`BOOT_L1`] maps.
pub const MAPPED_END: u64 = 4 << 30;

/// Highest address (exclusive) [`BOOT_L1`] maps at all (Device memory from [`MAPPED_END`]).
pub const DEVICE_MAPPED_END: u64 = 512 << 30;

global_asm!(
    r#"
    .pushsection .text.boot, "ax"
    .global _start
_start:
    mrs     x1, mpidr_el1
    and     x1, x1, #0xff
    cbnz    x1, 9f
    mov     x19, x0                     /* the DTB address, if a loader passed one */

    mov     x1, #(3 << 20)              /* CPACR_EL1.FPEN: no FP/SIMD traps at EL1/EL0 */
    msr     cpacr_el1, x1
    isb

    adrp    x1, strata_vectors
    add     x1, x1, :lo12:strata_vectors
    msr     vbar_el1, x1

    ldr     x1, =0xff04                 /* attr0 Device-nGnRE, attr1 Normal WB */
    msr     mair_el1, x1
    ldr     x1, =0x803519               /* T0SZ 25, WB WA inner/outer, inner shareable, 4K, EPD1 */
    mrs     x2, id_aa64mmfr0_el1
    and     x2, x2, #7                  /* PARange into IPS */
    bfi     x1, x2, #32, #3
    msr     tcr_el1, x1
    adrp    x1, BOOT_L1
    msr     ttbr0_el1, x1
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    mrs     x1, sctlr_el1
    orr     x1, x1, #(1 << 0)           /* M: MMU on */
    orr     x1, x1, #(1 << 2)           /* C: data cache */
    orr     x1, x1, #(1 << 12)          /* I: instruction cache */
    bic     x1, x1, #(1 << 1)           /* A: unaligned accesses allowed */
    msr     sctlr_el1, x1
    isb

    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:
    adrp    x1, BOOT_STACK
    add     x1, x1, :lo12:BOOT_STACK
    ldr     x2, ={stack_size}
    add     sp, x1, x2

    mov     x0, x19
    bl      strata_main
9:  wfe
    b       9b
    .ltorg
    .popsection
    "#,
    stack_size = const BOOT_STACK_SIZE,
);
