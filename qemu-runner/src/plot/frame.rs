//! One chart's frame: its rectangle on the page, title, axes, ticks with labels and grid lines,
//! axis labels and the "no data" note; and the number formats tick labels use.

use super::scale::Scale;
use super::svg::Svg;

/// Where a chart's plotting area sits on the page (pixels).
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// A tick: its data value and label.
pub type Tick = (f64, String);

impl Frame {
    /// Right edge.
    pub fn right(&self) -> f64 {
        self.left + self.width
    }

    /// Bottom edge.
    pub fn bottom(&self) -> f64 {
        self.top + self.height
    }

    /// A scale across the frame for `x`, from `lo` to `hi` of data.
    pub fn x(&self, lo: f64, hi: f64, log: bool) -> Scale {
        let make = if log { Scale::log } else { Scale::linear };
        make(lo, hi, self.left, self.right())
    }

    /// A linear scale up the frame for `y`, from 0 to `hi`.
    pub fn y(&self, hi: f64) -> Scale {
        Scale::linear(0.0, hi, self.bottom(), self.top)
    }

    /// Draws the title above the frame, grid lines and ticks at `y_ticks`, ticks at `x_ticks`,
    /// both axes, and the axis labels.
    pub fn axes(
        &self,
        svg: &mut Svg,
        title: &str,
        (x, x_ticks, x_label): (&Scale, &[Tick], &str),
        (y, y_ticks, y_label): (&Scale, &[Tick], &str),
    ) {
        svg.text(
            (self.left, self.top - 12.0),
            "start",
            "font-size=\"14\" font-weight=\"bold\"",
            title,
        );
        for (v, label) in y_ticks {
            let py = y.px(*v);
            svg.line((self.left, py), (self.right(), py), "stroke=\"#dddddd\"");
            svg.line((self.left - 5.0, py), (self.left, py), "stroke=\"black\"");
            svg.text((self.left - 8.0, py + 4.0), "end", "", label);
        }
        for (v, label) in x_ticks {
            let px = x.px(*v);
            svg.line(
                (px, self.bottom()),
                (px, self.bottom() + 5.0),
                "stroke=\"black\"",
            );
            svg.text((px, self.bottom() + 18.0), "middle", "", label);
        }
        svg.line(
            (self.left, self.top),
            (self.left, self.bottom()),
            "stroke=\"black\"",
        );
        svg.line(
            (self.left, self.bottom()),
            (self.right(), self.bottom()),
            "stroke=\"black\"",
        );
        svg.text(
            (self.left + self.width / 2.0, self.bottom() + 38.0),
            "middle",
            "",
            x_label,
        );
        let (lx, ly) = (self.left - 62.0, self.top + self.height / 2.0);
        svg.text(
            (lx, ly),
            "middle",
            &format!("transform=\"rotate(-90 {lx:.1} {ly:.1})\""),
            y_label,
        );
    }

    /// The note in an empty chart.
    pub fn no_data(&self, svg: &mut Svg) {
        let centre = (self.left + self.width / 2.0, self.top + self.height / 2.0);
        svg.text(
            centre,
            "middle",
            "fill=\"#888888\" font-size=\"16\"",
            "no data",
        );
    }
}

/// Ticks of `scale` labelled by `label`.
pub fn ticks(scale: &Scale, n: usize, label: impl Fn(f64) -> String) -> Vec<Tick> {
    scale.ticks(n).into_iter().map(|v| (v, label(v))).collect()
}

/// A number with about three significant digits and no trailing zeros: `1`, `2.5`, `12.5`, `125`.
pub fn num(v: f64) -> String {
    let text = match v.abs() {
        a if a >= 100.0 || a == 0.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A count with an SI suffix: `950`, `1.5k`, `2.25M`, `1G`.
pub fn si(v: f64) -> String {
    match v.abs() {
        a if a >= 1e9 => format!("{}G", num(v / 1e9)),
        a if a >= 1e6 => format!("{}M", num(v / 1e6)),
        a if a >= 1e3 => format!("{}k", num(v / 1e3)),
        _ => num(v),
    }
}

/// A duration given in ns: `750 ns`, `1.5 µs`, `20 ms`, `2 s`.
pub fn duration(ns: f64) -> String {
    match ns.abs() {
        a if a >= 1e9 => format!("{} s", num(ns / 1e9)),
        a if a >= 1e6 => format!("{} ms", num(ns / 1e6)),
        a if a >= 1e3 => format!("{} µs", num(ns / 1e3)),
        _ => format!("{} ns", num(ns)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(2.5), "2.5");
        assert_eq!(num(12.0), "12");
        assert_eq!(num(125.4), "125");
        assert_eq!(si(950.0), "950");
        assert_eq!(si(1500.0), "1.5k");
        assert_eq!(si(2_250_000.0), "2.25M");
        assert_eq!(duration(750.0), "750 ns");
        assert_eq!(duration(1500.0), "1.5 µs");
        assert_eq!(duration(20e6), "20 ms");
        assert_eq!(duration(2e9), "2 s");
    }
}
