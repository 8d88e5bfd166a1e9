//! The stress scheduler: workers (one per queue slot, polled by the caller's executor) claim ops
//! in index order; an op waits while an overlapping one is in flight, a flush until nothing is.

use core::cell::RefCell;
use core::fmt;

use super::model::{block_matches, expected, fill_data, Entry, Expected};
use super::ops::{op_at, Config, ConfigError, Op, OpKind, MAX_QD};
use crate::backend::Backend;
use crate::error::Error;
use crate::io::{wait_for, wait_until};

/// `flush K covers ops 0..N`: every op before `N` completed before flush `K` (counted from 0)
/// was issued, and that flush succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushMarker {
    /// The flush's number in the run, from 0.
    pub flush: u32,
    /// Ops covered: `0..ops`.
    pub ops: u32,
}

impl FlushMarker {
    /// `{"type":"stress_flush","flush":K,"ops":N}`.
    pub fn write_json(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        write!(out, "{{\"type\":\"stress_flush\",\"flush\":{},\"ops\":{}}}", self.flush, self.ops)
    }
}

impl fmt::Display for FlushMarker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flush {} covers ops 0..{}", self.flush, self.ops)
    }
}

/// What the engine reports as it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An op (not a flush) completed; for a read, `verified` bytes were checked.
    Op {
        /// The op.
        op: Op,
        /// Bytes of a read whose expected content was known and matched.
        verified: u64,
    },
    /// A flush barrier completed.
    Flush(FlushMarker),
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Ops completed (flushes included).
    pub ops: u32,
    /// Reads, writes, write-zeroes, discards and flushes completed (the final flush included).
    pub by_kind: [u32; 5],
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written (data only).
    pub bytes_written: u64,
    /// Bytes of reads checked against the model.
    pub verified: u64,
    /// Most ops in flight at once.
    pub max_in_flight: u32,
}

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StressError {
    /// The configuration does not fit the disk, table or buffers.
    Config(ConfigError),
    /// An op failed.
    Io {
        /// The op (a flush for the final one: index = `cfg.ops`).
        op: Op,
        /// The error.
        error: Error,
    },
    /// A read returned something else than the model says.
    Mismatch {
        /// The read.
        op: Op,
        /// Disk offset of the first block that differs.
        offset: u64,
        /// What that block should hold.
        expected: Expected,
    },
}

impl fmt::Display for StressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Io { op, error } => write!(f, "op {} ({} {} bytes at {}) failed: {error}", op.index, op.kind.name(), op.len, op.offset),
            Self::Mismatch { op, offset, expected } => write!(
                f,
                "op {} (read {} bytes at {}): block at {offset} differs from the model (expected {})",
                op.index,
                op.len,
                op.offset,
                match expected {
                    Expected::Data(i) => DataOf(Some(*i)),
                    _ => DataOf(None),
                }
            ),
        }
    }
}

struct DataOf(Option<u32>);

impl fmt::Display for DataOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(i) => write!(f, "data of op {i}"),
            None => f.write_str("zeros"),
        }
    }
}

/// What a worker got to do next.
enum Claim {
    Stop,
    Flush(Op),
    Io(Op, usize),
}

struct State<'s> {
    table: &'s mut [u32],
    next: u32,
    in_flight: [Option<(u64, u64)>; MAX_QD as usize],
    active: u32,
    flushing: bool,
    flushes: u32,
    failed: Option<StressError>,
    summary: Summary,
}

/// One stress run on a backend.
///
/// Run [`Config::qd`] [`Stress::worker`] futures concurrently (each with its own data buffer,
/// at least one block; ops longer than it move in pieces), then [`Stress::finish`].
pub struct Stress<'s, 'b, 'g, 'd> {
    backend: &'b Backend<'g, 'd>,
    cfg: Config,
    state: RefCell<State<'s>>,
    sink: RefCell<&'s mut dyn FnMut(Event)>,
}

impl<'s, 'b, 'g, 'd> Stress<'s, 'b, 'g, 'd> {
    /// A run of `cfg` on `backend`, with `table` as the model (one entry per block of the
    /// region; it is cleared) and `sink` receiving every [`Event`].
    pub fn new(
        backend: &'b Backend<'g, 'd>,
        cfg: Config,
        table: &'s mut [u32],
        sink: &'s mut dyn FnMut(Event),
    ) -> Result<Self, StressError> {
        cfg.check(backend.size(), table.len()).map_err(StressError::Config)?;
        table.fill(Entry::Initial.encode());
        let state = State {
            table,
            next: 0,
            in_flight: [None; MAX_QD as usize],
            active: 0,
            flushing: false,
            flushes: 0,
            failed: None,
            summary: Summary::default(),
        };
        Ok(Self { backend, cfg, state: RefCell::new(state), sink: RefCell::new(sink) })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// One worker: claims and runs ops until none is left or the run failed. `buf` is its data
    /// buffer (at least one block).
    pub async fn worker(&self, buf: &mut [u8]) {
        let bs = self.cfg.block as usize;
        let usable = buf.len() / bs * bs;
        let Some(buf) = buf.get_mut(..usable).filter(|b| !b.is_empty()) else {
            self.fail(StressError::Config(ConfigError::BufferTooSmall(buf.len())));
            return;
        };
        loop {
            match wait_for(|| self.try_claim()).await {
                Claim::Stop => return,
                Claim::Flush(op) => {
                    let result = self.backend.flush().await;
                    let mut s = self.state.borrow_mut();
                    s.flushing = false;
                    match result {
                        Ok(()) => {
                            let marker = FlushMarker { flush: s.flushes, ops: op.index };
                            s.flushes += 1;
                            s.summary.ops += 1;
                            s.summary.by_kind[4] += 1;
                            drop(s);
                            (self.sink.borrow_mut())(Event::Flush(marker));
                        }
                        Err(error) => s.failed = s.failed.or(Some(StressError::Io { op, error })),
                    }
                }
                Claim::Io(op, slot) => {
                    let result = self.execute(&op, buf).await;
                    let mut s = self.state.borrow_mut();
                    if let Some(r) = s.in_flight.get_mut(slot) {
                        *r = None;
                    }
                    s.active -= 1;
                    match result {
                        Ok(verified) => {
                            let sum = &mut s.summary;
                            sum.ops += 1;
                            sum.verified += verified;
                            let kind = match op.kind {
                                OpKind::Read => 0,
                                OpKind::Write => 1,
                                OpKind::Zeroes { .. } => 2,
                                OpKind::Discard | OpKind::Flush => 3,
                            };
                            sum.by_kind[kind] += 1;
                            match op.kind {
                                OpKind::Read => sum.bytes_read += op.len,
                                OpKind::Write => sum.bytes_written += op.len,
                                _ => {}
                            }
                            drop(s);
                            (self.sink.borrow_mut())(Event::Op { op, verified });
                        }
                        Err(e) => s.failed = s.failed.or(Some(e)),
                    }
                }
            }
        }
    }

    /// After the workers: waits until nothing is in flight, flushes, reports the last marker
    /// (covering every op) and returns the counters, or the first failure.
    pub async fn finish(&self) -> Result<Summary, StressError> {
        wait_until(|| self.state.borrow().active == 0 && !self.state.borrow().flushing).await;
        if let Some(e) = self.state.borrow().failed {
            return Err(e);
        }
        let ops = self.state.borrow().next;
        let op = Op { index: ops, kind: OpKind::Flush, offset: 0, len: 0 };
        self.backend.flush().await.map_err(|error| StressError::Io { op, error })?;
        let marker = {
            let mut s = self.state.borrow_mut();
            let marker = FlushMarker { flush: s.flushes, ops };
            s.flushes += 1;
            s.summary.by_kind[4] += 1;
            marker
        };
        (self.sink.borrow_mut())(Event::Flush(marker));
        Ok(self.state.borrow().summary)
    }

    /// The first failure so far.
    pub fn failure(&self) -> Option<StressError> {
        self.state.borrow().failed
    }

    fn fail(&self, e: StressError) {
        let mut s = self.state.borrow_mut();
        s.failed = s.failed.or(Some(e));
    }

    /// The next op if it may start now (`None`: wait).
    fn try_claim(&self) -> Option<Claim> {
        let mut s = self.state.borrow_mut();
        if s.failed.is_some() || s.next >= self.cfg.ops {
            return Some(Claim::Stop);
        }
        if s.flushing || s.active >= self.cfg.qd {
            return None;
        }
        let op = op_at(&self.cfg, s.next);
        if op.kind == OpKind::Flush {
            if s.active > 0 {
                return None;
            }
            s.flushing = true;
            s.next += 1;
            return Some(Claim::Flush(op));
        }
        if s.in_flight.iter().flatten().any(|&(a, b)| a < op.end() && op.offset < b) {
            return None;
        }
        let slot = s.in_flight.iter().position(Option::is_none)?;
        s.in_flight[slot] = Some((op.offset, op.end()));
        if let Some(entry) = Entry::after(&op) {
            let bs = u64::from(self.cfg.block);
            let first = ((op.offset - self.cfg.start) / bs) as usize;
            let count = (op.len / bs) as usize;
            if let Some(blocks) = s.table.get_mut(first..first + count) {
                blocks.fill(entry.encode());
            }
        }
        s.next += 1;
        s.active += 1;
        s.summary.max_in_flight = s.summary.max_in_flight.max(s.active);
        Some(Claim::Io(op, slot))
    }

    /// Runs one op; returns the bytes verified.
    async fn execute(&self, op: &Op, buf: &mut [u8]) -> Result<u64, StressError> {
        let io = |error| StressError::Io { op: *op, error };
        match op.kind {
            OpKind::Zeroes { unmap } => return self.backend.write_zeroes(op.offset, op.len, unmap).await.map(|()| 0).map_err(io),
            OpKind::Discard => return self.backend.discard(op.offset, op.len).await.map(|()| 0).map_err(io),
            OpKind::Flush => return self.backend.flush().await.map(|()| 0).map_err(io),
            OpKind::Read | OpKind::Write => {}
        }
        let bs = u64::from(self.cfg.block);
        let mut verified = 0;
        let mut at = op.offset;
        while at < op.end() {
            let n = buf.len().min((op.end() - at) as usize);
            let piece = &mut buf[..n];
            if op.kind == OpKind::Write {
                fill_data(self.cfg.seed, op.index, at, piece);
                self.backend.write(at, piece).await.map_err(io)?;
            } else {
                self.backend.read(at, piece).await.map_err(io)?;
                let s = self.state.borrow();
                for (k, block) in piece.chunks(bs as usize).enumerate() {
                    let offset = at + k as u64 * bs;
                    let index = ((offset - self.cfg.start) / bs) as usize;
                    let entry = s.table.get(index).map_or(Entry::Initial, |&e| Entry::decode(e));
                    if !block_matches(self.cfg.seed, entry, offset, block) {
                        return Err(StressError::Mismatch { op: *op, offset, expected: expected(entry) });
                    }
                    if expected(entry) != Expected::Unknown {
                        verified += bs;
                    }
                }
            }
            at += n as u64;
        }
        Ok(verified)
    }
}
