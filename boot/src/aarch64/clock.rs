//! The clock: the generic timer's virtual counter (CNTVCT_EL0) at the frequency firmware or
//! QEMU put in CNTFRQ_EL0 (62.5 MHz or 1 GHz on `virt`, depending on the machine version).

pub use crate::common::Calibration;
use crate::tick_clock::TickClock;

/// Used when CNTFRQ_EL0 reads zero (no firmware set it); reported as uncalibrated.
const FALLBACK_HZ: u64 = 62_500_000;

static CLOCK: TickClock = TickClock::new(FALLBACK_HZ);

/// The clock now, in ticks.
#[inline]
pub fn now() -> u64 {
    let ticks: u64;
    // SAFETY: reading the virtual counter, which EL1 may always do, has no side effects; the
    // `isb` keeps the read from being hoisted above earlier instructions.
    unsafe {
        core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) ticks, options(nomem, nostack))
    };
    ticks
}

/// Records the boot time. Call first thing in the kernel.
pub fn mark_boot() {
    CLOCK.mark_boot(now());
}

/// The tick count recorded by [`mark_boot`] (the counter starts near zero when QEMU starts).
pub fn boot_ticks() -> u64 {
    CLOCK.boot_ticks()
}

/// Reads the counter's frequency from CNTFRQ_EL0 and stores it for [`ticks_to_ns`].
pub fn calibrate() -> Calibration {
    let hz: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) hz, options(nomem, nostack)) };
    CLOCK.set_rate(Some(hz & 0xffff_ffff))
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
