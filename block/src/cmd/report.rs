//! qemu-io's report after a command: `wrote 4096/4096 bytes at offset 0` and the statistics
//! line `4 KiB, 1 ops; 00.00 sec (7.369 MiB/sec and 1886.5789 ops/sec)`, in integer arithmetic
//! (no floating point in the kernel).

use core::fmt;

/// What one command moved, for its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Bytes done.
    pub bytes: u64,
    /// Operations (qemu-io counts one per command).
    pub ops: u64,
    /// Elapsed nanoseconds.
    pub ns: u64,
}

impl Stats {
    /// Writes the two report lines for `op` (`wrote`, `read`, `discard`) at `offset`.
    pub fn write_report(&self, out: &mut dyn fmt::Write, op: &str, offset: u64) -> fmt::Result {
        let ns = self.ns.max(1);
        writeln!(out, "{op} {}/{} bytes at offset {offset}", self.bytes, self.bytes)?;
        let per_sec = |x: u64| u128::from(x) * 1_000_000_000 / u128::from(ns);
        // ops/sec with four decimals.
        let ops_e4 = u128::from(self.ops) * 10_000 * 1_000_000_000 / u128::from(ns);
        writeln!(
            out,
            "{}, {} ops; {} sec ({}/sec and {}.{:04} ops/sec)",
            Rate(u128::from(self.bytes)),
            self.ops,
            Seconds(self.ns),
            Rate(per_sec(self.bytes)),
            ops_e4 / 10_000,
            ops_e4 % 10_000
        )
    }
}

/// A byte count as qemu-io's `cvtstr` prints it: `512 bytes`, `4 KiB`, `1.500 KiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(pub u128);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["EiB", "PiB", "TiB", "GiB", "MiB", "KiB"];
        let value = self.0;
        for (i, unit) in UNITS.iter().enumerate() {
            let scale = 1u128 << (10 * (6 - i));
            if value >= scale {
                // Three decimals, rounded to nearest, ties to even (printf's "%.3f" of an
                // exact binary value); ".000" is dropped.
                let (q, r) = (value * 1000 / scale, value * 1000 % scale);
                let thousandths = if r * 2 > scale || (r * 2 == scale && q % 2 == 1) { q + 1 } else { q };
                let (whole, frac) = (thousandths / 1000, thousandths % 1000);
                return if frac == 0 { write!(f, "{whole} {unit}") } else { write!(f, "{whole}.{frac:03} {unit}") };
            }
        }
        write!(f, "{value} bytes")
    }
}

/// Elapsed time as qemu-io prints it: `SS.CC` below a minute, `M:SS.CC` above.
struct Seconds(u64);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let centis = self.0 / 10_000_000;
        let (secs, cc) = (centis / 100, centis % 100);
        if secs < 60 {
            write!(f, "{secs:02}.{cc:02}")
        } else {
            write!(f, "{}:{:02}.{cc:02}", secs / 60, secs % 60)
        }
    }
}
