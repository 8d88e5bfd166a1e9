//! The clock: the time-stamp counter, calibrated against the 8254 PIT.
//!
//! The PIT ticks at 1.193182 MHz on every PC-compatible QEMU machine (microvm with `pit=on`
//! included). We count TSC cycles over 10 ms of PIT ticks. Every loop is bounded: without a PIT
//! the calibration falls back to a nominal frequency and says so.

use super::port::{inb, outb};
pub use crate::common::Calibration;
use crate::tick_clock::TickClock;

const PIT_HZ: u64 = 1_193_182;
const CALIBRATION_MS: u64 = 10;
/// Used when no PIT answers; reported as uncalibrated.
const FALLBACK_HZ: u64 = 1_000_000_000;

static CLOCK: TickClock = TickClock::new(FALLBACK_HZ);

/// The clock now, in ticks (the time-stamp counter).
#[inline]
pub fn now() -> u64 {
    // SAFETY: `rdtsc` has no side effects beyond reading a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Records the boot time-stamp. Call first thing in the kernel.
pub fn mark_boot() {
    CLOCK.mark_boot(now());
}

/// The tick count recorded by [`mark_boot`].
pub fn boot_ticks() -> u64 {
    CLOCK.boot_ticks()
}

/// Measures the TSC frequency against PIT channel 0 and stores it for [`ticks_to_ns`].
///
/// Channel 0 runs as a rate generator over the full 16-bit range and is sampled with latch
/// commands, which needs nothing but the PIT itself (microvm has no port 0x61 speaker gate, so
/// the classic channel-2 method does not work there). Interrupts are off, so reprogramming
/// channel 0 disturbs nobody. Without a PIT the counter never moves and we give up after at most
/// 200 ms (2e8 TSC cycles, a TSC of 1 GHz or more assumed).
pub fn calibrate() -> Calibration {
    let target = PIT_HZ * CALIBRATION_MS / 1000;
    // SAFETY: ports 0x40 and 0x43 are PIT channel 0 and its mode register; nothing else in the
    // kernel uses the PIT and interrupts are disabled.
    let measured = unsafe {
        outb(0x43, 0x34); // channel 0, lo/hi byte, mode 2 (rate generator), binary
        outb(0x40, 0);
        outb(0x40, 0); // reload value 0 = 65536
        let mut prev = read_pit0();
        let start = now();
        let mut elapsed = 0u64;
        let mut end = start;
        while elapsed < target && end.wrapping_sub(start) < 200_000_000 {
            let count = read_pit0();
            end = now();
            // Counting down and wrapping at 65536; sampled far more often than every 55 ms.
            elapsed += u64::from(prev.wrapping_sub(count));
            prev = count;
        }
        (elapsed >= target).then(|| end.wrapping_sub(start) * PIT_HZ / elapsed)
    };
    CLOCK.set_rate(measured)
}

/// Latches and reads PIT channel 0's current count.
///
/// # Safety
/// As in [`calibrate`]: the caller owns the PIT.
unsafe fn read_pit0() -> u16 {
    // SAFETY: the caller owns the PIT; a latch command followed by two reads of the latch.
    unsafe {
        outb(0x43, 0x00);
        let lo = inb(0x40);
        let hi = inb(0x40);
        u16::from_le_bytes([lo, hi])
    }
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
