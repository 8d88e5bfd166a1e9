//! Recording over a RAM disk: events, bytes, seqs and out-of-order completions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

extern crate std;

use std::cell::RefCell;
use std::task::{Context, Poll, Waker};
use std::vec::Vec;

use super::*;
use crate::dev::ram::{RamConfig, RamDisk};

/// An event with its bytes copied out.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owned {
    Write { seq: Seq, submitted: Seq, offset: u64, data: Vec<u8> },
    Zeroes { seq: Seq, submitted: Seq, offset: u64, len: u64, unmap: bool },
    Discard { seq: Seq, submitted: Seq, offset: u64, len: u64 },
    FlushSubmitted { seq: Seq },
    Flushed { seq: Seq, submitted: Seq },
    Grow { seq: Seq, capacity: u64 },
}

#[derive(Default)]
struct Log(RefCell<Vec<Owned>>);

impl RecordSink for Log {
    fn event(&self, e: Event<'_>) {
        let owned = match e {
            Event::Write { seq, submitted, offset, data, result } => {
                assert!(result.is_ok());
                Owned::Write { seq, submitted, offset, data: data.segments().flatten().copied().collect() }
            }
            Event::WriteZeroes { seq, submitted, offset, len, unmap, .. } => Owned::Zeroes { seq, submitted, offset, len, unmap },
            Event::Discard { seq, submitted, offset, len, .. } => Owned::Discard { seq, submitted, offset, len },
            Event::FlushSubmitted { seq } => Owned::FlushSubmitted { seq },
            Event::Flushed { seq, submitted, .. } => Owned::Flushed { seq, submitted },
            Event::Grow { seq, capacity } => Owned::Grow { seq, capacity },
        };
        self.0.borrow_mut().push(owned);
    }
}

fn poll(dev: &dyn BlockDevice, t: Ticket) -> Poll<Result<(), DeviceError>> {
    dev.poll(t, &mut Context::from_waker(Waker::noop()))
}

fn wait(dev: &dyn BlockDevice, t: Ticket) {
    for _ in 0..1000 {
        if let Poll::Ready(r) = poll(dev, t) {
            return r.unwrap();
        }
    }
    panic!("request never completed");
}

fn submit(dev: &dyn BlockDevice, op: DeviceOp, offset: u64, len: u64, segs: &[Segment]) -> Ticket {
    // SAFETY: every caller waits for the ticket before its buffers go out of scope.
    unsafe { dev.submit(&DeviceRequest { op, offset, len, segments: segs }) }.unwrap()
}

#[test]
fn records_every_mutation_with_its_bytes() {
    let mut mem = [0u8; 64 * 1024];
    let ram: RamDisk<'_, 8> = RamDisk::new(&mut mem, 512, RamConfig::default());
    let log = Log::default();
    let rec: Recording<'_, 8, 4> = Recording::new(&ram, &log);
    let a = [0xaau8; 1024];
    let b = [0xbbu8; 512];
    let t = submit(&rec, DeviceOp::Write, 4096, 1536, &[Segment::from_ref(&a), Segment::from_ref(&b)]);
    wait(&rec, t);
    let t = submit(&rec, DeviceOp::WriteZeroes { unmap: true }, 0, 512, &[]);
    wait(&rec, t);
    let t = submit(&rec, DeviceOp::Discard, 512, 1024, &[]);
    wait(&rec, t);
    let t = submit(&rec, DeviceOp::Flush, 0, 0, &[]);
    wait(&rec, t);
    let mut out = [0u8; 512];
    let t = submit(&rec, DeviceOp::Read, 4096, 512, &[Segment::from_mut(&mut out)]);
    wait(&rec, t);
    assert_eq!(out, [0xaa; 512]);
    let mut data = a.to_vec();
    data.extend_from_slice(&b);
    assert_eq!(
        *log.0.borrow(),
        [
            Owned::Write { seq: 1, submitted: 0, offset: 4096, data },
            Owned::Zeroes { seq: 3, submitted: 2, offset: 0, len: 512, unmap: true },
            Owned::Discard { seq: 5, submitted: 4, offset: 512, len: 1024 },
            Owned::FlushSubmitted { seq: 6 },
            Owned::Flushed { seq: 7, submitted: 6 },
        ]
    );
    assert_eq!(rec.seq(), 8);
    assert_eq!(rec.in_flight(), 0);
}

#[test]
fn out_of_order_completions_and_flush_coverage() {
    let mut mem = [0u8; 256 * 1024];
    let ram: RamDisk<'_, 32> = RamDisk::new(&mut mem, 512, RamConfig { delay_polls: 3, shuffle_seed: 0x1234_5678 });
    let log = Log::default();
    let rec: Recording<'_, 32, 4> = Recording::new(&ram, &log);
    let bufs: Vec<[u8; 512]> = (0..16u8).map(|i| [i; 512]).collect();
    let mut tickets = Vec::new();
    for (i, buf) in bufs.iter().enumerate() {
        tickets.push(submit(&rec, DeviceOp::Write, i as u64 * 4096, 512, &[Segment::from_ref(buf)]));
        if i == 7 {
            tickets.push(submit(&rec, DeviceOp::Flush, 0, 0, &[]));
        }
    }
    // Poll in reverse so completions are reported out of submission order.
    let mut pending: Vec<Ticket> = tickets.clone();
    while !pending.is_empty() {
        pending.retain(|&t| poll(&rec, t).is_pending());
        pending.reverse();
    }
    let events = log.0.borrow();
    let writes: Vec<_> = events.iter().filter_map(|e| if let Owned::Write { seq, submitted, offset, data } = e { Some((*seq, *submitted, *offset, data)) } else { None }).collect();
    assert_eq!(writes.len(), 16);
    for (seq, submitted, offset, data) in &writes {
        assert!(seq > submitted);
        assert_eq!(data.as_slice(), &[(*offset / 4096) as u8; 512][..]);
    }
    let completion_order: Vec<u64> = writes.iter().map(|w| w.2 / 4096).collect();
    assert_ne!(completion_order, (0..16).collect::<Vec<_>>(), "completions should come out of order");
    // Seqs are unique and increasing in the order events were reported.
    let seqs: Vec<Seq> = events.iter().map(|e| match e {
        Owned::Write { seq, .. } | Owned::Zeroes { seq, .. } | Owned::Discard { seq, .. } | Owned::FlushSubmitted { seq } | Owned::Flushed { seq, .. } | Owned::Grow { seq, .. } => *seq,
    }).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // The flush was submitted before any completion: it covers no write.
    let (flush_seq, flush_sub) = events.iter().find_map(|e| if let Owned::Flushed { seq, submitted } = e { Some((*seq, *submitted)) } else { None }).unwrap();
    assert_eq!(flush_sub, 8);
    assert!(flush_seq > flush_sub);
    assert!(writes.iter().all(|w| w.0 > flush_sub), "no write completed before the flush was submitted");
    assert_eq!(mem[5 * 4096], 5);
}

#[test]
fn limits_and_busy() {
    let mut mem = [0u8; 16 * 1024];
    let ram: RamDisk<'_, 8> = RamDisk::new(&mut mem, 512, RamConfig { delay_polls: 5, shuffle_seed: 0 });
    let log = Log::default();
    let rec: Recording<'_, 2, 2> = Recording::new(&ram, &log);
    assert_eq!(rec.info().max_segments, 2);
    assert_eq!(rec.info().queue_depth, 2);
    let buf = [1u8; 512];
    let segs = [Segment::from_ref(&buf); 3];
    // SAFETY: refused before the device sees it.
    let r = unsafe { rec.submit(&DeviceRequest { op: DeviceOp::Write, offset: 0, len: 1536, segments: &segs }) };
    assert_eq!(r, Err(SubmitError::Invalid(DeviceError::Invalid)));
    let t1 = submit(&rec, DeviceOp::Write, 0, 512, &segs[..1]);
    let t2 = submit(&rec, DeviceOp::Flush, 0, 0, &[]);
    // SAFETY: refused as busy before the device sees it.
    let r = unsafe { rec.submit(&DeviceRequest { op: DeviceOp::Write, offset: 512, len: 512, segments: &segs[..1] }) };
    assert_eq!(r, Err(SubmitError::Busy));
    // Reads take no slot.
    let mut out = [0u8; 512];
    let t3 = submit(&rec, DeviceOp::Read, 1024, 512, &[Segment::from_mut(&mut out)]);
    wait(&rec, t1);
    wait(&rec, t2);
    wait(&rec, t3);
    // A RAM disk cannot grow; nothing is recorded.
    assert_eq!(rec.grow(1 << 20), Err(DeviceError::NoSpace));
    assert_eq!(rec.capacity(), 16 * 1024);
    assert_eq!(rec.grow(512), Ok(16 * 1024));
    assert!(!log.0.borrow().iter().any(|e| matches!(e, Owned::Grow { .. })));
}

#[test]
fn recordings_sharing_a_counter_take_seqs_in_one_order() {
    let (mut ma, mut mb) = ([0u8; 8192], [0u8; 8192]);
    let a: RamDisk<'_, 4> = RamDisk::new(&mut ma, 512, RamConfig::default());
    let b: RamDisk<'_, 4> = RamDisk::new(&mut mb, 512, RamConfig::default());
    let (log_a, log_b) = (Log::default(), Log::default());
    let counter = core::cell::Cell::new(10);
    let ra: Recording<'_, 4, 2> = Recording::sharing(&a, &log_a, &counter);
    let rb: Recording<'_, 4, 2> = Recording::sharing(&b, &log_b, &counter);
    let buf = [7u8; 512];
    let ta = submit(&ra, DeviceOp::Write, 0, 512, &[Segment::from_ref(&buf)]);
    let tb = submit(&rb, DeviceOp::Write, 512, 512, &[Segment::from_ref(&buf)]);
    wait(&rb, tb);
    wait(&ra, ta);
    let t = submit(&ra, DeviceOp::Flush, 0, 0, &[]);
    wait(&ra, t);
    assert_eq!(*log_a.0.borrow(), [Owned::Write { seq: 13, submitted: 10, offset: 0, data: buf.to_vec() }, Owned::FlushSubmitted { seq: 14 }, Owned::Flushed { seq: 15, submitted: 14 }]);
    assert_eq!(*log_b.0.borrow(), [Owned::Write { seq: 12, submitted: 11, offset: 512, data: buf.to_vec() }]);
    assert_eq!((ra.seq(), rb.seq(), counter.get()), (16, 16, 16));
}
