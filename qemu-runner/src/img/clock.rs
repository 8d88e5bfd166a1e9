//! The `img` commands' accounting clock: nanoseconds on the monotonic clock, read twice per
//! request by every backend (QEMU's `block_acct_start`/`done`).
//!
//! `clock_gettime` through the vDSO costs about 25–40 ns here, a `rdtsc` about 10: on a
//! 1 µs read, the two readings per request are 5% of it. So on x86_64, where the kernel itself
//! keeps time with the TSC (its clocksource is `tsc`: invariant, and synchronised across CPUs),
//! the clock counts TSC ticks and scales them to nanoseconds. The scale is calibrated against
//! `CLOCK_MONOTONIC` over the process's first [`CALIBRATE_NS`] of readings, which are
//! `clock_gettime`'s own; from the calibration point on, readings continue from
//! `CLOCK_MONOTONIC`'s value there, so the clock never steps. Elsewhere it is `clock_gettime`.
//!
//! Each calibration point pairs a `clock_gettime` reading with the TSC read just before and
//! just after it, and is used only if those two are close ([`PAIR_TICKS`]): a thread preempted
//! between the two clocks (a loaded machine) would otherwise skew the rate by the time it lost.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// How long readings come from `clock_gettime` while the TSC's rate is measured: long enough
/// that `clock_gettime`'s own jitter (tens of ns) is a 10⁻⁵ error on the rate.
const CALIBRATE_NS: u64 = 5_000_000;

/// Most TSC ticks around a `clock_gettime` reading for the pair to count (about 2 µs at
/// 2–4 GHz; the reading itself takes tens of ns).
const PAIR_TICKS: u64 = 8_000;

/// The calibration's start (`START_TSC`, `START_NS`, 0: not yet) and result: nanoseconds per
/// tick as a 32.32 fixed-point number (`SCALE`, 0: not calibrated yet, and never where the TSC
/// is not usable), anchored at `BASE_TSC`/`BASE_NS`.
static START_TSC: AtomicU64 = AtomicU64::new(0);
static START_NS: AtomicU64 = AtomicU64::new(0);
static BASE_TSC: AtomicU64 = AtomicU64::new(0);
static BASE_NS: AtomicU64 = AtomicU64::new(0);
static SCALE: AtomicU64 = AtomicU64::new(0);
/// 0: not yet asked, 1: the TSC is usable, 2: it is not.
static TSC_OK: AtomicU8 = AtomicU8::new(0);

/// Nanoseconds since an arbitrary start; never goes backwards.
pub fn now_ns() -> u64 {
    let scale = SCALE.load(Ordering::Acquire);
    if scale != 0 {
        let ticks = tsc().wrapping_sub(BASE_TSC.load(Ordering::Relaxed));
        return BASE_NS.load(Ordering::Relaxed) + ((u128::from(ticks) * u128::from(scale)) >> 32) as u64;
    }
    if !tsc_usable() {
        return monotonic_ns();
    }
    let (t0, ns, t1) = (tsc(), monotonic_ns(), tsc());
    let span = t1.wrapping_sub(t0);
    if span <= PAIR_TICKS {
        calibrate(t0.wrapping_add(span / 2), ns);
    }
    ns
}

/// One step of the calibration at a `clock_gettime` reading `ns` taken at TSC `t`: the first
/// pair starts it, the first one [`CALIBRATE_NS`] later ends it. Readings from two threads at
/// once may start or end it twice; each result is a valid scale and anchor, and `SCALE` is
/// published last.
fn calibrate(t: u64, ns: u64) {
    let start_ns = START_NS.load(Ordering::Acquire);
    if start_ns == 0 {
        START_TSC.store(t, Ordering::Relaxed);
        START_NS.store(ns.max(1), Ordering::Release);
        return;
    }
    let start_tsc = START_TSC.load(Ordering::Relaxed);
    let (elapsed_ns, ticks) = (ns.saturating_sub(start_ns), t.wrapping_sub(start_tsc));
    if elapsed_ns < CALIBRATE_NS || ticks == 0 {
        return;
    }
    let scale = ((u128::from(elapsed_ns) << 32) / u128::from(ticks)) as u64;
    if scale == 0 {
        return;
    }
    BASE_TSC.store(t, Ordering::Relaxed);
    BASE_NS.store(ns, Ordering::Relaxed);
    SCALE.store(scale, Ordering::Release);
}

/// True if the TSC can stand in for the monotonic clock: the kernel's own clocksource is the
/// TSC (it checked that the TSC is invariant and in step across CPUs).
fn tsc_usable() -> bool {
    match TSC_OK.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let ok = cfg!(target_arch = "x86_64")
                && std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
                    .is_ok_and(|s| s.trim() == "tsc");
            TSC_OK.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
            ok
        }
    }
}

fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions on x86_64; it only reads the time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock never goes backwards and keeps pace with `CLOCK_MONOTONIC` across the
    /// calibration: within 1% over 50 ms, far beyond its error. Each end of the span is a
    /// reading of this clock between two of `CLOCK_MONOTONIC`, so a preemption between them
    /// (a loaded machine) widens the allowed range instead of failing the test.
    #[test]
    fn monotonic_and_in_step() {
        let bracket = || {
            let before = monotonic_ns();
            let clock = now_ns();
            (before, clock, monotonic_ns())
        };
        let (before0, first, after0) = bracket();
        let mut last = first;
        while monotonic_ns() - after0 < 50_000_000 {
            let now = now_ns();
            assert!(now >= last, "clock went back: {last} -> {now}");
            last = now;
        }
        let (before1, end, after1) = bracket();
        let (shortest, longest) = (before1 - after0, after1 - before0);
        let clock = end - first;
        assert!(
            clock >= shortest - shortest / 100 && clock <= longest + longest / 100,
            "clock {clock} ns; monotonic between {shortest} and {longest} ns"
        );
    }
}
