//! A benchmark's series, as `--json` reports them and `--plot` draws them: the latency histogram
//! (requests per latency bucket) and completions per time interval (IOPS over time).
//!
//! Two sources, one shape. `img bench` gives the backend's log2 histogram
//! ([`log2_buckets`]) and a [`Timeline`] it filled on the host ([`IopsSeries::from_timeline`]);
//! `boot` decodes the guest's `bench_latency` and `bench_series` records ([`from_records`];
//! `kernel/src/workloads/bench.rs` writes them).

use serde::Serialize;
use serde_json::Value;
use strata_block::cmd::timeline::Timeline;

/// Requests whose latency fell in `[lo_ns, hi_ns)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LatencyBucket {
    /// The bucket's lowest latency, ns.
    pub lo_ns: u64,
    /// The bucket's end (exclusive), ns.
    pub hi_ns: u64,
    /// Requests in the bucket.
    pub count: u64,
}

/// Completions per interval of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IopsSeries {
    /// Each interval's length in ns (the last is shorter when the run ended inside it).
    pub interval_ns: u64,
    /// The run's length in ns.
    pub elapsed_ns: u64,
    /// Requests completed in each interval.
    pub counts: Vec<u64>,
    /// IOPS in each interval: its count over its length (the last one's partial length).
    pub iops: Vec<u64>,
}

/// Both series of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BenchSeries {
    /// Buckets in increasing latency, from the first non-empty one to the last.
    pub latency_histogram: Vec<LatencyBucket>,
    /// IOPS over time.
    pub iops_series: IopsSeries,
}

impl IopsSeries {
    /// A series of `counts` per `interval_ns` over a run of `elapsed_ns`.
    pub fn new(interval_ns: u64, elapsed_ns: u64, counts: Vec<u64>) -> Self {
        let interval_ns = interval_ns.max(1);
        let mut s = Self {
            interval_ns,
            elapsed_ns,
            counts,
            iops: Vec::new(),
        };
        s.iops = (0..s.counts.len())
            .map(|i| {
                let secs = s.width_ns(i) as f64 / 1e9;
                (s.counts[i] as f64 / secs.max(1e-9)).round() as u64
            })
            .collect();
        s
    }

    /// The series of a finished `timeline` whose clock counts ns, over a run of `elapsed_ns`
    /// that started at the timeline's start.
    pub fn from_timeline(timeline: &Timeline, start_ns: u64, elapsed_ns: u64) -> Self {
        let end = start_ns.saturating_add(elapsed_ns);
        Self::new(timeline.interval(), elapsed_ns, timeline.used(end).to_vec())
    }

    /// Interval `i`'s start, in ns since the run's start.
    pub fn start_ns(&self, i: usize) -> u64 {
        (i as u64).saturating_mul(self.interval_ns)
    }

    /// Interval `i`'s length in ns: the interval, or what the run left of it (at least 1).
    pub fn width_ns(&self, i: usize) -> u64 {
        self.interval_ns
            .min(self.elapsed_ns.saturating_sub(self.start_ns(i)))
            .max(1)
    }
}

/// The buckets of the block layer's histogram (`KindStats::histogram`: bucket `i` holds
/// `[2^i, 2^(i+1))` ns, bucket 0 also 0 ns), from the first non-empty one to the last.
pub fn log2_buckets(histogram: &[u64]) -> Vec<LatencyBucket> {
    let Some(first) = histogram.iter().position(|&n| n > 0) else {
        return Vec::new();
    };
    let last = histogram.iter().rposition(|&n| n > 0).unwrap_or(first);
    (first..=last)
        .map(|i| LatencyBucket {
            lo_ns: if i == 0 { 0 } else { 1u64 << i.min(63) },
            hi_ns: 1u64.checked_shl(i as u32 + 1).unwrap_or(u64::MAX),
            count: histogram[i],
        })
        .collect()
}

/// The series in a guest's records: every `bench_latency` record's buckets in order, and the
/// `bench_series` record. `None` without a `bench_series` record (no bench ran, or it failed).
pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Value>) -> Option<BenchSeries> {
    let mut latency_histogram = Vec::new();
    let mut iops_series = None;
    for r in records {
        match r.get("type").and_then(Value::as_str) {
            Some("bench_latency") => {
                let (lo, hi, count) = (
                    numbers(r, "lo_ns"),
                    numbers(r, "hi_ns"),
                    numbers(r, "count"),
                );
                for ((lo_ns, hi_ns), count) in lo.into_iter().zip(hi).zip(count) {
                    latency_histogram.push(LatencyBucket {
                        lo_ns,
                        hi_ns,
                        count,
                    });
                }
            }
            Some("bench_series") => {
                let field = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
                iops_series = Some(IopsSeries::new(
                    field("interval_ns"),
                    field("ns"),
                    numbers(r, "counts"),
                ));
            }
            _ => {}
        }
    }
    Some(BenchSeries {
        latency_histogram,
        iops_series: iops_series?,
    })
}

/// The numbers in array field `key` of `record` (non-numbers skipped).
fn numbers(record: &Value, key: &str) -> Vec<u64> {
    record
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_buckets_trim_to_the_used_range() {
        let mut h = [0u64; 40];
        h[10] = 3;
        h[12] = 5;
        let b = log2_buckets(&h);
        assert_eq!(b.len(), 3);
        assert_eq!(
            b[0],
            LatencyBucket {
                lo_ns: 1024,
                hi_ns: 2048,
                count: 3
            }
        );
        assert_eq!(b[1].count, 0);
        assert_eq!(
            b[2],
            LatencyBucket {
                lo_ns: 4096,
                hi_ns: 8192,
                count: 5
            }
        );
        assert!(log2_buckets(&[0; 40]).is_empty());
        assert_eq!(
            log2_buckets(&[7])[0],
            LatencyBucket {
                lo_ns: 0,
                hi_ns: 2,
                count: 7
            }
        );
    }

    #[test]
    fn iops_use_each_interval_length() {
        // 100 ms intervals over 250 ms: the last is 50 ms long.
        let s = IopsSeries::new(100_000_000, 250_000_000, vec![1000, 2000, 500]);
        assert_eq!(s.iops, vec![10_000, 20_000, 10_000]);
        assert_eq!(s.width_ns(2), 50_000_000);
        assert_eq!(IopsSeries::new(0, 0, vec![]).iops, Vec::<u64>::new());
    }

    #[test]
    fn from_a_timeline() {
        let mut t = Timeline::new(1_000, 1_000_000);
        for i in 0..30u64 {
            t.record(1_000 + i * 100_000);
        }
        t.finish(1_000 + 3_000_000);
        let s = IopsSeries::from_timeline(&t, 1_000, 3_000_000);
        assert_eq!(s.counts, vec![10, 10, 10]);
        assert_eq!(s.iops, vec![10_000; 3]);
    }

    #[test]
    fn json_shape() {
        let s = BenchSeries {
            latency_histogram: vec![LatencyBucket {
                lo_ns: 1,
                hi_ns: 2,
                count: 3,
            }],
            iops_series: IopsSeries::new(10, 20, vec![4, 5]),
        };
        let v = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(
            v["latency_histogram"][0],
            serde_json::json!({"lo_ns": 1, "hi_ns": 2, "count": 3})
        );
        assert_eq!(
            v["iops_series"],
            serde_json::json!({"interval_ns": 10, "elapsed_ns": 20, "counts": [4, 5], "iops": [400_000_000, 500_000_000]})
        );
    }

    #[test]
    fn decodes_guest_records() {
        let records = [
            serde_json::json!({"type": "bench", "iops": 5}),
            serde_json::json!({"type": "bench_latency", "lo_ns": [1000, 1500], "hi_ns": [1500, 2000], "count": [4, 6]}),
            serde_json::json!({"type": "bench_latency", "lo_ns": [2000], "hi_ns": [3000], "count": [1]}),
            serde_json::json!({"type": "bench_series", "interval_ns": 1_000_000, "ns": 2_000_000, "counts": [5, 6]}),
        ];
        let s = from_records(&records).unwrap_or_default();
        assert_eq!(s.latency_histogram.len(), 3);
        assert_eq!(
            s.latency_histogram[2],
            LatencyBucket {
                lo_ns: 2000,
                hi_ns: 3000,
                count: 1
            }
        );
        assert_eq!(s.iops_series.counts, vec![5, 6]);
        assert_eq!(s.iops_series.iops, vec![5000, 6000]);
        assert!(from_records(&records[..2]).is_none());
    }
}
