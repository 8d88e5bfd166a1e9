//! What every architecture's clock keeps besides reading its counter: the counter's rate
//! (measured or assumed) and the tick count at boot, with the conversions to nanoseconds. Each
//! `clock` module reads its own counter (`rdtsc`, `cntvct_el0`, `rdtime`) and finds its own rate
//! (the PIT, `cntfrq_el0`, the device tree), then hands both to a [`TickClock`].

use core::sync::atomic::{AtomicU64, Ordering};

use crate::common::Calibration;

/// A free-running tick counter's rate and boot mark.
pub struct TickClock {
    hz: AtomicU64,
    boot: AtomicU64,
    fallback_hz: u64,
}

impl TickClock {
    /// A clock that assumes `fallback_hz` until [`TickClock::set_rate`] says otherwise.
    pub const fn new(fallback_hz: u64) -> Self {
        Self {
            hz: AtomicU64::new(fallback_hz),
            boot: AtomicU64::new(0),
            fallback_hz,
        }
    }

    /// Records `now` (in ticks) as the boot time.
    pub fn mark_boot(&self, now: u64) {
        self.boot.store(now, Ordering::Relaxed);
    }

    /// The tick count recorded by [`TickClock::mark_boot`].
    pub fn boot_ticks(&self) -> u64 {
        self.boot.load(Ordering::Relaxed)
    }

    /// Takes `found` as the rate if it is one (non-zero), else keeps the fallback and reports
    /// the clock uncalibrated.
    pub fn set_rate(&self, found: Option<u64>) -> Calibration {
        let cal = match found {
            Some(hz) if hz > 0 => Calibration {
                hz,
                calibrated: true,
            },
            _ => Calibration {
                hz: self.fallback_hz,
                calibrated: false,
            },
        };
        self.hz.store(cal.hz, Ordering::Relaxed);
        cal
    }

    /// Ticks per second.
    pub fn hz(&self) -> u64 {
        self.hz.load(Ordering::Relaxed)
    }

    /// Converts ticks to nanoseconds.
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ((ticks as u128 * 1_000_000_000) / self.hz().max(1) as u128) as u64
    }

    /// Nanoseconds from the boot mark to `now` (in ticks).
    pub fn ns_since_boot(&self, now: u64) -> u64 {
        self.ticks_to_ns(now.wrapping_sub(self.boot_ticks()))
    }
}

#[cfg(test)]
mod tests {
    use super::TickClock;

    #[test]
    fn a_rate_found_is_used_and_zero_falls_back() {
        let c = TickClock::new(1_000);
        assert_eq!(c.hz(), 1_000);
        let cal = c.set_rate(Some(2_000_000));
        assert!(cal.calibrated && cal.hz == 2_000_000);
        assert_eq!(c.ticks_to_ns(2_000_000), 1_000_000_000);
        c.mark_boot(10);
        assert_eq!(c.ns_since_boot(12), 1_000);
        let cal = c.set_rate(Some(0));
        assert!(!cal.calibrated && cal.hz == 1_000);
        assert!(!c.set_rate(None).calibrated);
    }
}
