//! `--plot FILE.svg` of `img bench` and `boot` (the guest's `bench`): one SVG page with the
//! run's parameters as its title, the latency histogram ([`latency`]) and IOPS over time
//! ([`iops`]), from a [`BenchSeries`].
//!
//! The SVG is written by hand as plain text ([`svg`]: a few shapes, escaped text; [`scale`]:
//! linear and log scales with nice ticks; [`frame`]: axes and labels), not with the `plotters`
//! crate: its default features need C font libraries (fontconfig, freetype) that a fresh
//! machine lacks, and two charts need none of it. Text uses the generic `sans-serif` family, so
//! any viewer renders it. [`xml_check`] checks the output is well-formed XML (unit and
//! integration tests use it).

pub mod boot;
pub mod frame;
pub mod iops;
pub mod latency;
pub mod scale;
pub mod svg;
pub mod xml_check;

use std::path::Path;

use crate::series::BenchSeries;
use frame::Frame;

/// Page width in pixels.
pub const WIDTH: u32 = 800;
/// Characters per title line (16 px bold) and per subtitle line (12 px) across the page, with
/// some margin for wide fonts.
const TITLE_CHARS: usize = 70;
const SUBTITLE_CHARS: usize = 110;

/// The page: `title` and `subtitle` on top (wrapped at spaces), then the two charts. The page
/// is [`WIDTH`] wide and as tall as its header needs (660 px with one line of each).
pub fn bench_svg(title: &str, subtitle: &str, series: &BenchSeries) -> String {
    let (title_lines, subtitle_lines) = (wrap(title, TITLE_CHARS), wrap(subtitle, SUBTITLE_CHARS));
    let header = 20.0 * title_lines.len() as f64 + 16.0 * subtitle_lines.len() as f64;
    let height = (header + 624.0).round() as u32;
    let mut svg = svg::Svg::new(WIDTH, height, title);
    let mut y = 8.0;
    for line in &title_lines {
        y += 20.0;
        svg.text(
            (20.0, y),
            "start",
            "font-size=\"16\" font-weight=\"bold\"",
            line,
        );
    }
    for line in &subtitle_lines {
        y += 16.0;
        svg.text((20.0, y), "start", "fill=\"#444444\"", line);
    }
    let chart = |top: f64| Frame {
        left: 90.0,
        top,
        width: f64::from(WIDTH) - 90.0 - 30.0,
        height: 200.0,
    };
    latency::draw(&mut svg, &chart(y + 47.0), &series.latency_histogram);
    iops::draw(&mut svg, &chart(y + 347.0), &series.iops_series);
    svg.finish()
}

/// `text` cut into lines of at most `width` characters at spaces (a longer word stands alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Writes [`bench_svg`] to `path`.
pub fn write_bench_svg(
    path: &Path,
    title: &str,
    subtitle: &str,
    series: &BenchSeries,
) -> std::io::Result<()> {
    std::fs::write(path, bench_svg(title, subtitle, series))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{IopsSeries, LatencyBucket};

    fn sample() -> BenchSeries {
        BenchSeries {
            latency_histogram: vec![
                LatencyBucket {
                    lo_ns: 8192,
                    hi_ns: 16384,
                    count: 120,
                },
                LatencyBucket {
                    lo_ns: 16384,
                    hi_ns: 32768,
                    count: 0,
                },
                LatencyBucket {
                    lo_ns: 32768,
                    hi_ns: 65536,
                    count: 7,
                },
            ],
            iops_series: IopsSeries::new(100_000_000, 1_000_000_000, vec![4321; 10]),
        }
    }

    fn checked(doc: &str) -> xml_check::Outline {
        match xml_check::check(doc) {
            Ok(o) => o,
            Err(e) => panic!("not well-formed: {e}\n{doc}"),
        }
    }

    #[test]
    fn two_charts_with_their_numbers() {
        let doc = bench_svg("img bench: read <4k> & \"x\"", "p50 12 µs", &sample());
        let o = checked(&doc);
        assert_eq!(o.root, "svg");
        assert!(doc.contains("id=\"latency\"") && doc.contains("id=\"iops\""));
        assert!(doc.contains("font-family=\"sans-serif\""));
        assert!(doc.contains("read &lt;4k&gt; &amp; &quot;x&quot;"));
        // Two bars (the empty bucket draws none), ten points; titles carry the numbers.
        assert_eq!(o.count("circle"), 10);
        assert!(doc.contains("8.19 µs to 16.4 µs: 120 requests"), "{doc}");
        assert!(doc.contains(": 43210 IOPS (4321 requests)"), "{doc}");
        assert!(doc.contains("Latency histogram: 127 requests"));
        assert!(doc.contains("per 100 ms interval"));
        assert!(doc.contains(">mean 43.2k IOPS<"));
        // Log axis: ticks at 10 µs and its 2-5 neighbours, in the domain 8.19 µs .. 65.5 µs.
        assert!(doc.contains(">10 µs<") && doc.contains(">50 µs<"), "{doc}");
        assert!(!doc.contains("NaN") && !doc.contains("inf"));
    }

    #[test]
    fn empty_series_still_draw_both_frames() {
        let doc = bench_svg("t", "s", &BenchSeries::default());
        let o = checked(&doc);
        assert_eq!(doc.matches(">no data<").count(), 2);
        assert_eq!(o.count("circle"), 0);
        assert!(doc.contains("id=\"latency\"") && doc.contains("id=\"iops\""));
        assert!(!doc.contains("NaN"));
    }

    #[test]
    fn one_bucket_and_one_interval() {
        let series = BenchSeries {
            latency_histogram: vec![LatencyBucket {
                lo_ns: 0,
                hi_ns: 2,
                count: 5,
            }],
            iops_series: IopsSeries::new(1_000_000, 400_000, vec![5]),
        };
        let doc = bench_svg("t", "s", &series);
        let o = checked(&doc);
        assert_eq!(o.count("circle"), 1);
        assert!(doc.contains("0 ns to 2 ns: 5 requests"), "{doc}");
        assert!(doc.contains(": 12500 IOPS (5 requests)"), "{doc}");
        assert!(!doc.contains("NaN"));
    }

    #[test]
    fn long_titles_wrap_and_the_page_grows() {
        let title = "word ".repeat(40);
        let doc = bench_svg(&title, "s", &BenchSeries::default());
        checked(&doc);
        assert_eq!(doc.matches("bold\">word").count(), 3, "{doc}");
        assert!(doc.contains("height=\"700\""), "{doc}");
        assert_eq!(wrap("", 10), vec![String::new()]);
        assert_eq!(wrap("abc defg hi", 7), vec!["abc", "defg hi"]);
        assert_eq!(wrap("abcdefghij k", 4), vec!["abcdefghij", "k"]);
    }

    #[test]
    fn short_last_interval_is_left_out_of_the_line() {
        // 10 full intervals and 1 ms of an eleventh.
        let series = BenchSeries {
            iops_series: IopsSeries::new(100_000_000, 1_001_000_000, vec![100; 11]),
            ..BenchSeries::default()
        };
        let doc = bench_svg("t", "s", &series);
        assert_eq!(checked(&doc).count("circle"), 10);
    }
}
