//! Machine-readable records on the console.
//!
//! A record is one console line `@{...}`: a JSON object with a `"type"` field. `qemu-runner`
//! collects them into its `--json` result and leaves them out of the human transcript; a person
//! reading the raw console can still follow them. Strings are escaped here, so a hostile serial
//! or command line cannot break a record.

use core::fmt::{self, Write};
use strata_boot::clock::{self, Calibration};

use crate::console;

/// Builds one record; fields are appended in order and the line is written by [`Record::emit`].
pub struct Record {
    line: heapless::String<1024>,
    /// A field did not fit: the record is emitted as `truncated`.
    full: bool,
}

impl Record {
    /// Starts a record of the given type.
    pub fn new(kind: &str) -> Self {
        let mut r = Self { line: heapless::String::new(), full: false };
        let _ = r.line.push_str("@{\"type\":");
        r.push_json_str(format_args!("{}", kind));
        r
    }

    /// Adds a string field.
    pub fn str(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.key(key);
        self.push_json_str(format_args!("{}", value));
        self
    }

    /// Adds a number field.
    pub fn num(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        let _ = write!(self.line, "{}", value);
        self
    }

    /// Adds an array of numbers.
    pub fn nums(mut self, key: &str, values: impl IntoIterator<Item = u64>) -> Self {
        self.key(key);
        let mut sep = "[";
        for v in values {
            self.full |= write!(self.line, "{}{}", sep, v).is_err();
            sep = ",";
        }
        if sep == "[" {
            self.full |= self.line.push('[').is_err();
        }
        self.full |= self.line.push(']').is_err();
        self
    }

    /// Adds a boolean field.
    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.key(key);
        let _ = self.line.push_str(if value { "true" } else { "false" });
        self
    }

    /// Writes the record as one console line. A record too long for the buffer is cut and its
    /// JSON stays well-formed (a `"truncated":true` field is added).
    pub fn emit(mut self) {
        if self.full || self.line.len() + 2 > self.line.capacity() {
            self.line.truncate(0);
            let _ = self.line.push_str("@{\"type\":\"truncated\"");
        }
        let _ = self.line.push('}');
        console::write_fmt(format_args!("{}\n", self.line));
    }

    fn key(&mut self, key: &str) {
        let _ = write!(self.line, ",\"{}\":", key);
    }

    fn push_json_str(&mut self, value: fmt::Arguments) {
        let _ = self.line.push('"');
        let _ = JsonEscape(&mut self.line).write_fmt(value);
        let _ = self.line.push('"');
    }
}

/// Escapes what is written through it as the inside of a JSON string.
struct JsonEscape<'a>(&'a mut heapless::String<1024>);

impl Write for JsonEscape<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            // Leave room for the closing quote and brace.
            if self.0.len() + 8 > self.0.capacity() {
                return Err(fmt::Error);
            }
            let _ = match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if (c as u32) < 0x20 => write!(self.0, "\\u{:04x}", c as u32).map_err(|_| ()),
                c => self.0.push(c),
            };
        }
        Ok(())
    }
}

/// The boot record: clock, memory, command line, and time from VM start to kernel entry.
pub fn boot(cal: &Calibration, ram: u64, cmdline: &str) {
    Record::new("boot")
        .num("tsc_hz", cal.hz)
        .bool("tsc_calibrated", cal.calibrated)
        // The TSC starts at zero when the vCPU is reset (TCG and KVM), so its value at entry is
        // roughly the time QEMU and its firmware took to reach us.
        .num("entry_us", clock::ticks_to_ns(clock::boot_ticks()) / 1000)
        .num("ram_bytes", ram)
        .str("cmdline", cmdline)
        .emit();
}

/// An error record (`kind`: usage, io, verify, panic, ...).
pub fn error(kind: &str, message: fmt::Arguments) {
    Record::new("error").str("kind", kind).str("message", message).emit();
}

/// The last record before the machine ends.
pub fn exit(code: u32) {
    let mut r = Record::new("exit").num("code", u64::from(code)).num("uptime_us", clock::ns_since_boot() / 1000);
    if let Some(ns) = crate::devices::first_io_ns() {
        r = r.num("first_io_us", ns / 1000);
    }
    r.emit();
}
