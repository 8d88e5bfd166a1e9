//! Injected faults in qcow2's metadata paths (`docs/ARCHITECTURE.md`, "Testing": faults): the
//! k-th occurrence of one named event (QEMU's blkdebug names) fails during a workload of
//! allocating writes, write-zeroes, discards, flushes and a table growth; the failing request
//! reports the error, and whatever happened, `qemu-img check` finds no corruption afterwards
//! (leaks are allowed: an operation cut short may leave allocated clusters nothing points at).
//!
//! Faults go through the `blkdebug` filter as QEMU's tests inject them (`driver=qcow2,
//! file.driver=blkdebug,file.inject-error.0.event=E,…`): the k-th event arms the rule (a chain
//! of `set-state` rules counts the first k-1) and the requests reaching the file from then on
//! fail (not `once`: the next one may be an advisory discard whose failure is ignored).
//! Occurrences beyond what a rule chain in one options string can count
//! ([`MAX_BLKDEBUG_NTH`]), and the dry run that counts every event, use a test hook
//! ([`EventHook`]) that fails the event itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use qemu_runner::img::block::dev::file::{HostFile, HostFileOptions};
use qemu_runner::img::block::dev::{BlockDevice, DeviceError};
use qemu_runner::img::block::io::cache::{CacheSlot, Inflater};
use qemu_runner::img::block::io::events::{Event, EventHook};
use qemu_runner::img::block::{Backend, BackendOptions, Error, Graph, NodeId, Result};
use qemu_runner::img::image::block_on;
use strata_tests::*;

/// Fails the `nth` occurrence (1-based) of `target`; counts every event.
struct FailNth {
    target: Event,
    nth: u32,
    seen: Cell<u32>,
    counts: std::cell::RefCell<HashMap<&'static str, u32>>,
}

impl EventHook for FailNth {
    fn event(&self, _node: NodeId, event: Event) -> Result<()> {
        *self.counts.borrow_mut().entry(event.name()).or_default() += 1;
        if event == self.target {
            self.seen.set(self.seen.get() + 1);
            if self.seen.get() == self.nth {
                return Err(Error::Device(DeviceError::Io));
            }
        }
        Ok(())
    }
}

/// Largest k whose k-th occurrence a chain of blkdebug rules fails: one inject-error rule and
/// k-1 set-state rules, within a blkdebug node's rule table (`MAX_RULES`, 32) and the options
/// of one open (`MAX_OPEN_OPTIONS`, 128: five, then three per set-state rule).
const MAX_BLKDEBUG_NTH: u32 = 32;

/// The open options that fail the `nth` occurrence of `event` through blkdebug.
fn blkdebug_opts(event: Event, nth: u32) -> String {
    let e = event.name();
    let mut o = format!("driver=qcow2,file.driver=blkdebug,file.image=work,file.inject-error.0.event={e},file.inject-error.0.state={nth}");
    for k in 1..nth {
        o += &format!(",file.set-state.{k}.event={e},file.set-state.{k}.state={k},file.set-state.{k}.new_state={}", k + 1);
    }
    o
}

/// Runs the workload on a copy of `base`, opened with `opts`, with `hook` (if any); returns how
/// many requests failed.
fn run(dir: &Path, base: &Path, opts: &str, hook: Option<&FailNth>) -> usize {
    let work = dir.join("work.qcow2");
    std::fs::copy(base, &work).unwrap();
    let file = HostFile::open(&work, &HostFileOptions::default()).unwrap();
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
    if let Some(hook) = hook {
        graph.set_event_hook(hook);
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

/// The open options without blkdebug.
const PLAIN: &str = "driver=qcow2,file=work";

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

    // A dry run: which events this workload meets, and how often.
    let probe = FailNth {
        target: Event::FlushToDisk,
        nth: u32::MAX,
        seen: Cell::new(0),
        counts: Default::default(),
    };
    assert_eq!(
        run(&dir, &base, PLAIN, Some(&probe)),
        0,
        "the workload runs clean without faults"
    );
    let counts = probe.counts.borrow().clone();
    println!("events met: {counts:?}");
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
    let mut blkdebug_cases = 0;
    for event in events {
        let met = counts.get(event.name()).copied().unwrap_or(0);
        assert!(met > 0, "the workload never meets {}", event.name());
        let mut nths = vec![1, 2, met.div_ceil(2), met];
        nths.retain(|&n| n <= met);
        nths.dedup();
        for nth in nths {
            let failed = if nth <= MAX_BLKDEBUG_NTH {
                blkdebug_cases += 1;
                run(&dir, &base, &blkdebug_opts(event, nth), None)
            } else {
                let hook = FailNth {
                    target: event,
                    nth,
                    seen: Cell::new(0),
                    counts: Default::default(),
                };
                run(&dir, &base, PLAIN, Some(&hook))
            };
            assert!(
                failed > 0,
                "{} #{nth}: the injected fault was not reported",
                event.name()
            );
            let (code, out) = check(&dir.join("work.qcow2"));
            assert!(
                code == 0 || code == 3,
                "{} #{nth}: qemu-img check exit {code}:\n{out}",
                event.name()
            );
            cases += 1;
        }
    }
    println!("{cases} injected faults ({blkdebug_cases} through blkdebug), each reported, none left corruption");
}
