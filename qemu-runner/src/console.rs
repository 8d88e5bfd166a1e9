//! The kernel's console: human text with machine-readable record lines mixed in.
//!
//! A console line that starts with `@{` is a record: a JSON object with a `"type"` field (`boot`,
//! `footprint`, `device`, `sha256`, `demo`, `error`, `exit`, ...; see `kernel/src/report.rs`).
//! Records are collected in order and left out of the human transcript. A line that starts with
//! `@{` but is not such an object stays in the transcript, with a warning. Lines end with `\r\n`
//! or `\n`; the `\r` is dropped, and bytes that are not UTF-8 are replaced.

use serde_json::Value;

/// One console line, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// Human text (without the line end).
    Text(String),
    /// A record.
    Record(Value),
    /// A line that looks like a record but is not one: kept as text; the string says why.
    BadRecord {
        /// The line.
        text: String,
        /// The parse error.
        error: String,
    },
}

/// Classifies one line (its line end already removed, a trailing `\r` allowed).
pub fn classify(raw: &[u8]) -> Line {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let text = String::from_utf8_lossy(raw).into_owned();
    let Some(json) = text.strip_prefix('@').filter(|j| j.starts_with('{')) else {
        return Line::Text(text);
    };
    match serde_json::from_str::<Value>(json) {
        Ok(v) if v.get("type").is_some_and(Value::is_string) => Line::Record(v),
        Ok(_) => Line::BadRecord {
            text,
            error: "record has no string \"type\" field".into(),
        },
        Err(e) => Line::BadRecord {
            text,
            error: e.to_string(),
        },
    }
}

/// Splits a byte stream into lines; feed it chunks as they arrive.
#[derive(Debug, Default)]
pub struct LineSplitter {
    /// Bytes after the last line end.
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Adds `bytes` and returns the lines completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            self.partial.extend_from_slice(head);
            lines.push(classify(&self.partial));
            self.partial.clear();
            rest = tail.get(1..).unwrap_or(&[]);
        }
        self.partial.extend_from_slice(rest);
        lines
    }

    /// Ends the stream: the unterminated last line, if any.
    pub fn finish(&mut self) -> Option<Line> {
        if self.partial.is_empty() {
            return None;
        }
        let line = classify(&self.partial);
        self.partial.clear();
        Some(line)
    }
}

/// What the console amounted to: the transcript, the records, and warnings.
#[derive(Clone, Debug, Default)]
pub struct Transcript {
    /// Human lines, each ending in `\n`.
    pub text: String,
    /// The records, in order.
    pub records: Vec<Value>,
    /// Malformed records.
    pub warnings: Vec<String>,
    /// Set when the text grew past [`Transcript::MAX_TEXT`] and later lines were dropped.
    pub truncated: bool,
}

impl Transcript {
    /// The most transcript text kept (a runaway guest can print for the whole timeout).
    pub const MAX_TEXT: usize = 16 << 20;

    /// Adds a line.
    pub fn push(&mut self, line: Line) {
        match line {
            Line::Text(t) => self.push_text(&t),
            Line::Record(v) => self.records.push(v),
            Line::BadRecord { text, error } => {
                self.warnings
                    .push(format!("malformed console record ({error}): {text}"));
                self.push_text(&text);
            }
        }
    }

    /// Appends one text line, unless the transcript is full.
    fn push_text(&mut self, t: &str) {
        if self.text.len() + t.len() + 1 > Self::MAX_TEXT {
            if !self.truncated {
                self.truncated = true;
                self.warnings
                    .push("console transcript truncated at 16 MiB".into());
            }
            return;
        }
        self.text.push_str(t);
        self.text.push('\n');
    }

    /// The first record of type `kind`.
    pub fn record(&self, kind: &str) -> Option<&Value> {
        self.records
            .iter()
            .find(|r| r.get("type").and_then(Value::as_str) == Some(kind))
    }

    /// A number field of the first record of type `kind`.
    pub fn record_u64(&self, kind: &str, field: &str) -> Option<u64> {
        self.record(kind)?.get(field)?.as_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_and_text() {
        assert_eq!(classify(b"hello\r"), Line::Text("hello".into()));
        assert_eq!(
            classify(br#"@{"type":"exit","code":0}"#),
            Line::Record(json!({"type": "exit", "code": 0}))
        );
        assert_eq!(
            classify(b"@ not a record"),
            Line::Text("@ not a record".into())
        );
        assert_eq!(classify(b""), Line::Text(String::new()));
        assert!(matches!(classify(b"@{\"type\":"), Line::BadRecord { .. }));
        assert!(matches!(classify(b"@{\"code\":1}"), Line::BadRecord { .. }));
        assert!(matches!(classify(b"@{\"type\":3}"), Line::BadRecord { .. }));
        assert_eq!(classify(b"caf\xff"), Line::Text("caf\u{fffd}".into()));
    }

    #[test]
    fn splitting_across_chunks() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"one\r\ntw"), [Line::Text("one".into())]);
        assert_eq!(s.push(b"o\r"), []);
        let lines = s.push(b"\n@{\"type\":\"boot\"}\r\n\nlast");
        assert_eq!(
            lines,
            [
                Line::Text("two".into()),
                Line::Record(json!({"type": "boot"})),
                Line::Text(String::new()),
            ]
        );
        assert_eq!(s.finish(), Some(Line::Text("last".into())));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn transcript_collects() {
        let mut t = Transcript::default();
        let mut s = LineSplitter::default();
        let input = b"hi\r\n@{\"type\":\"exit\",\"code\":0,\"first_io_us\":3100}\r\n@{bad\r\n";
        for line in s.push(input) {
            t.push(line);
        }
        assert_eq!(t.text, "hi\n@{bad\n");
        assert_eq!(t.records.len(), 1);
        assert_eq!(t.warnings.len(), 1);
        assert_eq!(t.record_u64("exit", "first_io_us"), Some(3100));
        assert_eq!(t.record_u64("boot", "entry_us"), None);
    }
}
