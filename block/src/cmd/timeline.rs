//! Completions per time interval for benchmarks (the kernel's `bench`, `img bench`): a fixed
//! array of [`SLOTS`] counters whose interval doubles whenever the run outgrows it, so a run of
//! any length ends with between `SLOTS / 2` and `SLOTS` intervals (fewer only when it is shorter
//! than `SLOTS / 2` base intervals). No allocation; recording is one division and one add, or
//! a shift and one add when the interval is a power of two (a division is tens of cycles, which
//! a benchmark of 1 µs requests feels).

/// Counters in a [`Timeline`].
pub const SLOTS: usize = 64;

/// Completions counted per interval since a start time, in any monotonic clock's units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    counts: [u64; SLOTS],
    start: u64,
    interval: u64,
}

impl Timeline {
    /// A timeline starting at `start` with intervals of `interval` units (at least 1).
    pub const fn new(start: u64, interval: u64) -> Self {
        Self {
            counts: [0; SLOTS],
            start,
            interval: if interval == 0 { 1 } else { interval },
        }
    }

    /// Counts one completion at time `now` (a time before the start counts in the first slot).
    pub fn record(&mut self, now: u64) {
        let slot = self.fit(now);
        self.counts[slot] = self.counts[slot].saturating_add(1);
    }

    /// Ends the run at `end`: widens the interval until `end` falls in the last slot or before,
    /// so the slots up to [`Timeline::used`] cover the whole run.
    pub fn finish(&mut self, end: u64) {
        self.fit(end.saturating_sub(1).max(self.start));
    }

    /// The slots covering `start..end` (the last may be partial): `ceil((end - start) /
    /// interval)` counters, at most [`SLOTS`]. Call [`Timeline::finish`] first.
    pub fn used(&self, end: u64) -> &[u64] {
        let span = end.saturating_sub(self.start);
        let n = span.div_ceil(self.interval).min(SLOTS as u64) as usize;
        &self.counts[..n]
    }

    /// The interval, in clock units.
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// The slot of time `now`, after widening the interval as needed.
    fn fit(&mut self, now: u64) -> usize {
        loop {
            let since = now.saturating_sub(self.start);
            let slot = if self.interval.is_power_of_two() { since >> self.interval.trailing_zeros() } else { since / self.interval };
            if slot < SLOTS as u64 {
                return slot as usize;
            }
            self.widen();
        }
    }

    /// Doubles the interval: slot `i` becomes slots `2i` and `2i + 1` added together.
    fn widen(&mut self) {
        for i in 0..SLOTS / 2 {
            self.counts[i] = self.counts[2 * i].saturating_add(self.counts[2 * i + 1]);
        }
        self.counts[SLOTS / 2..].fill(0);
        self.interval = self.interval.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_interval() {
        let mut t = Timeline::new(1000, 10);
        for now in [1000, 1009, 1010, 1035] {
            t.record(now);
        }
        t.finish(1040);
        assert_eq!(t.used(1040), &[2, 1, 0, 1]);
        assert_eq!(t.interval(), 10);
        // A partial last slot still counts.
        assert_eq!(t.used(1031).len(), 4);
    }

    #[test]
    fn widens_and_keeps_every_completion() {
        let mut t = Timeline::new(0, 1);
        for now in 0..1000 {
            t.record(now);
        }
        t.finish(1000);
        assert_eq!(t.interval(), 16);
        let used = t.used(1000);
        assert_eq!(used.len(), 63);
        assert_eq!(used.iter().sum::<u64>(), 1000);
        assert!(used[..62].iter().all(|&c| c == 16));
        assert_eq!(used[62], 1000 - 62 * 16);
    }

    #[test]
    fn finish_widens_for_an_idle_tail() {
        let mut t = Timeline::new(0, 1);
        t.record(0);
        t.finish(200);
        assert_eq!(t.interval(), 4);
        assert_eq!(t.used(200).len(), 50);
        assert_eq!(t.used(200)[0], 1);
        // An empty run uses no slots; a zero interval is taken as 1.
        let t = Timeline::new(5, 0);
        assert!(t.used(5).is_empty());
        assert_eq!(t.interval(), 1);
    }
}
