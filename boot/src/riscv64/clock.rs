//! The clock: the `time` CSR (`rdtime`), at the device tree's `/cpus/timebase-frequency`
//! (10 MHz on QEMU's `virt`).

pub use crate::common::Calibration;
use crate::tick_clock::TickClock;

/// QEMU `virt`'s timebase, used when the device tree gives none; reported as uncalibrated.
const FALLBACK_HZ: u64 = 10_000_000;

static CLOCK: TickClock = TickClock::new(FALLBACK_HZ);

/// The clock now, in ticks.
#[inline]
pub fn now() -> u64 {
    let ticks: u64;
    // SAFETY: reading the `time` CSR has no side effects (OpenSBI lets S-mode read it, or
    // emulates the read).
    unsafe { core::arch::asm!("rdtime {}", out(reg) ticks, options(nomem, nostack)) };
    ticks
}

/// Records the boot time. Call first thing in the kernel.
pub fn mark_boot() {
    CLOCK.mark_boot(now());
}

/// The tick count recorded by [`mark_boot`] (the timer starts at zero when QEMU starts).
pub fn boot_ticks() -> u64 {
    CLOCK.boot_ticks()
}

/// Reads the timebase from the device tree (after `BootInfo::read`) and stores it for
/// [`ticks_to_ns`].
pub fn calibrate() -> Calibration {
    let from_tree = super::boot_info::saved().and_then(|fdt| {
        let v = fdt.top_node("cpus")?.prop("timebase-frequency")?;
        // One cell, or two (a 64-bit value).
        match *v {
            [a, b, c, d] => Some(u64::from(u32::from_be_bytes([a, b, c, d]))),
            [a, b, c, d, e, f, g, h] => Some(u64::from_be_bytes([a, b, c, d, e, f, g, h])),
            _ => None,
        }
    });
    CLOCK.set_rate(from_tree)
}

/// Ticks per second (after [`calibrate`]).
pub fn hz() -> u64 {
    CLOCK.hz()
}

/// Converts ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    CLOCK.ticks_to_ns(ticks)
}

/// Nanoseconds since [`mark_boot`].
pub fn ns_since_boot() -> u64 {
    CLOCK.ns_since_boot(now())
}
