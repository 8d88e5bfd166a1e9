//! Tests of the tracked-request table's conflicts with the overlap filter on and off.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll};

use super::*;

fn node(index: u16) -> NodeId {
    NodeId { index, generation: 0 }
}

/// True if `wait_serialising` of `t` is done at its first poll.
fn ready(t: &Tracked<'_>) -> bool {
    let waker = futures::task::noop_waker();
    let fut = pin!(t.wait_serialising());
    fut.poll(&mut Context::from_waker(&waker)) == Poll::Ready(())
}

#[test]
fn requests_entered_before_the_first_serialising_one_are_counted() {
    let table: TrackerOf<[Option<Entry>; 8]> = TrackerOf::new();
    let t: &Tracker = &table;
    let a = t.try_begin(node(1), ReqKind::Write, 0, 4096).unwrap_or_else(|| panic!("no free slot"));
    let b = t.try_begin(node(1), ReqKind::Write, 0x10000, 4096).unwrap_or_else(|| panic!("no free slot"));
    assert!(!t.filter.is_on() && ready(&a) && ready(&b));
    // Widened to [0, 64K): overlaps `a`, which came first.
    let s = t.try_begin(node(1), ReqKind::Write, 0x1000, 4096).unwrap_or_else(|| panic!("no free slot"));
    s.serialise(0x10000);
    assert!(t.filter.is_on());
    assert!(!ready(&s));
    // `b` is earlier than `s` and does not overlap it; a later request inside `s` waits.
    assert!(ready(&b));
    let later = t.try_begin(node(1), ReqKind::Read, 0x2000, 512).unwrap_or_else(|| panic!("no free slot"));
    assert!(!ready(&later));
    // Another node's request at the same offsets does not conflict.
    let other = t.try_begin(node(2), ReqKind::Write, 0x2000, 512).unwrap_or_else(|| panic!("no free slot"));
    assert!(ready(&other));
    drop(a);
    assert!(ready(&s));
    drop(s);
    // No serialising request left: the filter is off and nothing is counted.
    assert!(!t.filter.is_on());
    assert!(t.slots.borrow().iter().flatten().all(|e| e.mark.is_none()));
    assert!(ready(&later) && ready(&b));
}

#[test]
fn a_serialising_request_alone_in_its_range_waits_for_nothing() {
    let table: TrackerOf<[Option<Entry>; 64]> = TrackerOf::new();
    let t: &Tracker = &table;
    let held: Vec<Tracked<'_>> = (0..32u64)
        .map(|i| {
            let r = t.try_begin(node(1), ReqKind::Write, i * 0x20000, 4096).unwrap_or_else(|| panic!("no free slot"));
            r.serialise(0x10000);
            r
        })
        .collect();
    assert!(held.iter().all(ready));
    // One more in the granule of the first: waits for it, whichever bucket it lands in.
    let s = t.try_begin(node(1), ReqKind::Write, 0x8000, 4096).unwrap_or_else(|| panic!("no free slot"));
    s.serialise(0x10000);
    assert!(!ready(&s));
    drop(held);
    assert!(ready(&s));
}

/// Polls `t.begin_read` once: the hold, or `None` if the read waits.
fn begin_read_now<'t>(t: &'t Tracker, n: NodeId, offset: u64, bytes: u64) -> Option<ReadHold<'t>> {
    let waker = futures::task::noop_waker();
    let mut fut = pin!(t.begin_read(n, offset, bytes));
    match fut.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(hold) => Some(hold),
        Poll::Pending => None,
    }
}

#[test]
fn quiet_reads_take_no_slot_and_serialising_requests_wait_for_them() {
    let table: TrackerOf<[Option<Entry>; 2]> = TrackerOf::new();
    let t: &Tracker = &table;
    // With nothing serialising, reads are only counted: more of them than the table has slots.
    let reads: Vec<ReadHold<'_>> = (0..4u64).map(|i| begin_read_now(t, node(1), i * 0x10_0000, 4096).unwrap_or_else(|| panic!("read waits"))).collect();
    assert!(reads.iter().all(|r| matches!(r, ReadHold::Quiet(_))));
    assert_eq!(t.in_use(), 0);
    // A serialising write over the first read's cluster waits for it (though it began later)...
    let w = t.try_begin(node(1), ReqKind::Write, 0x800, 512).unwrap_or_else(|| panic!("no free slot"));
    w.serialise(0x10000);
    assert!(!ready(&w));
    // ...and one elsewhere, or on another node, does not.
    let far = t.try_begin(node(2), ReqKind::Write, 0, 512).unwrap_or_else(|| panic!("no free slot"));
    far.serialise(0x10000);
    assert!(ready(&far));
    drop(far);
    // While a serialising request is in the table, a read takes a slot and waits for it.
    assert!(begin_read_now(t, node(1), 0x1000, 512).is_none(), "a read inside the write's cluster waits");
    let later = begin_read_now(t, node(1), 0x20_0000, 512).unwrap_or_else(|| panic!("a read elsewhere goes on"));
    assert!(matches!(later, ReadHold::Tracked(_)));
    drop(later);
    let mut reads = reads.into_iter();
    drop(reads.next());
    assert!(ready(&w), "the write goes on once the read it overlaps is done");
    drop(w);
    drop(reads);
    assert_eq!((t.in_use(), t.quiet_count.get()), (0, 0));
    // Every read's buckets are uncounted again.
    for i in 0..4u64 {
        let buckets = OverlapFilter::buckets_of(node(1), i * 0x10_0000, 4096).unwrap_or_else(|| panic!("a 4 KiB range is counted in buckets"));
        assert!(t.quiet_reads.clear_of(buckets));
    }
}

#[test]
fn a_wide_serialising_request_waits_for_any_quiet_read() {
    let table: TrackerOf<[Option<Entry>; 4]> = TrackerOf::new();
    let t: &Tracker = &table;
    let read = begin_read_now(t, node(1), 0x1234_0000, 4096).unwrap_or_else(|| panic!("read waits"));
    // Over more granules than the filter counts: it cannot tell where, so it waits.
    let w = t.try_begin(node(1), ReqKind::Discard, 0, 1 << 30).unwrap_or_else(|| panic!("no free slot"));
    w.serialise(0x10000);
    assert!(!ready(&w));
    drop(read);
    assert!(ready(&w));
}
