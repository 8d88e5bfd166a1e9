//! The clock: the `time` CSR (`rdtime`), at the device tree's `/cpus/timebase-frequency`
//! (10 MHz on QEMU's `virt`).

pub use crate::common::Calibration;
use core::sync::atomic::{AtomicU64, Ordering};

/// QEMU `virt`'s timebase, used when the device tree gives none; reported as uncalibrated.
const FALLBACK_HZ: u64 = 10_000_000;

static HZ: AtomicU64 = AtomicU64::new(FALLBACK_HZ);
static BOOT_TICKS: AtomicU64 = AtomicU64::new(0);

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
    BOOT_TICKS.store(now(), Ordering::Relaxed);
}

/// The tick count recorded by [`mark_boot`] (the timer starts at zero when QEMU starts).
pub fn boot_ticks() -> u64 {
    BOOT_TICKS.load(Ordering::Relaxed)
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
    let cal = match from_tree {
        Some(hz) if hz > 0 => Calibration {
            hz,
            calibrated: true,
        },
        _ => Calibration {
            hz: FALLBACK_HZ,
            calibrated: false,
        },
    };
    HZ.store(cal.hz, Ordering::Relaxed);
    cal
}

/// Ticks per second (after [`calibrate`]).
pub fn hz() -> u64 {
    HZ.load(Ordering::Relaxed)
}

/// Converts ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ((ticks as u128 * 1_000_000_000) / hz().max(1) as u128) as u64
}

/// Nanoseconds since [`mark_boot`].
pub fn ns_since_boot() -> u64 {
    ticks_to_ns(now().wrapping_sub(boot_ticks()))
}
