//! Injected faults in qcow2's metadata paths (`docs/ARCHITECTURE.md`, "Testing": faults): a
//! fault is armed at the k-th occurrence of one named event (QEMU's blkdebug names) during a
//! workload of allocating writes, write-zeroes, discards, flushes and a table growth; the
//! failing request reports the error, and whatever happened, `qemu-img check` finds no
//! corruption afterwards (leaks are allowed: an operation cut short may leave allocated clusters
//! nothing points at).
//!
//! Every fault goes through the `blkdebug` filter as QEMU's tests inject them
//! (`driver=qcow2,file.driver=blkdebug,file.inject-error.0.event=E,…`), with QEMU's rule
//! fields only. An inject-error rule on E is armed by an occurrence of E in the rule's `state`,
//! and from then on every request reaching the file fails (not `once`: the next request may be
//! an advisory discard whose failure is ignored). blkdebug has no counter, so the state pins
//! the occurrence:
//!
//! - **A state chain over any events.** The dry run records the workload's timeline: every
//!   event, and every request reaching the file (through a logging wrapper around the host
//!   file). `set-state` rules walk the node's state from 1 along a path through that timeline —
//!   in state i, the next occurrence of event X_i moves it to i + 1 — and the inject-error rule
//!   on E waits in the last state. Rare events (flushes, refcount block allocations, L1
//!   updates) jump far, so the k-th of 194 `write_aio`s needs a handful of rules rather than
//!   193; the test finds the shortest path (a forward pass over the timeline), which must fit a
//!   blkdebug node's rule table (`MAX_RULES`, 32: at most 31 `set-state` rules).
//! - **Occurrences no request separates are one fault.** Arming only changes what happens to
//!   requests, so arming at the j-th E and at the k-th E is the same fault when no request
//!   reaches the file between them (a discard frees a run of 100+ clusters, raising
//!   `cluster_free` for each with no file I/O between, and the middle of such a run is reached
//!   through its first). The path may end at any occurrence of E in the k-th's request-free
//!   stretch.
//! - **`sector=` where no short chain exists.** A discard frees a run of clusters and discards
//!   each on the file, so `cluster_free`s in the middle of the run are separated by requests
//!   and by no other event. Then the rule is armed earlier (at an occurrence of E a short chain
//!   reaches) and pinned with QEMU's `sector=` to the request after the k-th E (the discard of
//!   the k-th freed cluster); the path may end wherever no request between the arming and that
//!   request covers its sector. Such a rule fails only requests on that sector, so the
//!   workload goes on around it.
//!
//! Each fault run checks that the pinning hit: the requests that reached the file are exactly
//! the dry run's up to the first request after the k-th E, and that one failed in blkdebug (and,
//! unpinned, every request after it). The dry run counts events through a test hook ([`EventHook`]), which
//! observes and injects nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::task::{Context, Poll};

use qemu_runner::img::block::dev::file::{HostFile, HostFileOptions};
use qemu_runner::img::block::dev::{
    BlockDevice, DeviceError, DeviceInfo, DeviceOp, DeviceRequest, SubmitError, Ticket,
};
use qemu_runner::img::block::io::cache::{CacheSlot, Inflater};
use qemu_runner::img::block::io::events::{Event, EventHook};
use qemu_runner::img::block::{Backend, BackendOptions, Graph, NodeId, Result};
use qemu_runner::img::image::block_on;
use strata_tests::*;

/// One thing in a workload's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// An event raised by the qcow2 node.
    Event(Event),
    /// A request that reached the image file: operation, offset, length.
    Request(DeviceOp, u64, u64),
}

/// The timeline of a run: events from the hook (dry run only), requests from [`Logged`].
#[derive(Default)]
struct Log(RefCell<Vec<Step>>);

impl EventHook for Log {
    fn event(&self, _node: NodeId, event: Event) -> Result<()> {
        self.0.borrow_mut().push(Step::Event(event));
        Ok(())
    }
}

impl Log {
    fn requests(&self) -> Vec<Step> {
        self.0
            .borrow()
            .iter()
            .copied()
            .filter(|s| matches!(s, Step::Request(..)))
            .collect()
    }
}

/// The image file, with every request that reaches it logged.
struct Logged<'a> {
    inner: &'a HostFile,
    log: &'a Log,
}

impl Logged<'_> {
    fn note(&self, req: &DeviceRequest<'_>) {
        self.log
            .0
            .borrow_mut()
            .push(Step::Request(req.op, req.offset, req.len));
    }
}

#[allow(unsafe_code)] // reason: forwards the unsafe `submit` and `rw_now` contracts unchanged
impl BlockDevice for Logged<'_> {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> std::result::Result<Ticket, SubmitError> {
        // SAFETY: the caller keeps `submit`'s contract, which is the inner device's.
        let r = unsafe { self.inner.submit(req) };
        if r.is_ok() {
            self.note(req);
        }
        r
    }

    unsafe fn rw_now(
        &self,
        req: &DeviceRequest<'_>,
    ) -> Option<std::result::Result<(), DeviceError>> {
        // SAFETY: the caller keeps `rw_now`'s contract, which is the inner device's.
        let r = unsafe { self.inner.rw_now(req) };
        if r.is_some() {
            self.note(req);
        }
        r
    }

    fn runs_now(&self) -> bool {
        self.inner.runs_now()
    }

    fn poll(
        &self,
        ticket: Ticket,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<(), DeviceError>> {
        self.inner.poll(ticket, cx)
    }

    fn unplug(&self) {
        self.inner.unplug()
    }

    fn zeroed_from(&self) -> Option<u64> {
        self.inner.zeroed_from()
    }

    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }

    fn grow(&self, min_capacity: u64) -> std::result::Result<u64, DeviceError> {
        self.inner.grow(min_capacity)
    }
}

/// Runs the workload on a copy of `base`, opened with `opts`, logging into `log` (events too if
/// `hook`); returns how many requests failed.
fn run(dir: &Path, base: &Path, opts: &str, log: &Log, hook: bool) -> usize {
    let work = dir.join("work.qcow2");
    std::fs::copy(base, &work).unwrap();
    let host = HostFile::open(&work, &HostFileOptions::default()).unwrap();
    let file = Logged { inner: &host, log };
    let backing = HostFile::open(
        &dir.join("backing.raw"),
        &HostFileOptions {
            read_only: true,
            ..HostFileOptions::default()
        },
    )
    .unwrap();
    let slots: Vec<CacheSlot> = (0..64).map(|_| CacheSlot::new()).collect();
    let inflaters = [Inflater::new()];
    let mut bounce = vec![0u8; 8 * 64 * 1024 + 4096];
    let mut graph: Graph<'_, 16, 64> = Graph::new(&mut bounce, 64 * 1024);
    graph.set_metadata_cache(&slots);
    graph.set_decompressors(&inflaters);
    if hook {
        graph.set_event_hook(log);
    }
    let mut resolve = |name: &str| -> Option<&dyn BlockDevice> {
        match name {
            "work" => Some(&file),
            "backing.raw" => Some(&backing),
            _ => None,
        }
    };
    let root = block_on(graph.open(opts, &mut resolve)).unwrap();
    let backend = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let mut failed = 0;
    let mut note = |r: Result<()>| {
        if r.is_err() {
            failed += 1;
        }
    };
    let data = vec![0x5au8; 96 * 1024];
    block_on(async {
        // Allocations across many L2 tables and refcount blocks (512-byte clusters, 64-bit
        // refcounts: a block counts 64 clusters). Refcount-table growth is not reached here
        // (qemu-img sizes the table for the image); qcow2_write tests it without faults.
        for i in 0..48u64 {
            note(
                backend
                    .write(i * 300 * 1024 + 1000, &data[..(i as usize % 5 + 1) * 7000])
                    .await,
            );
        }
        note(backend.flush().await);
        note(backend.write_zeroes(64 << 10, 256 << 10, true).await);
        note(backend.discard(1 << 20, 512 << 10).await);
        note(backend.write(3 << 20, &data).await);
        note(backend.flush().await);
        // The virtual size grows past what the L1 table holds.
        note(backend.resize(64 << 20).await);
        note(backend.write((40 << 20) + 512, &data[..8192]).await);
    });
    note(block_on(backend.close()));
    failed
}

/// The open options without rules: the dry run's graph is the fault runs' graph.
const NO_RULES: &str = "driver=qcow2,file.driver=blkdebug,file.image=work";

/// Most `set-state` rules beside the one inject-error rule (blkdebug's `MAX_RULES` is 32).
const MAX_STEPS: usize = 31;

/// Shortest state chains through a timeline: `dist[c]` is the fewest `set-state` rules that
/// bring the node's state to "c steps of the timeline consumed" (the last of them an event a
/// rule moved on), `via[c]` the (c', X) it came from.
struct Paths {
    dist: Vec<usize>,
    via: Vec<Option<(usize, Event)>>,
}

impl Paths {
    fn new(timeline: &[Step]) -> Self {
        let n = timeline.len();
        let mut kinds: Vec<Event> = Vec::new();
        for s in timeline {
            if let Step::Event(e) = *s {
                if !kinds.contains(&e) {
                    kinds.push(e);
                }
            }
        }
        // next[x][c]: index of the first occurrence of kinds[x] at or after c.
        let next: Vec<Vec<Option<usize>>> = kinds
            .iter()
            .map(|&x| {
                let mut v = vec![None; n + 1];
                for i in (0..n).rev() {
                    v[i] = if timeline[i] == Step::Event(x) {
                        Some(i)
                    } else {
                        v[i + 1]
                    };
                }
                v
            })
            .collect();
        let mut dist = vec![usize::MAX; n + 1];
        let mut via = vec![None; n + 1];
        dist[0] = 0;
        for c in 0..=n {
            if dist[c] == usize::MAX {
                continue;
            }
            for (x, &kind) in kinds.iter().enumerate() {
                if let Some(i) = next[x][c] {
                    if dist[c] + 1 < dist[i + 1] {
                        dist[i + 1] = dist[c] + 1;
                        via[i + 1] = Some((c, kind));
                    }
                }
            }
        }
        Self { dist, via }
    }

    /// The events of the path to `c`, in order.
    fn steps(&self, mut c: usize) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some((from, e)) = self.via[c] {
            out.push(e);
            c = from;
        }
        out.reverse();
        out
    }
}

/// How a fault at the k-th occurrence of an event is armed.
struct Plan {
    /// The `set-state` path to the state the inject-error rule waits in.
    steps: Vec<Event>,
    /// `inject-error.0.sector`, when the rule is pinned to the request it must fail.
    sector: Option<u64>,
    /// Index in the timeline of the first request after the k-th event: the one that fails.
    hit: usize,
}

/// How the k-th `event` is reached: with the fewest `set-state` rules, preferring an unpinned
/// rule (every request from the hit on fails) while one fits a blkdebug node.
fn plan(timeline: &[Step], paths: &Paths, event: Event, nth: u32) -> Plan {
    let at: Vec<usize> = (0..timeline.len())
        .filter(|&i| timeline[i] == Step::Event(event))
        .collect();
    let p = at[nth as usize - 1];
    let is_req = |i: &usize| matches!(timeline[*i], Step::Request(..));
    let hit = (p..timeline.len()).find(is_req).unwrap_or(timeline.len());
    // The inject rule arms at the first `event` at or after the consumed count c (index a).
    let arms_at = |c: usize| at.iter().copied().find(|&i| i >= c);
    // Unpinned: a must lie in the k-th's request-free stretch.
    let lo = (0..p).rev().find(is_req).map_or(0, |i| i + 1);
    let free = (0..=p)
        .filter(|&c| arms_at(c).is_some_and(|a| a >= lo))
        .min_by_key(|&c| paths.dist[c])
        .unwrap();
    if paths.dist[free] <= MAX_STEPS {
        return Plan {
            steps: paths.steps(free),
            sector: None,
            hit,
        };
    }
    // Pinned: `sector=` names the first sector that starts inside the hit request; a may lie
    // anywhere before the k-th as long as no request between it and the hit covers that sector.
    let Some(&Step::Request(_, off, len)) = timeline.get(hit) else {
        return Plan {
            steps: paths.steps(free),
            sector: None,
            hit,
        };
    };
    let sector = off.div_ceil(512);
    let covers = |i: usize| matches!(timeline[i], Step::Request(_, o, l) if l > 0 && sector * 512 >= o && sector * 512 - o < l);
    if sector * 512 >= off + len {
        return Plan {
            steps: paths.steps(free),
            sector: None,
            hit,
        };
    }
    let pinned = (0..=p)
        .filter(|&c| arms_at(c).is_some_and(|a| a <= p && !(a..hit).any(covers)))
        .min_by_key(|&c| paths.dist[c])
        .unwrap();
    Plan {
        steps: paths.steps(pinned),
        sector: Some(sector),
        hit,
    }
}

/// The open options that arm `event` as `plan` says.
fn blkdebug_opts(plan: &Plan, event: Event) -> String {
    let steps = &plan.steps;
    let mut o = format!(
        "{NO_RULES},file.inject-error.0.event={},file.inject-error.0.state={}",
        event.name(),
        steps.len() + 1
    );
    if let Some(sector) = plan.sector {
        o += &format!(",file.inject-error.0.sector={sector}");
    }
    for (i, x) in steps.iter().enumerate() {
        let s = i + 1;
        o += &format!(",file.set-state.{s}.event={},file.set-state.{s}.state={s},file.set-state.{s}.new_state={}", x.name(), s + 1);
    }
    o
}

/// `qemu-img check` status: 0 clean, 3 leaks only; anything else is corruption.
fn check(path: &Path) -> (i32, String) {
    let out = Command::new(qemu_img())
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn every_metadata_event_fails_cleanly() {
    ensure_qemu();
    let dir = scratch("qcow2-faults");
    random_raw_disk(&dir.join("backing.raw"), 16 << 20, 7);
    let base = dir.join("base.qcow2");
    let status = Command::new(qemu_img())
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "cluster_size=512,refcount_bits=64",
            "-b",
            "backing.raw",
            "-F",
            "raw",
        ])
        .arg(&base)
        .arg("16M")
        .status()
        .unwrap();
    assert!(status.success());

    // A dry run: which events this workload meets, how often, and between which requests.
    let dry = Log::default();
    assert_eq!(
        run(&dir, &base, NO_RULES, &dry, true),
        0,
        "the workload runs clean without faults"
    );
    let timeline = dry.0.borrow().clone();
    let mut counts: HashMap<&'static str, u32> = HashMap::new();
    for s in &timeline {
        if let Step::Event(e) = s {
            *counts.entry(e.name()).or_default() += 1;
        }
    }
    println!("events met: {counts:?}; {} requests", dry.requests().len());
    let paths = Paths::new(&timeline);
    let events = [
        Event::ClusterAlloc,
        Event::WriteAio,
        Event::CowRead,
        Event::CowWrite,
        Event::L2Update,
        Event::L2AllocWrite,
        Event::L1Update,
        Event::RefblockUpdatePart,
        Event::RefblockAllocWrite,
        Event::RefblockAllocHookup,
        Event::ClusterFree,
        Event::FlushToOs,
        Event::FlushToDisk,
        Event::L1GrowAllocTable,
        Event::L1GrowWriteTable,
        Event::L1GrowActivateTable,
    ];
    let mut cases = 0;
    let mut most_rules = 0;
    let mut pinned = 0;
    for event in events {
        let met = counts.get(event.name()).copied().unwrap_or(0);
        assert!(met > 0, "the workload never meets {}", event.name());
        let mut nths = vec![1, 2, met.div_ceil(2), met];
        nths.retain(|&n| n <= met);
        nths.dedup();
        for nth in nths {
            let name = event.name();
            let plan = plan(&timeline, &paths, event, nth);
            let steps = &plan.steps;
            assert!(
                steps.len() <= MAX_STEPS,
                "{name} #{nth}: {} set-state rules needed, a blkdebug node holds {MAX_STEPS}",
                steps.len()
            );
            most_rules = most_rules.max(steps.len() + 1);
            pinned += usize::from(plan.sector.is_some());
            let log = Log::default();
            let failed = run(&dir, &base, &blkdebug_opts(&plan, event), &log, false);
            assert!(
                failed > 0,
                "{name} #{nth}: the injected fault was not reported"
            );
            // The requests before the hit reached the file as in the dry run; the hit did not.
            // Unpinned, nothing after it did either.
            let expected: Vec<Step> = timeline[..plan.hit]
                .iter()
                .copied()
                .filter(|s| matches!(s, Step::Request(..)))
                .collect();
            let got = log.requests();
            let hit_failed = match plan.sector {
                None => got == expected,
                Some(_) => {
                    got.len() >= expected.len()
                        && got[..expected.len()] == expected[..]
                        && got.get(expected.len()) != timeline.get(plan.hit)
                }
            };
            assert!(
                hit_failed,
                "{name} #{nth}: {} requests reached the file, expected the dry run's first {} (then {:?} fails); rules {steps:?}, sector {:?}",
                got.len(),
                expected.len(),
                timeline.get(plan.hit),
                plan.sector
            );
            let (code, out) = check(&dir.join("work.qcow2"));
            assert!(
                code == 0 || code == 3,
                "{name} #{nth}: qemu-img check exit {code}:\n{out}"
            );
            cases += 1;
        }
    }
    println!("{cases} injected faults, all through blkdebug ({pinned} pinned by sector=; at most {most_rules} rules on one node), each hit the request after its event, was reported, and left no corruption");
}
