//! Accounting per backend (QEMU's `BlockAcctStats`): operations, bytes, errors and a latency
//! histogram per kind, and the highest offset written.

/// Kinds of accounted operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Reads.
    Read = 0,
    /// Writes (including zero writes detected and turned into write-zeroes).
    Write = 1,
    /// Write-zeroes.
    WriteZeroes = 2,
    /// Discards.
    Discard = 3,
    /// Flushes.
    Flush = 4,
}

/// Number of [`OpKind`]s.
pub const KINDS: usize = 5;

/// Histogram buckets: bucket `i` counts latencies in `[2^i, 2^(i+1))` ns (bucket 0 also 0 ns).
pub const BUCKETS: usize = 40;

/// Counters of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindStats {
    /// Operations completed successfully.
    pub ops: u64,
    /// Bytes moved by them.
    pub bytes: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Sum of latencies in ns.
    pub total_ns: u64,
    /// Latency histogram (log2 buckets of ns).
    pub histogram: [u64; BUCKETS],
}

impl KindStats {
    const ZERO: Self = Self { ops: 0, bytes: 0, errors: 0, total_ns: 0, histogram: [0; BUCKETS] };

    /// An upper bound of the latency below which `per_mille`/1000 of operations fall, in ns
    /// (the top of its bucket): `percentile_ns(500)` is the median, `percentile_ns(999)` p99.9.
    pub fn percentile_ns(&self, per_mille: u64) -> u64 {
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = (total * per_mille.min(1000)).div_ceil(1000).max(1);
        let mut seen = 0;
        for (i, &n) in self.histogram.iter().enumerate() {
            seen += n;
            if seen >= want {
                return (1u64 << (i + 1)) - 1;
            }
        }
        u64::MAX
    }
}

/// A backend's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Per kind, indexed by [`OpKind`].
    pub kinds: [KindStats; KINDS],
    /// Highest byte offset written so far (end of the furthest write), QEMU's
    /// `wr_highest_offset`.
    pub wr_highest_offset: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self { kinds: [KindStats::ZERO; KINDS], wr_highest_offset: 0 }
    }
}

impl Stats {
    /// The counters of `kind`.
    pub fn kind(&self, kind: OpKind) -> &KindStats {
        &self.kinds[kind as usize]
    }

    /// Records one operation.
    pub(crate) fn record(&mut self, kind: OpKind, bytes: u64, latency_ns: u64, ok: bool) {
        let k = &mut self.kinds[kind as usize];
        if ok {
            k.ops += 1;
            k.bytes += bytes;
            k.total_ns = k.total_ns.saturating_add(latency_ns);
            let bucket = (63 - latency_ns.max(1).leading_zeros()) as usize;
            k.histogram[bucket.min(BUCKETS - 1)] += 1;
        } else {
            k.errors += 1;
        }
    }
}
