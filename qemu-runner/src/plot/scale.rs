//! Scales (data value to pixel) and their ticks: linear with "nice" steps (1, 2, 5 times a
//! power of ten), and logarithmic with decade ticks (1-2-5 inside a range narrower than two
//! decades). Degenerate domains (empty, one value, zero or negative for log) are widened, so a
//! scale never divides by zero or produces NaN.

/// Maps `[lo, hi]` of data onto `[from, to]` pixels, linearly or in log10.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
    log: bool,
}

impl Scale {
    /// A linear scale; an empty or inverted domain becomes `[lo, lo + 1]`.
    pub fn linear(lo: f64, hi: f64, from: f64, to: f64) -> Self {
        let lo = finite_or(lo, 0.0);
        let hi = finite_or(hi, lo);
        let hi = if hi > lo { hi } else { lo + 1.0 };
        Self {
            lo,
            hi,
            from,
            to,
            log: false,
        }
    }

    /// A log10 scale; `lo` is raised to at least 1 and an empty domain becomes a decade.
    pub fn log(lo: f64, hi: f64, from: f64, to: f64) -> Self {
        let lo = finite_or(lo, 1.0).max(1.0);
        let hi = finite_or(hi, lo);
        let hi = if hi > lo { hi } else { lo * 10.0 };
        Self {
            lo,
            hi,
            from,
            to,
            log: true,
        }
    }

    /// The pixel of `v` (clamped into the domain, so nothing is drawn outside the axes).
    pub fn px(&self, v: f64) -> f64 {
        let v = finite_or(v, self.lo).clamp(self.lo, self.hi);
        let t = if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.from + t * (self.to - self.from)
    }

    /// The domain's ends.
    pub fn domain(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    /// Tick values inside the domain: at most about `n` nice linear steps, or log ticks.
    pub fn ticks(&self, n: usize) -> Vec<f64> {
        if self.log {
            return log_ticks(self.lo, self.hi);
        }
        let step = nice_step(self.hi - self.lo, n);
        let first = (self.lo / step).ceil() as i64;
        let last = (self.hi / step + 1e-9).floor() as i64;
        (first..=last).map(|k| k as f64 * step).collect()
    }
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving at most about `n` steps over `span`.
pub fn nice_step(span: f64, n: usize) -> f64 {
    let raw = finite_or(span, 1.0).abs().max(f64::MIN_POSITIVE) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw);
    step.unwrap_or(10.0 * mag)
}

/// `hi` rounded up to a multiple of the nice step for `n` ticks over `[0, hi]` (an axis top
/// that lands on a tick); at least that step, and 1 for an empty range.
pub fn nice_top(hi: f64, n: usize) -> f64 {
    if !(hi > 0.0 && hi.is_finite()) {
        return 1.0;
    }
    let step = nice_step(hi, n);
    ((finite_or(hi, 0.0) / step).ceil() * step).max(step)
}

/// Powers of ten inside `[lo, hi]`; with fewer than three of them, 2s and 5s too.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let inside = |v: &f64| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9);
    let decades: Vec<f64> = (first..=last)
        .map(|e| 10f64.powi(e))
        .filter(inside)
        .collect();
    if decades.len() >= 3 {
        return decades;
    }
    (first..=last)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
        .filter(inside)
        .collect()
}

/// `v`, or `default` if it is NaN or infinite.
fn finite_or(v: f64, default: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_maps_and_ticks() {
        let s = Scale::linear(0.0, 100.0, 50.0, 250.0);
        assert_eq!(s.px(0.0), 50.0);
        assert_eq!(s.px(50.0), 150.0);
        assert_eq!(s.px(1000.0), 250.0, "clamped");
        assert_eq!(s.ticks(5), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        // Inverted pixel ranges (y axes) work the same way.
        assert_eq!(Scale::linear(0.0, 10.0, 300.0, 100.0).px(10.0), 100.0);
    }

    #[test]
    fn degenerate_domains_stay_finite() {
        for s in [
            Scale::linear(5.0, 5.0, 0.0, 10.0),
            Scale::linear(f64::NAN, f64::INFINITY, 0.0, 10.0),
            Scale::log(0.0, 0.0, 0.0, 10.0),
            Scale::log(100.0, 100.0, 0.0, 10.0),
        ] {
            for v in [0.0, 5.0, 1e12, f64::NAN] {
                assert!(s.px(v).is_finite(), "{s:?} {v}");
            }
            assert!(!s.ticks(5).is_empty(), "{s:?}");
        }
    }

    #[test]
    fn log_scale_decades() {
        let s = Scale::log(1_000.0, 1_000_000.0, 0.0, 300.0);
        assert_eq!(s.px(1_000.0), 0.0);
        assert!((s.px(10_000.0) - 100.0).abs() < 1e-9);
        assert_eq!(s.ticks(5), vec![1e3, 1e4, 1e5, 1e6]);
        // Narrow ranges get 2s and 5s.
        assert_eq!(
            Scale::log(1500.0, 12_000.0, 0.0, 1.0).ticks(5),
            vec![2e3, 5e3, 1e4]
        );
    }

    #[test]
    fn nice_steps_and_tops() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.abs().max(1.0);
        assert!(close(nice_step(100.0, 5), 20.0));
        assert!(close(nice_step(7.0, 5), 2.0));
        assert!(close(nice_step(0.3, 4), 0.1));
        assert!(close(nice_top(87.0, 5), 100.0));
        assert_eq!(nice_top(0.0, 5), 1.0);
        assert_eq!(nice_top(f64::NAN, 5), 1.0);
    }
}
