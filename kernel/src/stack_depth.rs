//! The boot stack's high-water mark (issue 17: a stack sized by measurement).
//!
//! [`paint`] fills the free part of the boot stack — from its lowest byte up to a guard below
//! the caller's frame — with a pattern at boot; [`report`] finds, at exit, the lowest byte no
//! longer holding it and emits a `stack` record: how deep the kernel went below `strata_main`'s
//! frame (`deepest_bytes`) out of what was painted (`painted_bytes`). The entry code of every
//! architecture (`boot/src/*/entry.rs`) names the stack `BOOT_STACK` (`#[no_mangle]`), which is
//! all this module needs from it. Painting is one `memset` of about 4 MiB at boot, before
//! the first I/O (`paint_us` in the record says what it cost). A frame that reserved stack without writing it is not seen:
//! the mark is a lower bound on the depth, exact to the deepest write.

#![allow(unsafe_code)] // reason: reads and writes the boot stack below the running frame

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use strata_boot::clock;

use crate::report::Record;

extern "C" {
    /// The boot stack (its first, lowest byte), defined by the architecture's entry code.
    static BOOT_STACK: u8;
}

/// What free stack is filled with (a byte, so that painting is one `memset`: a loop of word
/// stores costs tens of milliseconds of boot under TCG).
const BYTE: u8 = 0x5c;
const PATTERN: u64 = u64::from_ne_bytes([BYTE; 8]);
/// Bytes below the painting frame left alone (its own calls run there).
const GUARD: usize = 16 * 1024;

/// Lowest painted address (the stack's first byte) and the address just above the painted
/// part; zero until [`paint`] ran.
static LOW: AtomicUsize = AtomicUsize::new(0);
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// The painting frame's address: depths are counted from it.
static MAIN: AtomicUsize = AtomicUsize::new(0);
/// Clock ticks painting took (boot-to-first-I/O includes them).
static PAINT_TICKS: AtomicU64 = AtomicU64::new(0);

/// Paints the free stack below the caller (call it first thing in `strata_main`).
#[inline(never)]
pub fn paint() {
    let here = 0u8;
    let sp = core::hint::black_box(&here) as *const u8 as usize;
    let low = core::ptr::addr_of!(BOOT_STACK) as usize;
    let high = sp.saturating_sub(GUARD) & !7;
    let low = (low + 7) & !7;
    if high <= low {
        return;
    }
    let words = (high - low) / 8;
    let start = clock::now();
    // SAFETY: [low, high) is the boot stack below this frame less a guard: no live frame is
    // there (the stack grows down from above `sp`), and nothing else refers to it.
    unsafe { core::ptr::write_bytes(low as *mut u8, BYTE, words * 8) };
    PAINT_TICKS.store(clock::now().wrapping_sub(start), Ordering::Relaxed);
    LOW.store(low, Ordering::Relaxed);
    HIGH.store(low + words * 8, Ordering::Relaxed);
    MAIN.store(sp, Ordering::Relaxed);
}

/// Emits the `stack` record (nothing if [`paint`] did not run).
pub fn report() {
    let (low, high, main) = (
        LOW.load(Ordering::Relaxed),
        HIGH.load(Ordering::Relaxed),
        MAIN.load(Ordering::Relaxed),
    );
    if low == 0 || high <= low {
        return;
    }
    let words = (high - low) / 8;
    // The first word from the bottom that no longer holds the pattern.
    // SAFETY: the painted range is the boot stack below the frame that painted it; it is read
    // while the caller's (shallower) frames live above it.
    let touched =
        (0..words).find(|&i| unsafe { (low as *const u64).add(i).read_volatile() } != PATTERN);
    let deepest = touched.map_or(0, |i| main.saturating_sub(low + i * 8));
    Record::new("stack")
        .num("painted_bytes", (high - low) as u64)
        .num("deepest_bytes", deepest as u64)
        .num("guard_bytes", GUARD as u64)
        .num(
            "paint_us",
            clock::ticks_to_ns(PAINT_TICKS.load(Ordering::Relaxed)) / 1000,
        )
        .emit();
    crate::println!(
        "stack: deepest {} KiB below strata_main of {} KiB painted",
        deepest / 1024,
        (high - low) / 1024
    );
}
