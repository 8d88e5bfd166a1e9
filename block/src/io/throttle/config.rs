//! A throttle group's limits (QEMU's `ThrottleLimits` / `ThrottleConfig`, `util/throttle.c`):
//! six leaky buckets — bytes and operations, each in total, read and write — with an average
//! rate, an optional burst rate (`*-max`) held for `*-max-length` seconds, and the operation
//! size (`iops-size`) past which a request counts as several operations. Parsed from the
//! `limits.*` keys of a `throttle-group` object and checked with QEMU's rules and messages.

use crate::error::{Error, Result};
use crate::options::OptionsView;

/// QEMU's `THROTTLE_VALUE_MAX`: the largest rate or burst.
pub const VALUE_MAX: u64 = 1_000_000_000_000_000;

/// Which bucket (QEMU's `BucketType`, same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketKind {
    /// `bps-total`.
    BpsTotal,
    /// `bps-read`.
    BpsRead,
    /// `bps-write`.
    BpsWrite,
    /// `iops-total`.
    OpsTotal,
    /// `iops-read`.
    OpsRead,
    /// `iops-write`.
    OpsWrite,
}

/// Every bucket, in [`BucketKind`] order.
pub const BUCKETS: [BucketKind; 6] =
    [BucketKind::BpsTotal, BucketKind::BpsRead, BucketKind::BpsWrite, BucketKind::OpsTotal, BucketKind::OpsRead, BucketKind::OpsWrite];

impl BucketKind {
    /// The option names of this bucket: rate, burst rate, burst length.
    const fn keys(self) -> [&'static str; 3] {
        match self {
            BucketKind::BpsTotal => ["bps-total", "bps-total-max", "bps-total-max-length"],
            BucketKind::BpsRead => ["bps-read", "bps-read-max", "bps-read-max-length"],
            BucketKind::BpsWrite => ["bps-write", "bps-write-max", "bps-write-max-length"],
            BucketKind::OpsTotal => ["iops-total", "iops-total-max", "iops-total-max-length"],
            BucketKind::OpsRead => ["iops-read", "iops-read-max", "iops-read-max-length"],
            BucketKind::OpsWrite => ["iops-write", "iops-write-max", "iops-write-max-length"],
        }
    }
}

/// One bucket's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketLimit {
    /// Average rate (per second); 0: no limit.
    pub avg: u64,
    /// Burst rate (per second); 0: none.
    pub max: u64,
    /// Seconds a burst at `max` may last (at least 1).
    pub burst_length: u64,
}

impl BucketLimit {
    const NONE: Self = Self { avg: 0, max: 0, burst_length: 1 };
}

/// A group's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// By [`BucketKind`] index.
    pub buckets: [BucketLimit; 6],
    /// `iops-size`: a request larger than this counts as `size / iops-size` operations (0: one).
    pub op_size: u64,
}

/// Every key a `throttle-group` object takes below `limits.`.
pub const LIMIT_KEYS: &[&str] = &[
    "bps-total", "bps-total-max", "bps-total-max-length", "bps-read", "bps-read-max", "bps-read-max-length", "bps-write",
    "bps-write-max", "bps-write-max-length", "iops-total", "iops-total-max", "iops-total-max-length", "iops-read",
    "iops-read-max", "iops-read-max-length", "iops-write", "iops-write-max", "iops-write-max-length", "iops-size",
];

impl ThrottleConfig {
    /// No limits at all.
    pub const UNLIMITED: Self = Self { buckets: [BucketLimit::NONE; 6], op_size: 0 };

    /// The limits under `limits.` in `opts` (the object's own keys, such as `id`, are the
    /// caller's), checked as QEMU's `throttle_is_valid`.
    pub fn parse(opts: &OptionsView<'_, '_>) -> Result<Self> {
        let mut cfg = Self::UNLIMITED;
        let Some(limits) = opts.child("limits") else { return Ok(cfg) };
        limits.check_only(LIMIT_KEYS)?;
        for kind in BUCKETS {
            let [avg, max, length] = kind.keys();
            let b = &mut cfg.buckets[kind as usize];
            if let Some(v) = limits.get(avg) {
                b.avg = v.parse_u64().map_err(Error::bad_value)?;
            }
            if let Some(v) = limits.get(max) {
                b.max = v.parse_u64().map_err(Error::bad_value)?;
            }
            if let Some(v) = limits.get(length) {
                b.burst_length = v.parse_u64().map_err(Error::bad_value)?;
                if b.burst_length > u64::from(u32::MAX) {
                    return Err(Error::BadOption { key: length, why: "must be in the range [0, 4294967295]" });
                }
            }
        }
        if let Some(v) = limits.get("iops-size") {
            cfg.op_size = v.parse_u64().map_err(Error::bad_value)?;
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// QEMU's `throttle_is_valid`, with its messages.
    pub fn check(&self) -> Result<()> {
        let b = |k: BucketKind| self.buckets[k as usize];
        let conflict = |total: BucketKind, read: BucketKind, write: BucketKind, f: fn(BucketLimit) -> u64| {
            f(b(total)) != 0 && (f(b(read)) != 0 || f(b(write)) != 0)
        };
        let avg = |l: BucketLimit| l.avg;
        let max = |l: BucketLimit| l.max;
        use BucketKind::*;
        if conflict(BpsTotal, BpsRead, BpsWrite, avg)
            || conflict(OpsTotal, OpsRead, OpsWrite, avg)
            || conflict(BpsTotal, BpsRead, BpsWrite, max)
            || conflict(OpsTotal, OpsRead, OpsWrite, max)
        {
            return Err(Error::BadOption { key: "limits", why: "bps/iops/max total values and read/write values cannot be used at the same time" });
        }
        if self.op_size != 0 && b(OpsTotal).avg == 0 && b(OpsRead).avg == 0 && b(OpsWrite).avg == 0 {
            return Err(Error::BadOption { key: "limits.iops-size", why: "iops size requires an iops value to be set" });
        }
        for kind in BUCKETS {
            let l = b(kind);
            let [key, max_key, length_key] = kind.keys();
            if l.avg > VALUE_MAX || l.max > VALUE_MAX {
                return Err(Error::BadOption { key, why: "bps/iops/max values must be within [0, 1000000000000000]" });
            }
            if l.burst_length == 0 {
                return Err(Error::BadOption { key: length_key, why: "the burst length cannot be 0" });
            }
            if l.burst_length > 1 && l.max == 0 {
                return Err(Error::BadOption { key: length_key, why: "burst length set without burst rate" });
            }
            if l.max != 0 && l.burst_length > VALUE_MAX / l.max {
                return Err(Error::BadOption { key: length_key, why: "burst length too high for this burst rate" });
            }
            if l.max != 0 && l.avg == 0 {
                return Err(Error::BadOption { key: max_key, why: "bps_max/iops_max require corresponding bps/iops values" });
            }
            if l.max != 0 && l.max < l.avg {
                return Err(Error::BadOption { key: max_key, why: "bps_max/iops_max cannot be lower than bps/iops" });
            }
        }
        Ok(())
    }

    /// True if any bucket limits anything.
    pub fn enabled(&self) -> bool {
        self.buckets.iter().any(|b| b.avg > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests
    use super::*;
    use crate::options::Options;

    fn parse(text: &str) -> Result<ThrottleConfig> {
        let opts: Options<'_, 32> = Options::parse(text, None).map_err(Error::from)?;
        ThrottleConfig::parse(&opts.root())
    }

    #[test]
    fn reads_every_key() {
        let c = parse("limits.iops-total=100,limits.iops-total-max=200,limits.iops-total-max-length=3,limits.bps-read=5,limits.iops-size=4096").unwrap();
        assert_eq!(c.buckets[BucketKind::OpsTotal as usize], BucketLimit { avg: 100, max: 200, burst_length: 3 });
        assert_eq!(c.buckets[BucketKind::BpsRead as usize].avg, 5);
        assert_eq!(c.op_size, 4096);
        assert!(c.enabled());
        assert!(!parse("").unwrap().enabled());
    }

    #[test]
    fn refuses_what_qemu_refuses() {
        let why = |text: &str| match parse(text) {
            Err(Error::BadOption { why, .. }) => why,
            other => panic!("{text}: {other:?}"),
        };
        assert!(why("limits.iops-total=1,limits.iops-read=1").contains("cannot be used at the same time"));
        assert!(why("limits.bps-total-max=9,limits.bps-write-max=9,limits.bps-total=1,limits.bps-write=1").contains("same time"));
        assert!(why("limits.iops-size=512").contains("requires an iops value"));
        assert!(why("limits.iops-total=1,limits.iops-total-max-length=0").contains("cannot be 0"));
        assert!(why("limits.iops-total=1,limits.iops-total-max-length=2").contains("without burst rate"));
        assert!(why("limits.iops-total-max=5").contains("require corresponding"));
        assert!(why("limits.iops-total=10,limits.iops-total-max=5").contains("cannot be lower"));
        assert!(why("limits.bps-total=1000000000000001").contains("within"));
        assert!(why("limits.iops-total=1,limits.iops-total-max=1000000000,limits.iops-total-max-length=1000000000").contains("too high"));
        assert!(why("limits.iops-total=1,limits.iops-total-max=2,limits.iops-total-max-length=4294967296").contains("range"));
        assert!(matches!(parse("limits.iops=1"), Err(Error::BadOptions { .. })));
    }
}
