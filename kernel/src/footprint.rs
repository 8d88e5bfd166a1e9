//! The kernel's static footprint, from the linker script's section symbols.

use crate::{println, report::Record};

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static __bss_start: u8;
    static __bss_end: u8;
}

fn span(start: &u8, end: &u8) -> u64 {
    (end as *const u8 as u64).saturating_sub(start as *const u8 as u64)
}

/// Prints text/rodata/data/bss sizes and emits a `footprint` record.
pub fn report() {
    // SAFETY: linker-defined symbols; only their addresses are used, never their contents.
    let (text, rodata, data, bss) = unsafe {
        (
            span(&__text_start, &__text_end),
            span(&__rodata_start, &__rodata_end),
            span(&__data_start, &__data_end),
            span(&__bss_start, &__bss_end),
        )
    };
    println!("footprint: text {} KiB, rodata {} KiB, data {} KiB, bss {} KiB", text / 1024, rodata / 1024, data / 1024, bss / 1024);
    Record::new("footprint").num("text", text).num("rodata", rodata).num("data", data).num("bss", bss).emit();
}
