//! Decoding the kernel's defmt log (the debugcon byte stream) with the ELF's defmt table.

use serde::Serialize;

/// One decoded log message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// The timestamp as the kernel formats it (seconds since kernel entry, e.g. `1.234567`).
    pub timestamp: Option<String>,
    /// `trace`, `debug`, `info`, `warn` or `error`; `None` for `println!`.
    pub level: Option<String>,
    /// The message.
    pub message: String,
}

impl LogLine {
    /// The line as printed in human mode: `[   1.234567 INFO ] message`.
    pub fn human(&self) -> String {
        let level = self.level.as_deref().unwrap_or("").to_ascii_uppercase();
        let ts = self.timestamp.as_deref().unwrap_or("");
        format!("[{ts:>11} {level:<5}] {}", self.message)
    }
}

/// The decoded log and anything worth a warning.
#[derive(Clone, Debug, Default)]
pub struct DecodedLog {
    /// The messages, in order.
    pub lines: Vec<LogLine>,
    /// Problems: no table, an unreadable table, malformed frames.
    pub warnings: Vec<String>,
}

/// Decodes `bytes` (the whole debugcon stream) with the defmt table of the ELF `elf`.
pub fn decode(elf: &[u8], bytes: &[u8]) -> DecodedLog {
    let mut out = DecodedLog::default();
    if bytes.is_empty() {
        return out;
    }
    let table = match defmt_decoder::Table::parse(elf) {
        Ok(Some(table)) => table,
        Ok(None) => {
            out.warnings.push(format!(
                "the kernel ELF has no defmt table: {} byte(s) of defmt log not decoded",
                bytes.len()
            ));
            return out;
        }
        Err(e) => {
            out.warnings
                .push(format!("cannot read the kernel's defmt table: {e}"));
            return out;
        }
    };
    let mut decoder = table.new_stream_decoder();
    decoder.received(bytes);
    let mut malformed = 0usize;
    loop {
        match decoder.decode() {
            Ok(frame) => out.lines.push(LogLine {
                timestamp: frame.display_timestamp().map(|t| t.to_string()),
                level: frame.level().map(|l| l.as_str().to_string()),
                message: frame.display_message().to_string(),
            }),
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                malformed += 1;
                // A raw (not rzcobs) stream cannot resynchronise after a bad frame.
                if table.encoding().can_recover() {
                    continue;
                }
                break;
            }
        }
    }
    if malformed > 0 {
        out.warnings
            .push(format!("{malformed} malformed defmt frame(s) skipped"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_stream_needs_no_table() {
        let d = decode(b"not an elf", &[]);
        assert!(d.lines.is_empty() && d.warnings.is_empty());
    }

    #[test]
    fn bad_elf_is_a_warning() {
        let d = decode(b"not an elf", &[1, 2, 0]);
        assert!(d.lines.is_empty());
        assert_eq!(d.warnings.len(), 1);
    }

    #[test]
    fn human_format() {
        let l = LogLine {
            timestamp: Some("1.234567".into()),
            level: Some("info".into()),
            message: "hi".into(),
        };
        assert_eq!(l.human(), "[   1.234567 INFO ] hi");
    }
}
