//! The leaky buckets of one throttle group in motion (QEMU's `ThrottleState`, `util/throttle.c`):
//! levels that leak at the average rate, a burst level that leaks at the burst rate, the wait a
//! request must take before the next one may go, and the accounting of one that goes. The
//! arithmetic is QEMU's, in `f64` as QEMU does it, so the same options give the same schedule.

use super::config::{BucketKind, ThrottleConfig, BUCKETS};

const NS_PER_SEC: f64 = 1_000_000_000.0;

/// Which way a request goes: reads, or writes (data, zeroes and discards).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Reads.
    Read = 0,
    /// Writes, write-zeroes and discards.
    Write = 1,
}

/// The buckets a direction is checked against and charged to: (bytes, operations) total and
/// (bytes, operations) of its own direction.
const fn buckets_of(dir: Direction) -> [BucketKind; 4] {
    match dir {
        Direction::Read => [BucketKind::BpsTotal, BucketKind::OpsTotal, BucketKind::BpsRead, BucketKind::OpsRead],
        Direction::Write => [BucketKind::BpsTotal, BucketKind::OpsTotal, BucketKind::BpsWrite, BucketKind::OpsWrite],
    }
}

/// Levels of the six buckets and when they last leaked.
#[derive(Clone, Copy, Debug)]
pub struct Buckets {
    cfg: ThrottleConfig,
    level: [f64; 6],
    burst_level: [f64; 6],
    previous_leak: u64,
}

impl Buckets {
    /// Empty buckets for `cfg`, leaking from `now_ns`.
    pub fn new(cfg: ThrottleConfig, now_ns: u64) -> Self {
        Self { cfg, level: [0.0; 6], burst_level: [0.0; 6], previous_leak: now_ns }
    }

    /// The limits.
    pub fn config(&self) -> &ThrottleConfig {
        &self.cfg
    }

    /// Leaks every bucket for the time since the last leak (QEMU's `throttle_do_leak`).
    fn leak(&mut self, now_ns: u64) {
        let delta = now_ns.saturating_sub(self.previous_leak);
        self.previous_leak = self.previous_leak.max(now_ns);
        if delta == 0 {
            return;
        }
        for kind in BUCKETS {
            let (i, b) = (kind as usize, self.cfg.buckets[kind as usize]);
            let leak = b.avg as f64 * delta as f64 / NS_PER_SEC;
            self.level[i] = (self.level[i] - leak).max(0.0);
            if b.burst_length > 1 {
                let leak = b.max as f64 * delta as f64 / NS_PER_SEC;
                self.burst_level[i] = (self.burst_level[i] - leak).max(0.0);
            }
        }
    }

    /// Nanoseconds one bucket makes the next request wait (QEMU's `throttle_compute_wait`):
    /// without a burst rate a tenth of a second's worth may pass at once; with one, the burst
    /// bucket holds `max * burst_length` and the burst itself is paced at `max`.
    fn wait_of(&self, kind: BucketKind) -> u64 {
        let (i, b) = (kind as usize, self.cfg.buckets[kind as usize]);
        if b.avg == 0 {
            return 0;
        }
        let (size, burst_size) = if b.max == 0 {
            (b.avg as f64 / 10.0, 0.0)
        } else {
            (b.max as f64 * b.burst_length as f64, b.max as f64 / 10.0)
        };
        let extra = self.level[i] - size;
        if extra > 0.0 {
            return (extra * NS_PER_SEC / b.avg as f64) as u64;
        }
        if b.burst_length > 1 && b.max > 0 {
            let extra = self.burst_level[i] - burst_size;
            if extra > 0.0 {
                return (extra * NS_PER_SEC / b.max as f64) as u64;
            }
        }
        0
    }

    /// Leaks up to `now_ns`, then the nanoseconds the next request in `dir` must wait (0: it
    /// may go now). QEMU's `throttle_compute_timer`.
    pub fn wait_ns(&mut self, dir: Direction, now_ns: u64) -> u64 {
        self.leak(now_ns);
        buckets_of(dir).iter().map(|&k| self.wait_of(k)).max().unwrap_or(0)
    }

    /// Charges a request of `bytes` in `dir` that goes now (QEMU's `throttle_account`).
    pub fn account(&mut self, dir: Direction, bytes: u64) {
        let units = if self.cfg.op_size != 0 && bytes > self.cfg.op_size { bytes as f64 / self.cfg.op_size as f64 } else { 1.0 };
        let [bps_total, ops_total, bps_dir, ops_dir] = buckets_of(dir);
        for (kind, amount) in [(bps_total, bytes as f64), (ops_total, units), (bps_dir, bytes as f64), (ops_dir, units)] {
            let i = kind as usize;
            self.level[i] += amount;
            if self.cfg.buckets[i].burst_length > 1 {
                self.burst_level[i] += amount;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests
    use super::*;
    use crate::io::throttle::config::BucketLimit;

    fn iops(avg: u64, max: u64, burst_length: u64) -> ThrottleConfig {
        let mut cfg = ThrottleConfig::UNLIMITED;
        cfg.buckets[BucketKind::OpsTotal as usize] = BucketLimit { avg, max, burst_length };
        cfg
    }

    /// Requests let through at `now`, going as soon as allowed, over `ns`.
    fn served(b: &mut Buckets, ns: u64) -> u64 {
        let (mut now, mut n) = (0u64, 0u64);
        while now <= ns {
            let wait = b.wait_ns(Direction::Read, now);
            if wait == 0 {
                b.account(Direction::Read, 4096);
                n += 1;
            } else {
                now += wait;
            }
        }
        n
    }

    #[test]
    fn average_rate_after_a_tenth_of_a_second_of_slack() {
        // 100/s: 10 at once (the bucket holds avg / 10), then 100 per second.
        let mut b = Buckets::new(iops(100, 0, 1), 0);
        let n = served(&mut b, 2_000_000_000);
        assert!((209..=212).contains(&n), "{n}");
    }

    #[test]
    fn bursts_at_max_for_max_length_seconds() {
        // avg 100, max 1000 for 2 s: the first 2 s run at ~1000/s, then ~100/s.
        let mut b = Buckets::new(iops(100, 1000, 2), 0);
        let burst = served(&mut b, 1_000_000_000);
        assert!((990..=1110).contains(&burst), "{burst}");
    }

    #[test]
    fn large_requests_count_as_several_operations() {
        let mut cfg = iops(10, 0, 1);
        cfg.op_size = 4096;
        let mut b = Buckets::new(cfg, 0);
        b.account(Direction::Write, 4096 * 4);
        assert!(b.wait_ns(Direction::Write, 0) > 0);
        assert_eq!(b.wait_ns(Direction::Read, 1_000_000_000), 0);
    }

    #[test]
    fn reads_and_writes_have_their_own_buckets() {
        let mut cfg = ThrottleConfig::UNLIMITED;
        cfg.buckets[BucketKind::BpsWrite as usize] = BucketLimit { avg: 1000, max: 0, burst_length: 1 };
        let mut b = Buckets::new(cfg, 0);
        b.account(Direction::Write, 1 << 20);
        assert!(b.wait_ns(Direction::Write, 0) > 0);
        assert_eq!(b.wait_ns(Direction::Read, 0), 0);
    }
}
