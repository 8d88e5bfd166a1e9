//! qemu-img's `-p` progress line (QEMU's util/qemu-progress.c): `    (12.34/100%)` and a
//! carriage return, redrawn when the share done grew by more than one point since the last
//! line, and at 0 and 100; a newline at the end.
//!
//! qemu-img draws it whenever `-p` is given and `-q` is not, terminal or not (10.0.2 writes the
//! same bytes into a pipe); `img convert` draws it on a terminal only (`convert::run_on`), into
//! the same bytes.

use std::io::Write;

/// A progress line over `total` units, drawn into `out` (nothing when `out` is `None`).
pub struct Progress<'w> {
    out: Option<&'w mut dyn Write>,
    total: u64,
    done: u64,
    // QEMU keeps these as `float`; so does this, so the lines drawn are the same.
    current: f32,
    last_print: f32,
}

/// Least growth, in points, between two lines (qemu-img convert's `min_skip`).
const MIN_SKIP: f32 = 1.0;

impl<'w> Progress<'w> {
    /// Starts at 0 and draws the first line.
    pub fn new(out: Option<&'w mut dyn Write>, total: u64) -> Self {
        let mut p = Self { out, total, done: 0, current: 0.0, last_print: 0.0 };
        p.set(0.0);
        p
    }

    /// `n` more units are under way (qemu-img counts a chunk when it starts copying it).
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.total > 0 {
            self.set((100.0 * self.done as f64 / self.total as f64) as f32);
        }
    }

    /// Draws 100 and ends the line.
    pub fn finish(mut self) {
        self.set(100.0);
        if let Some(out) = self.out.as_mut() {
            let _ = writeln!(out);
            let _ = out.flush();
        }
    }

    fn set(&mut self, current: f32) {
        let current = current.min(100.0);
        self.current = current;
        if current > self.last_print + MIN_SKIP || current == 100.0 || current == 0.0 {
            self.last_print = current;
            if let Some(out) = self.out.as_mut() {
                let _ = write!(out, "    ({:3.2}/100%)\r", f64::from(current));
                let _ = out.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::Progress;

    fn lines(total: u64, steps: &[u64]) -> String {
        let mut buf = Vec::new();
        let mut p = Progress::new(Some(&mut buf), total);
        for s in steps {
            p.add(*s);
        }
        p.finish();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn draws_as_qemu_img() {
        // 16 steps of 2 MiB over 32 MiB, as qemu-img convert -p draws a 32 MiB data extent.
        let text = lines(16, &[1; 16]);
        assert!(text.starts_with("    (0.00/100%)\r    (6.25/100%)\r    (12.50/100%)\r"), "{text:?}");
        assert!(text.ends_with("    (93.75/100%)\r    (100.00/100%)\r    (100.00/100%)\r\n"), "{text:?}");
        // Steps under one point are not drawn.
        assert_eq!(lines(1000, &[1, 1, 1]), "    (0.00/100%)\r    (100.00/100%)\r\n");
        // Nothing to copy: 0, then 100.
        assert_eq!(lines(0, &[]), "    (0.00/100%)\r    (100.00/100%)\r\n");
    }
}
