//! A minimal SVG writer: the document, groups, and the few shapes the charts use, with text
//! and attribute values escaped so any title (a file name, a node's options) stays valid XML.
//! Coordinates are written with one decimal; NaN and infinities are written as 0.

use std::fmt::Write as _;

/// An SVG document being written.
pub struct Svg {
    out: String,
    open: Vec<&'static str>,
}

impl Svg {
    /// Starts a `width` x `height` document; text uses the generic `sans-serif` family so every
    /// viewer has a font for it.
    pub fn new(width: u32, height: u32, title: &str) -> Self {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">"
        );
        let _ = writeln!(out, "<title>{}</title>", escape(title));
        let _ = writeln!(
            out,
            "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"white\"/>"
        );
        Self {
            out,
            open: vec!["svg"],
        }
    }

    /// Opens a `<g>` with an id and a class (closed by [`Svg::end`]).
    pub fn group(&mut self, id: &str, class: &str) {
        let _ = writeln!(
            self.out,
            "<g id=\"{}\" class=\"{}\">",
            escape(id),
            escape(class)
        );
        self.open.push("g");
    }

    /// Closes the innermost open group.
    pub fn end(&mut self) {
        if self.open.len() > 1 {
            if let Some(tag) = self.open.pop() {
                let _ = writeln!(self.out, "</{tag}>");
            }
        }
    }

    /// A line segment.
    pub fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
        let _ = writeln!(
            self.out,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" {style}/>",
            n(x1),
            n(y1),
            n(x2),
            n(y2)
        );
    }

    /// A rectangle with a tooltip (`tip`, shown by viewers on hover).
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, style: &str, tip: &str) {
        let _ = writeln!(
            self.out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" {style}><title>{}</title></rect>",
            n(x),
            n(y),
            n(w.max(0.0)),
            n(h.max(0.0)),
            escape(tip)
        );
    }

    /// A circle with a tooltip.
    pub fn circle(&mut self, (x, y): (f64, f64), r: f64, style: &str, tip: &str) {
        let _ = writeln!(
            self.out,
            "<circle cx=\"{}\" cy=\"{}\" r=\"{}\" {style}><title>{}</title></circle>",
            n(x),
            n(y),
            n(r),
            escape(tip)
        );
    }

    /// An open polyline through `points`.
    pub fn polyline(&mut self, points: &[(f64, f64)], style: &str) {
        let pts: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{},{}", n(x), n(y)))
            .collect();
        let _ = writeln!(
            self.out,
            "<polyline points=\"{}\" fill=\"none\" {style}/>",
            pts.join(" ")
        );
    }

    /// Text at `(x, y)`; `anchor` is `start`, `middle` or `end`; `extra` more attributes.
    pub fn text(&mut self, (x, y): (f64, f64), anchor: &str, extra: &str, content: &str) {
        let _ = writeln!(
            self.out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" {extra}>{}</text>",
            n(x),
            n(y),
            escape(content)
        );
    }

    /// Closes every open element and returns the document.
    pub fn finish(mut self) -> String {
        while let Some(tag) = self.open.pop() {
            let _ = writeln!(self.out, "</{tag}>");
        }
        self.out
    }
}

/// A coordinate with one decimal (0 for NaN or infinity).
fn n(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    format!("{v:.1}")
}

/// `s` escaped for XML text and attribute values; control characters XML 1.0 forbids become
/// spaces.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_closes() {
        let mut s = Svg::new(10, 20, "a<b & \"c\"\u{1}");
        s.group("g1", "plot");
        s.text((1.0, 2.0), "start", "", "x > y");
        s.line((f64::NAN, 0.0), (1.25, 2.0), "stroke=\"black\"");
        let doc = s.finish();
        assert!(
            doc.contains("<title>a&lt;b &amp; &quot;c&quot; </title>"),
            "{doc}"
        );
        assert!(doc.contains(">x &gt; y</text>"));
        assert!(doc.contains("x1=\"0.0\""));
        assert!(doc.trim_end().ends_with("</g>\n</svg>"));
    }
}
