//! The PVH entry point: 32-bit protected mode to 64-bit long mode.
//!
//! QEMU loads the ELF at its physical addresses and, finding the Xen `PHYS32_ENTRY` note, jumps
//! to `_start32` in flat 32-bit protected mode with paging off and the physical address of the
//! `hvm_start_info` structure in `ebx` (`eax` is not reliable: microvm's qboot leaves it stale).
//! The trampoline zeroes `.bss`, identity-maps the first 4 GiB with 2 MiB pages (the virtio-mmio
//! and PCI windows sit just below 4 GiB), enables SSE, enters long mode and calls
//! `strata_main(start_info_paddr: u64) -> !`, which the kernel defines.
//!
//! Memory layout (`targets/x86_64-pvh/link.ld`): the image is linked at 1 MiB with
//! `-C relocation-model=static`, so the 32-bit code can use absolute addresses.

use core::arch::global_asm;

/// Size of the boot stack, the only stack the single-threaded kernel has. The kernel's executor
/// keeps up to 64 request futures in one frame (a qcow2 write future is ~27 KiB). 4 MiB, sized
/// by measurement: the deepest runs (the kernel's `stack` record) use 1.3 MiB (sha256, bench)
/// to 2.3 MiB (snapshot); the runner fails a run that comes within an eighth of the end
/// (`qemu-runner/src/stack_check.rs`), as there is no guard page.
pub const BOOT_STACK_SIZE: usize = 4 * 1024 * 1024;

/// Number of 2 MiB pages identity-mapped at boot: 4 GiB.
const IDENTITY_2M_PAGES: usize = 2048;

/// Long-mode page tables: one PML4, one PDPT and four page directories, all 4 KiB aligned.
#[repr(C, align(4096))]
struct BootTables {
    pml4: [u64; 512],
    pdpt: [u64; 512],
    pd: [u64; IDENTITY_2M_PAGES],
}

#[repr(C, align(16))]
struct BootStack([u8; BOOT_STACK_SIZE]);

// Only touched by the trampoline below, before any Rust code runs.
#[no_mangle]
static mut BOOT_TABLES: BootTables =
    BootTables { pml4: [0; 512], pdpt: [0; 512], pd: [0; IDENTITY_2M_PAGES] };

#[no_mangle]
static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

global_asm!(
    r#"
    /* Xen ELF note telling the loader where the 32-bit PVH entry is (XEN_ELFNOTE_PHYS32_ENTRY). */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                     /* name size */
    .long 4                     /* descriptor size */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long _start32
    .balign 4
    .popsection

    .pushsection .rodata.boot_gdt, "a"
    .balign 16
boot_gdt:
    .quad 0                     /* null */
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff    /* 0x10: data, DPL 0 */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt
    .popsection

    .pushsection .text.boot32, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    mov %ebx, %esi              /* keep the hvm_start_info pointer */

    /* Zero .bss (page tables and stack included). */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    shr $2, %ecx
    xor %eax, %eax
    rep stosl

    /* PD entries: 2048 x 2 MiB pages, present | writable | huge. */
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, BOOT_TABLES + 8192(,%ecx,8)
    movl $0, BOOT_TABLES + 8192 + 4(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 1b

    /* PDPT entries 0..4 point at the four page directories. */
    xor %ecx, %ecx
2:
    mov %ecx, %eax
    shl $12, %eax
    add $(BOOT_TABLES + 8192 + 3), %eax
    mov %eax, BOOT_TABLES + 4096(,%ecx,8)
    inc %ecx
    cmp $4, %ecx
    jne 2b

    /* PML4[0] points at the PDPT. */
    movl $(BOOT_TABLES + 4096 + 3), BOOT_TABLES

    mov $BOOT_TABLES, %eax
    mov %eax, %cr3

    /* CR4: PAE | OSFXSR | OSXMMEXCPT. */
    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4

    /* EFER.LME */
    mov $0xc0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr

    /* CR0: PG | PE | MP, clear EM (SSE usable). */
    mov %cr0, %eax
    and $~0x4, %eax
    or $0x80000003, %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $start64

    .code64
start64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    lea BOOT_STACK + {stack_size}(%rip), %rsp
    xor %ebp, %ebp
    mov %esi, %edi              /* zero-extends: strata_main(start_info_paddr) */
    call strata_main
3:
    hlt
    jmp 3b
    .popsection
    "#,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);
