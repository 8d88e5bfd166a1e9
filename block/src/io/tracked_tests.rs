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
