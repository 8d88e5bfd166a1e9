//! The IOPS-over-time chart: one point per interval at its middle (IOPS = its completions over
//! its length), joined by a line, and the run's mean as a dashed line. A last interval shorter
//! than a quarter of the others is left out of the line (a few completions over a sliver of time
//! say little); the JSON keeps it.

use super::frame::{self, Frame};
use super::svg::Svg;
use crate::series::IopsSeries;

/// Draws `series` in `frame` as the group `iops`.
pub fn draw(svg: &mut Svg, frame: &Frame, series: &IopsSeries) {
    svg.group("iops", "plot");
    let mut shown = series.counts.len();
    if shown > 1 && series.width_ns(shown - 1) * 4 < series.interval_ns {
        shown -= 1;
    }
    // Seconds on the axis from 2 s up, milliseconds below.
    let (unit_ns, unit) = if series.elapsed_ns >= 2_000_000_000 {
        (1e9, "s")
    } else {
        (1e6, "ms")
    };
    let x = frame.x(0.0, series.elapsed_ns as f64 / unit_ns, false);
    let top = series.iops.iter().take(shown).copied().max().unwrap_or(0);
    let y = frame.y(super::scale::nice_top(top as f64, 5));
    let x_ticks = frame::ticks(&x, 8, frame::num);
    let y_ticks = frame::ticks(&y, 5, frame::si);
    let title = format!(
        "IOPS over time: per {} interval",
        frame::duration(series.interval_ns as f64)
    );
    frame.axes(
        svg,
        &title,
        (&x, &x_ticks, &format!("time since the start ({unit})")),
        (&y, &y_ticks, "IOPS"),
    );
    if shown == 0 {
        frame.no_data(svg);
        svg.end();
        return;
    }
    let points: Vec<(f64, f64)> = (0..shown)
        .map(|i| {
            let mid = series.start_ns(i) as f64 + series.width_ns(i) as f64 / 2.0;
            (x.px(mid / unit_ns), y.px(series.iops[i] as f64))
        })
        .collect();
    let total: u64 = series.counts.iter().sum();
    let mean = total as f64 / (series.elapsed_ns.max(1) as f64 / 1e9);
    let my = y.px(mean);
    svg.line(
        (frame.left, my),
        (frame.right(), my),
        "stroke=\"#e15759\" stroke-dasharray=\"6 4\"",
    );
    svg.polyline(&points, "stroke=\"#4e79a7\" stroke-width=\"2\"");
    for (i, &p) in points.iter().enumerate() {
        let tip = format!(
            "{} to {}: {} IOPS ({} requests)",
            frame::duration(series.start_ns(i) as f64),
            frame::duration((series.start_ns(i) + series.width_ns(i)) as f64),
            series.iops[i],
            series.counts[i]
        );
        svg.circle(p, 2.5, "fill=\"#4e79a7\"", &tip);
    }
    // The label last, over the line, on a white halo.
    svg.text(
        (frame.right(), my - 6.0),
        "end",
        "fill=\"#e15759\" stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\"",
        &format!("mean {} IOPS", frame::si(mean)),
    );
    svg.end();
}
