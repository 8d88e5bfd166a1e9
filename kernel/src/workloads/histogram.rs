//! A latency histogram with ~3% resolution (log-linear buckets: 32 per power of two), for
//! percentiles finer than the backend's power-of-two buckets. For reports it folds into
//! half-octave buckets ([`Histogram::half_octaves`]): few enough to print, fine enough to plot.

/// Sub-buckets per power of two (as bits).
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;
/// Half-octave buckets: `[0, 1)`, `[1, 2)`, then two per power of two up to 2^64.
pub const HALF_OCTAVES: usize = 128;

/// Counts of values (clock ticks).
pub struct Histogram {
    counts: [u32; BUCKETS],
    total: u64,
    max: u64,
    sum: u64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self { counts: [0; BUCKETS], total: 0, max: 0, sum: 0 }
    }

    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = exp - SUB_BITS;
        let mantissa = (v >> shift) & (SUB - 1);
        ((u64::from(shift) + 1) * SUB + mantissa) as usize
    }

    /// The largest value in bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < SUB {
            return i;
        }
        let shift = i / SUB - 1;
        let mantissa = i % SUB;
        ((SUB + mantissa + 1) << shift).saturating_sub(1)
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(Self::index(v)) {
            *c = c.saturating_add(1);
        }
        self.total += 1;
        self.sum = self.sum.saturating_add(v);
        self.max = self.max.max(v);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Mean value.
    pub fn mean(&self) -> u64 {
        self.sum / self.total.max(1)
    }

    /// Largest value.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The counts folded into half-octave buckets (see [`half_octave_bounds`]). A fine bucket
    /// never straddles a half-octave boundary (for values of 32 and up, 32 sub-buckets per power
    /// of two; below that, one value each), so its top value places it.
    pub fn half_octaves(&self) -> [u64; HALF_OCTAVES] {
        let mut out = [0u64; HALF_OCTAVES];
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 {
                out[half_octave(Self::upper(i))] += u64::from(n);
            }
        }
        out
    }

    /// The value below which `per_mille`/1000 of the values fall (the top of its bucket, at most
    /// the maximum).
    pub fn percentile(&self, per_mille: u64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let want = (self.total * per_mille.min(1000)).div_ceil(1000).max(1);
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += u64::from(n);
            if seen >= want {
                return Self::upper(i).min(self.max);
            }
        }
        self.max
    }
}

/// The half-octave bucket of `v`: 0 and 1 alone, then `[2^k, 1.5 * 2^k)` and `[1.5 * 2^k,
/// 2^(k+1))` for each `k >= 1`.
fn half_octave(v: u64) -> usize {
    if v < 2 {
        return v as usize;
    }
    let k = 63 - v.leading_zeros();
    let half = (v >> (k - 1)) & 1;
    (2 * k as usize + half as usize).min(HALF_OCTAVES - 1)
}

/// The values of half-octave bucket `j`: `[lo, hi)` (`hi` saturates at `u64::MAX`).
pub fn half_octave_bounds(j: usize) -> (u64, u64) {
    if j < 2 {
        return (j as u64, j as u64 + 1);
    }
    let k = (j / 2) as u32;
    let half = (j % 2) as u64;
    let step = 1u64 << (k - 1);
    let lo = (2 + half) << (k - 1);
    (lo, lo.saturating_add(step))
}
