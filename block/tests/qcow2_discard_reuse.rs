//! A qcow2 cluster freed by a guest discard is discarded in the file and may then be allocated
//! again: the file discard must be finished before the cluster can be reused, or it punches out
//! the new data (requests in flight together complete in any order). Found as zeros in place of
//! written data, intermittently, in the O_DIRECT random-operations test on io_uring; here a
//! device that holds discards makes the order certain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::pin;
use std::task::{Context, Poll};

use common::poll_once;
use futures::executor::block_on;
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::{
    BlockDevice, DeviceError, DeviceInfo, DeviceOp, DeviceRequest, SubmitError, Ticket,
};
use strata_block::io::cache::CacheSlot;
use strata_block::driver::qcow2::create::{create, CreateOptions};
use strata_block::{Backend, BackendOptions, Graph, Result};

/// What a [`SlowDiscards`] ticket stands for.
enum Req {
    /// Passed to the device below at once.
    Passed(Ticket),
    /// A discard not yet passed on, polled this many times.
    Held { offset: u64, len: u64, polls: u32 },
    /// A discard passed on after its hold.
    Discarding {
        inner: Ticket,
        offset: u64,
        len: u64,
    },
}

/// A device that holds each discard for `hold` polls before passing it to the device below (a
/// slow hole punch), and counts writes submitted over a range a discard in flight covers.
struct SlowDiscards<'a> {
    inner: &'a dyn BlockDevice,
    hold: u32,
    reqs: RefCell<HashMap<u32, Req>>,
    next: Cell<u32>,
    /// Discards submitted and not yet complete.
    discards_in_flight: Cell<u32>,
    /// Writes (or write-zeroes) submitted while a discard over their range was in flight.
    writes_under_discard: Cell<u32>,
}

impl<'a> SlowDiscards<'a> {
    fn new(inner: &'a dyn BlockDevice, hold: u32) -> Self {
        Self {
            inner,
            hold,
            reqs: RefCell::default(),
            next: Cell::new(0),
            discards_in_flight: Cell::new(0),
            writes_under_discard: Cell::new(0),
        }
    }
}

impl BlockDevice for SlowDiscards<'_> {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> std::result::Result<Ticket, SubmitError> {
        let end = req.offset + req.len;
        if matches!(req.op, DeviceOp::Write | DeviceOp::WriteZeroes { .. }) {
            let under = self.reqs.borrow().values().any(|r| match *r {
                Req::Held { offset, len, .. } | Req::Discarding { offset, len, .. } => {
                    offset < end && req.offset < offset + len
                }
                Req::Passed(_) => false,
            });
            if under {
                self.writes_under_discard
                    .set(self.writes_under_discard.get() + 1);
            }
        }
        let r = if req.op == DeviceOp::Discard {
            self.discards_in_flight
                .set(self.discards_in_flight.get() + 1);
            Req::Held {
                offset: req.offset,
                len: req.len,
                polls: 0,
            }
        } else {
            // SAFETY: forwarded unchanged; every poll of our ticket polls the device's ticket
            // until it is Ready, so the caller's guarantee for the segments carries over.
            Req::Passed(unsafe { self.inner.submit(req) }?)
        };
        let id = self.next.get();
        self.next.set(id + 1);
        self.reqs.borrow_mut().insert(id, r);
        Ok(Ticket(id))
    }

    fn poll(
        &self,
        ticket: Ticket,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), DeviceError>> {
        let mut reqs = self.reqs.borrow_mut();
        let Some(r) = reqs.get_mut(&ticket.0) else {
            return Poll::Ready(Err(DeviceError::Invalid));
        };
        let result = match r {
            Req::Passed(inner) => std::task::ready!(self.inner.poll(*inner, cx)),
            Req::Held { offset, len, polls } => {
                *polls += 1;
                if *polls >= self.hold {
                    let req = DeviceRequest {
                        op: DeviceOp::Discard,
                        offset: *offset,
                        len: *len,
                        segments: &[],
                    };
                    // SAFETY: a discard carries no memory.
                    match unsafe { self.inner.submit(&req) } {
                        Ok(inner) => {
                            *r = Req::Discarding {
                                inner,
                                offset: *offset,
                                len: *len,
                            }
                        }
                        Err(SubmitError::Busy) => {}
                        Err(SubmitError::Invalid(e)) => {
                            reqs.remove(&ticket.0);
                            self.discards_in_flight
                                .set(self.discards_in_flight.get() - 1);
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Req::Discarding { inner, .. } => {
                let result = std::task::ready!(self.inner.poll(*inner, cx));
                self.discards_in_flight
                    .set(self.discards_in_flight.get() - 1);
                result
            }
        };
        reqs.remove(&ticket.0);
        Poll::Ready(result)
    }

    fn unplug(&self) {
        self.inner.unplug();
    }
}

/// Polls a flush of `be` until a discard is in flight at `slow`, then that flush and a write of
/// `data` at `offset` together until both are done; their results.
fn flush_beside_write(
    be: &Backend<'_, '_>,
    slow: &SlowDiscards<'_>,
    offset: u64,
    data: &[u8],
) -> (Result<()>, Result<()>) {
    let mut flush = pin!(be.flush());
    let mut flushed = None;
    for _ in 0..10_000 {
        if slow.discards_in_flight.get() > 0 {
            break;
        }
        if let Poll::Ready(r) = poll_once(flush.as_mut()) {
            flushed = Some(r);
            break;
        }
    }
    assert_eq!(
        slow.discards_in_flight.get(),
        1,
        "the flush passes the freed cluster's discard to the file"
    );
    let mut write = pin!(be.write(offset, data));
    let mut written = None;
    for _ in 0..10_000 {
        if flushed.is_none() {
            if let Poll::Ready(r) = poll_once(flush.as_mut()) {
                flushed = Some(r);
            }
        }
        if written.is_none() {
            if let Poll::Ready(r) = poll_once(write.as_mut()) {
                written = Some(r);
            }
        }
        if let (Some(f), Some(w)) = (&flushed, &written) {
            return (*f, *w);
        }
    }
    panic!("the flush and the write did not complete: a hang");
}

#[test]
fn a_cluster_freed_by_discard_is_reused_only_after_the_file_discard() {
    const CS: u64 = 4096;
    let mut memory = vec![0u8; 1 << 20];
    let disk: RamDisk<'_, 16> = RamDisk::new(&mut memory, 512, RamConfig::default());
    {
        let mut bounce = vec![0u8; 4 * 4096];
        let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
        let leaf = graph.add_leaf("d", &disk).unwrap();
        block_on(create(
            &graph.io(),
            leaf,
            &CreateOptions {
                cluster_bits: 12,
                ..CreateOptions::new(256 << 10)
            },
        ))
        .unwrap();
    }
    let slow = SlowDiscards::new(&disk, 200);
    let slots: Vec<CacheSlot> = (0..16).map(|_| CacheSlot::new()).collect();
    let mut bounce = vec![0u8; 4 * 4096];
    let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
    graph.set_metadata_cache(&slots);
    graph.add_leaf("d", &slow).unwrap();
    let root = common::open(&mut graph, "driver=qcow2,file=d").unwrap();
    let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();

    // Guest cluster 0 gets a host cluster; the discard frees it once the table change is
    // stable, in the next flush.
    block_on(be.write(0, &[0x11; CS as usize])).unwrap();
    block_on(be.flush()).unwrap();
    block_on(be.discard(0, CS)).unwrap();

    // The flush runs until its discard of the freed cluster reaches the device (held there);
    // then a write that allocates runs alongside it.
    let data = [0x22u8; CS as usize];
    let (flushed, written) = flush_beside_write(&be, &slow, CS, &data);
    flushed.unwrap();
    written.unwrap();

    let mut back = [0u8; CS as usize];
    block_on(be.read(CS, &mut back)).unwrap();
    assert!(
        back == data,
        "the new data was punched out by the freed cluster's discard"
    );
    assert_eq!(
        slow.writes_under_discard.get(),
        0,
        "a write reached a cluster while its discard was in flight"
    );
    let mut first = [0xffu8; CS as usize];
    block_on(be.read(0, &mut first)).unwrap();
    assert!(
        first.iter().all(|&b| b == 0),
        "the discarded cluster reads as zeros"
    );
    block_on(be.close()).unwrap();
}
