//! Crash-consistency rule 2 under out-of-order completion: an L2 entry reaches the disk only
//! after the data cluster it points at is stable, i.e. after a flush *submitted after the data
//! write completed*. Many allocating writes and flushes run at once over a device that
//! completes requests late and in a shuffled order; a recording wrapper logs every request
//! with its data, and the log is checked against the final image's L2 tables.
//!
//! The write-back used to flush once and then write every dirty table slice: a slice that an
//! allocation changed while that flush (or an earlier slice's write) was running went out
//! without a flush covering its data. `tests/crash.rs` found it with a thread-pool leaf.

#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::task::{Context, Poll};

use common::Rng;
use futures::executor::block_on;
use futures::future::join_all;
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::{BlockDevice, DeviceError, DeviceInfo, DeviceOp, DeviceRequest, SubmitError, Ticket};
use strata_block::driver::qcow2::create::{create, CreateOptions};
use strata_block::io::cache::CacheSlot;
use strata_block::{Backend, BackendOptions, Graph};

const CS: u64 = 64 << 10;
const SIZE: u64 = 16 << 20;

/// One request as the device saw it: when it was submitted and when it completed (one clock
/// for both), and a write's data.
struct Event {
    op: DeviceOp,
    offset: u64,
    submitted: u64,
    completed: Option<u64>,
    data: Vec<u8>,
}

/// Forwards to a device and logs submissions and completions on one clock.
struct OrderLog<'a> {
    inner: &'a dyn BlockDevice,
    clock: RefCell<u64>,
    events: RefCell<Vec<Event>>,
    by_ticket: RefCell<HashMap<Ticket, usize>>,
}

impl OrderLog<'_> {
    fn tick(&self) -> u64 {
        let mut c = self.clock.borrow_mut();
        *c += 1;
        *c
    }
}

impl BlockDevice for OrderLog<'_> {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        let data = if req.op == DeviceOp::Write {
            // SAFETY: the caller keeps the segments valid until completion; this reads them at
            // submission, before the device below sees them.
            req.segments.iter().flat_map(|s| unsafe { core::slice::from_raw_parts(s.ptr, s.len) }.iter().copied()).collect()
        } else {
            Vec::new()
        };
        // SAFETY: forwarded unchanged; `poll` goes to the same device.
        let ticket = unsafe { self.inner.submit(req) }?;
        let submitted = self.tick();
        let mut events = self.events.borrow_mut();
        self.by_ticket.borrow_mut().insert(ticket, events.len());
        events.push(Event { op: req.op, offset: req.offset, submitted, completed: None, data });
        Ok(ticket)
    }

    fn poll(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        let r = self.inner.poll(ticket, cx);
        if r.is_ready() {
            if let Some(i) = self.by_ticket.borrow_mut().remove(&ticket) {
                let t = self.tick();
                self.events.borrow_mut()[i].completed = Some(t);
            }
        }
        r
    }

    fn unplug(&self) {
        self.inner.unplug();
    }
}

/// Runs the workload for `seed` and returns rule-2 violations found in the log.
fn violations(seed: u64) -> Vec<String> {
    let mut base_mem: Vec<u8> = (0..SIZE).map(|i| (i / 512) as u8).collect();
    let base = RamDisk::<'_, 64>::new(&mut base_mem, 512, RamConfig::default());
    let mut top_mem = vec![0u8; 32 << 20];
    let top = RamDisk::<'_, 64>::new(&mut top_mem, 512, RamConfig { delay_polls: 5, shuffle_seed: seed });
    {
        let mut bounce = vec![0u8; 4 * 4096];
        let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
        let leaf = graph.add_leaf("top", &top).unwrap();
        let opts = CreateOptions { backing: Some("base"), backing_fmt: Some("raw"), ..CreateOptions::new(SIZE) };
        block_on(create(&graph.io(), leaf, &opts)).unwrap();
    }
    let log = OrderLog { inner: &top, clock: RefCell::new(0), events: RefCell::new(Vec::new()), by_ticket: RefCell::new(HashMap::new()) };
    {
        let slots: Vec<CacheSlot> = (0..64).map(|_| CacheSlot::new()).collect();
        let mut bounce = vec![0u8; 16 * CS as usize];
        let mut graph: Graph<'_, 4, 64> = Graph::new(&mut bounce, CS as usize);
        graph.set_metadata_cache(&slots);
        graph.add_leaf("top", &log).unwrap();
        let base_dev: &dyn BlockDevice = &base;
        let root = block_on(graph.open("driver=qcow2,file=top", &mut |name| (name == "base").then_some(base_dev))).unwrap();
        let be = Backend::new(&graph, root, BackendOptions::default()).unwrap();
        // Eight writers, each allocating clusters (4 KiB into each, so each allocation copies
        // from the base), and a flush after every third write.
        let mut rng = Rng::new(seed);
        let plans: Vec<Vec<u64>> = (0..8)
            .map(|w| (0..12).map(|i| ((i * 8 + w) * 2 + rng.below(2)) * CS + rng.below(15) * 4096).collect())
            .collect();
        let writers = plans.iter().enumerate().map(|(w, plan)| {
            let be = &be;
            async move {
                let data = vec![0x40 + w as u8; 4096];
                for (i, &offset) in plan.iter().enumerate() {
                    be.write(offset, &data).await.unwrap();
                    if i % 3 == 2 {
                        be.flush().await.unwrap();
                    }
                }
            }
        });
        block_on(join_all(writers));
        block_on(be.close()).unwrap();
    }

    let events = log.events.into_inner();
    // The final L2 tables: where they are, from the L1 table.
    let image = &top_mem;
    let be64 = |at: u64| u64::from_be_bytes(image[at as usize..at as usize + 8].try_into().unwrap());
    let l1_offset = be64(40);
    let l1_size = u64::from(u32::from_be_bytes(image[36..40].try_into().unwrap()));
    let tables: Vec<u64> = (0..l1_size).map(|i| be64(l1_offset + 8 * i) & 0x00ff_ffff_ffff_fe00).filter(|&t| t != 0).collect();
    assert!(!tables.is_empty(), "no L2 table was written");

    let mut found = Vec::new();
    for t in events.iter().filter(|e| e.op == DeviceOp::Write) {
        for &table in &tables {
            let (from, to) = (t.offset.max(table), (t.offset + t.data.len() as u64).min(table + CS));
            for at in (from..to).step_by(8).filter(|a| (a - table) % 8 == 0) {
                let i = (at - t.offset) as usize;
                let entry = u64::from_be_bytes(t.data[i..i + 8].try_into().unwrap());
                let host = entry & 0x00ff_ffff_ffff_fe00;
                if host == 0 {
                    continue;
                }
                // The last data write into that cluster submitted before this table write...
                let Some(data) = events
                    .iter()
                    .rev()
                    .find(|d| d.op == DeviceOp::Write && d.offset / CS * CS == host && d.submitted < t.submitted && !tables.contains(&host))
                else {
                    continue;
                };
                // ...must have completed, and a flush submitted after that must have completed
                // before the table write was submitted.
                let stable = data.completed.is_some_and(|done| {
                    events.iter().any(|f| f.op == DeviceOp::Flush && f.submitted > done && f.completed.is_some_and(|c| c < t.submitted))
                });
                if !stable {
                    found.push(format!(
                        "seed {seed}: L2 write at {:#x} (submitted {}) points at {host:#x}, whose data write (submitted {}, completed {:?}) no flush covered",
                        at, t.submitted, data.submitted, data.completed
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn table_entries_wait_for_a_flush_covering_their_data() {
    let mut all = Vec::new();
    for seed in 1..=12 {
        all.extend(violations(seed));
    }
    assert!(all.is_empty(), "{} rule-2 violations, e.g.:\n{}", all.len(), all.iter().take(5).cloned().collect::<Vec<_>>().join("\n"));
}
