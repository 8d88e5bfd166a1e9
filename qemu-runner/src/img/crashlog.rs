//! The crash log: a [`Recording`](strata_block::dev::record::Recording)'s event stream as a
//! compact binary file ([`LogWriter`]), and read back ([`read_log`]) for [`super::replay`].
//!
//! Format (all integers unsigned LEB128 unless said otherwise):
//!
//! ```text
//! file    = magic "STRCRSH1" (8 bytes), record*
//! record  = tag (1 byte; bit 7 set: the device reported an error), body
//! tag 1   write:         seq, submitted, offset, len, len bytes of data
//! tag 2   write-zeroes:  seq, submitted, offset, len, unmap (1 byte, 0 or 1)
//! tag 3   discard:       seq, submitted, offset, len
//! tag 4   flush submitted: seq
//! tag 5   flush done:    seq, submitted
//! tag 6   grow:          seq, capacity
//! ```
//!
//! Offsets are the recorded device's (the image file's) bytes; seqs are the recording's (see
//! `strata_block::dev::record` for what a flush covers).

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use strata_block::dev::record::{Event, RecordSink, Seq};

const MAGIC: &[u8; 8] = b"STRCRSH1";
const FAILED: u8 = 0x80;

/// What a mutating record does to its range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// These bytes.
    Data(Vec<u8>),
    /// Zeros (write-zeroes; `unmap` allowed deallocation).
    Zeroes {
        /// Deallocation allowed.
        unmap: bool,
    },
    /// Advisory discard (a host file punches a hole: zeros).
    Discard,
}

/// One record of a crash log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A write, write-zeroes or discard completed.
    Mutation {
        /// Completion.
        seq: Seq,
        /// Submission.
        submitted: Seq,
        /// Device offset.
        offset: u64,
        /// Bytes covered.
        len: u64,
        /// What it does.
        change: Change,
        /// The device reported success.
        ok: bool,
    },
    /// A flush was submitted.
    FlushSubmitted {
        /// Submission.
        seq: Seq,
    },
    /// A flush completed.
    Flushed {
        /// Completion.
        seq: Seq,
        /// Submission: writes completed below this are stable if `ok`.
        submitted: Seq,
        /// The device reported success.
        ok: bool,
    },
    /// The device grew.
    Grow {
        /// When.
        seq: Seq,
        /// New size.
        capacity: u64,
    },
}

impl Record {
    /// The record's seq (a mutation's completion).
    pub fn seq(&self) -> Seq {
        match self {
            Self::Mutation { seq, .. } | Self::FlushSubmitted { seq } | Self::Flushed { seq, .. } | Self::Grow { seq, .. } => *seq,
        }
    }
}

/// A [`RecordSink`] writing the log to a file. I/O errors are kept and reported by
/// [`LogWriter::finish`] (a sink cannot fail).
pub struct LogWriter {
    out: RefCell<BufWriter<File>>,
    error: RefCell<Option<std::io::Error>>,
    records: RefCell<u64>,
}

impl LogWriter {
    /// Creates (truncates) `path` and writes the magic.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        out.write_all(MAGIC)?;
        Ok(Self { out: RefCell::new(out), error: RefCell::new(None), records: RefCell::new(0) })
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        *self.records.borrow()
    }

    /// Flushes the file; the first I/O error seen, if any.
    pub fn finish(&self) -> std::io::Result<()> {
        if let Some(e) = self.error.borrow_mut().take() {
            return Err(e);
        }
        self.out.borrow_mut().flush()
    }

    fn write(&self, e: &Event<'_>) -> std::io::Result<()> {
        let mut out = self.out.borrow_mut();
        let failed = |r: &Result<(), _>| if r.is_ok() { 0 } else { FAILED };
        match e {
            Event::Write { seq, submitted, offset, data, result } => {
                out.write_all(&[1 | failed(result)])?;
                put(&mut *out, &[*seq, *submitted, *offset, data.len()])?;
                for s in data.segments() {
                    out.write_all(s)?;
                }
            }
            Event::WriteZeroes { seq, submitted, offset, len, unmap, result } => {
                out.write_all(&[2 | failed(result)])?;
                put(&mut *out, &[*seq, *submitted, *offset, *len, u64::from(*unmap)])?;
            }
            Event::Discard { seq, submitted, offset, len, result } => {
                out.write_all(&[3 | failed(result)])?;
                put(&mut *out, &[*seq, *submitted, *offset, *len])?;
            }
            Event::FlushSubmitted { seq } => {
                out.write_all(&[4])?;
                put(&mut *out, &[*seq])?;
            }
            Event::Flushed { seq, submitted, result } => {
                out.write_all(&[5 | failed(result)])?;
                put(&mut *out, &[*seq, *submitted])?;
            }
            Event::Grow { seq, capacity } => {
                out.write_all(&[6])?;
                put(&mut *out, &[*seq, *capacity])?;
            }
        }
        *self.records.borrow_mut() += 1;
        Ok(())
    }
}

impl RecordSink for LogWriter {
    fn event(&self, event: Event<'_>) {
        if self.error.borrow().is_some() {
            return;
        }
        if let Err(e) = self.write(&event) {
            *self.error.borrow_mut() = Some(e);
        }
    }
}

fn put(out: &mut impl Write, values: &[u64]) -> std::io::Result<()> {
    for &v in values {
        let mut v = v;
        let mut buf = [0u8; 10];
        let mut n = 0;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            buf[n] = byte | if v == 0 { 0 } else { 0x80 };
            n += 1;
            if v == 0 {
                break;
            }
        }
        out.write_all(&buf[..n])?;
    }
    Ok(())
}

/// A cursor over a log's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.at).ok_or_else(|| format!("log truncated at byte {}", self.at))?;
        self.at += 1;
        Ok(b)
    }

    fn num(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("bad number before byte {}", self.at))
    }

    fn take(&mut self, len: u64) -> Result<&[u8], String> {
        let end = usize::try_from(len).ok().and_then(|l| self.at.checked_add(l)).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("log truncated in data at byte {}", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
}

/// Reads a crash log.
pub fn read_log(path: &Path) -> Result<Vec<Record>, String> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_log(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a crash log's bytes.
pub fn parse_log(bytes: &[u8]) -> Result<Vec<Record>, String> {
    if bytes.get(..8) != Some(&MAGIC[..]) {
        return Err("not a Strata crash log (bad magic)".into());
    }
    let mut c = Cursor { bytes, at: 8 };
    let mut records = Vec::new();
    while c.at < bytes.len() {
        let tag = c.byte()?;
        let ok = tag & FAILED == 0;
        let record = match tag & !FAILED {
            1 => {
                let (seq, submitted, offset, len) = (c.num()?, c.num()?, c.num()?, c.num()?);
                let data = c.take(len)?.to_vec();
                Record::Mutation { seq, submitted, offset, len, change: Change::Data(data), ok }
            }
            2 => {
                let (seq, submitted, offset, len, unmap) = (c.num()?, c.num()?, c.num()?, c.num()?, c.num()?);
                Record::Mutation { seq, submitted, offset, len, change: Change::Zeroes { unmap: unmap != 0 }, ok }
            }
            3 => {
                let (seq, submitted, offset, len) = (c.num()?, c.num()?, c.num()?, c.num()?);
                Record::Mutation { seq, submitted, offset, len, change: Change::Discard, ok }
            }
            4 => Record::FlushSubmitted { seq: c.num()? },
            5 => Record::Flushed { seq: c.num()?, submitted: c.num()?, ok },
            6 => Record::Grow { seq: c.num()?, capacity: c.num()? },
            other => return Err(format!("unknown record tag {other:#x} at byte {}", c.at - 1)),
        };
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;
    use strata_block::dev::record::Recording;
    use strata_block::dev::ram::{RamConfig, RamDisk};
    use strata_block::dev::{BlockDevice, DeviceOp, DeviceRequest, Segment};

    #[test]
    fn round_trip_through_a_recording() {
        let path = std::env::temp_dir().join(format!("strata-crashlog-{}.log", std::process::id()));
        let mut mem = vec![0u8; 1 << 20];
        let ram: RamDisk<'_, 8> = RamDisk::new(&mut mem, 512, RamConfig::default());
        let writer = LogWriter::create(&path).unwrap();
        let rec: Recording<'_> = Recording::new(&ram, &writer);
        let data = [7u8; 1024];
        let segs = [Segment::from_ref(&data[..512]), Segment::from_ref(&data[512..])];
        let reqs = [
            DeviceRequest { op: DeviceOp::Write, offset: 300 * 512, len: 1024, segments: &segs },
            DeviceRequest { op: DeviceOp::Flush, offset: 0, len: 0, segments: &[] },
            DeviceRequest { op: DeviceOp::WriteZeroes { unmap: true }, offset: 0, len: 4096, segments: &[] },
            DeviceRequest { op: DeviceOp::Discard, offset: 4096, len: 4096, segments: &[] },
        ];
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for req in &reqs {
            // SAFETY: the buffers outlive the request, which completes below.
            let t = unsafe { rec.submit(req) }.unwrap();
            while rec.poll(t, &mut cx).is_pending() {}
        }
        writer.finish().unwrap();
        let records = read_log(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            records,
            [
                Record::Mutation { seq: 1, submitted: 0, offset: 300 * 512, len: 1024, change: Change::Data(data.to_vec()), ok: true },
                Record::FlushSubmitted { seq: 2 },
                Record::Flushed { seq: 3, submitted: 2, ok: true },
                Record::Mutation { seq: 5, submitted: 4, offset: 0, len: 4096, change: Change::Zeroes { unmap: true }, ok: true },
                Record::Mutation { seq: 7, submitted: 6, offset: 4096, len: 4096, change: Change::Discard, ok: true },
            ]
        );
        assert!(parse_log(b"STRCRSH1\x01\x05").is_err(), "a truncated record is an error, not a panic");
        assert!(parse_log(b"nope").is_err());
    }
}
