//! The latency histogram chart: one bar per bucket spanning its `[lo, hi)` on a log-scale
//! latency axis, bar height the bucket's request count (at least a sliver, so a rare bucket
//! shows), its count written above it where the bar is wide enough (the axis leaves room).

use super::frame::{self, Frame};
use super::svg::Svg;
use crate::series::LatencyBucket;

/// Draws `buckets` (increasing latency) in `frame` as the group `latency`.
pub fn draw(svg: &mut Svg, frame: &Frame, buckets: &[LatencyBucket]) {
    svg.group("latency", "plot");
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    let lo = buckets.iter().map(|b| b.lo_ns).min().unwrap_or(1_000);
    let hi = buckets.iter().map(|b| b.hi_ns).max().unwrap_or(1_000_000);
    // A first bucket starting at 0 ns starts at 1 ns on the log axis.
    let x = frame.x(lo.max(1) as f64, hi as f64, true);
    let top = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    let y = frame.y(super::scale::nice_top(top as f64 * 1.1, 5));
    let x_ticks = frame::ticks(&x, 8, frame::duration);
    let y_ticks = frame::ticks(&y, 5, frame::si);
    let title = format!("Latency histogram: {total} requests");
    frame.axes(
        svg,
        &title,
        (&x, &x_ticks, "latency per request (log scale)"),
        (&y, &y_ticks, "requests per bucket"),
    );
    if total == 0 {
        frame.no_data(svg);
    }
    for b in buckets.iter().filter(|b| b.count > 0) {
        let (x0, x1) = (x.px(b.lo_ns as f64), x.px(b.hi_ns as f64));
        let y0 = y.px(b.count as f64).min(frame.bottom() - 1.5);
        let tip = format!(
            "{} to {}: {} requests",
            frame::duration(b.lo_ns as f64),
            frame::duration(b.hi_ns as f64),
            b.count
        );
        let width = (x1 - x0 - 1.0).max(1.0);
        svg.rect(
            x0 + 0.5,
            y0,
            width,
            frame.bottom() - y0,
            "fill=\"#4e79a7\"",
            &tip,
        );
        if width >= 24.0 {
            svg.text(
                ((x0 + x1) / 2.0, y0 - 4.0),
                "middle",
                "font-size=\"10\" fill=\"#333333\"",
                &frame::si(b.count as f64),
            );
        }
    }
    svg.end();
}
