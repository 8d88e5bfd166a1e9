//! `snapshot OPTIONS [--create NAME | --apply NAME | --delete NAME]`: qcow2 internal snapshots
//! in the guest, with the block layer's operations (`Qcow2::snapshot_create` and friends, the
//! code `qemu-runner img snapshot` runs): a firmware can take a snapshot of its disk before an
//! update and go back to it.
//!
//! Prints the snapshot list after the action (`qemu-img snapshot -l`'s columns, dates as seconds
//! since the epoch, which the guest does not know: it writes 0 and takes the time since boot as
//! the VM clock, no icount, as QEMU's `savevm` without record/replay) and emits one
//! `@{"type":"snapshot",...}` record per snapshot and one `snapshot_action` record.

use strata_block::driver::qcow2::snapshots::{Lookup, NewSnapshot, SnapshotInfo};
use strata_block::node::Role;
use strata_block::{BackendOptions, Error};

use crate::cmdline::{Maps, SnapshotAction};
use crate::devices::Catalog;
use crate::report::Record;
use crate::stack::{self, KBackend};
use crate::{executor, exit_code, println};

/// Runs `action` on the qcow2 image `options` describes.
pub fn run(catalog: &Catalog, maps: &Maps<'_>, options: &str, action: SnapshotAction<'_>) -> u32 {
    let Some(mut graph) = stack::graph() else { return exit_code::FAILURE };
    let read_only = action == SnapshotAction::List;
    let opened = if read_only { stack::open_read_only(&mut graph, catalog, maps, options) } else { stack::open(&mut graph, catalog, maps, options) };
    let (node, _leaves) = match opened {
        Ok(v) => v,
        Err(code) => return code,
    };
    let opts = BackendOptions { read_only, clock: stack::clock_ns, ..BackendOptions::default() };
    let backend = match KBackend::new(&graph, node, opts) {
        Ok(b) => b,
        Err(e) => return stack::fail("snapshot", options, e),
    };
    let platform = stack::Io::new(&graph, catalog);
    let Some(q) = graph.state(node).ok().flatten().and_then(|s| s.qcow2()) else {
        return stack::fail("snapshot", options, Error::Unsupported("internal snapshots of a format other than qcow2"));
    };
    let io = graph.io();
    let done = executor::block_on(
        async {
            let _drained = backend.drain().await;
            match action {
                SnapshotAction::List => Ok(None),
                SnapshotAction::Create(name) => {
                    let new = NewSnapshot { id: None, name, date_sec: 0, date_nsec: 0, vm_clock_nsec: stack::clock_ns(), icount: u64::MAX };
                    q.snapshot_create(&io, node, &new).await.map(Some)
                }
                SnapshotAction::Apply(key) => q.snapshot_apply(&io, node, key).await.map(Some),
                SnapshotAction::Delete(name) => q.snapshot_delete(&io, node, name, Lookup::Name).await.map(Some),
            }
        },
        &platform,
    );
    let (verb, name) = match action {
        SnapshotAction::List => ("list", ""),
        SnapshotAction::Create(n) => ("create", n),
        SnapshotAction::Apply(n) => ("apply", n),
        SnapshotAction::Delete(n) => ("delete", n),
    };
    let snap = match done {
        Some(Ok(s)) => s,
        Some(Err(e)) => return stack::fail("snapshot", options, e),
        None => return exit_code::FAILURE,
    };
    if let Some(s) = &snap {
        println!("snapshot: {} '{}' (id {})", verb, name, s.id.as_str());
        Record::new("snapshot_action").str("action", verb).str("name", name).str("id", s.id.as_str()).emit();
    }
    if let Err(code) = list(&graph, node, q, &platform, options) {
        return code;
    }
    if !read_only {
        if let Err(code) = stack::close(backend, &platform, "snapshot", options) {
            return code;
        }
    }
    exit_code::SUCCESS
}

/// Prints and records every snapshot of the image.
fn list(graph: &stack::KGraph, node: strata_block::NodeId, q: &strata_block::driver::qcow2::Qcow2, platform: &stack::Io<'_>, options: &str) -> Result<(), u32> {
    let file = match graph.node(node).ok().and_then(|n| n.child(Role::File)) {
        Some(f) => f,
        None => return Err(stack::fail("snapshot", options, Error::BadGraph("qcow2 node without a file child"))),
    };
    let io = graph.io();
    let mut walk = q.snapshots();
    println!("{:<7} {:<16} {:>19} {:>15} {:>20}", "ID", "TAG", "DATE (s)", "VM_CLOCK (ms)", "DISK SIZE");
    loop {
        let next: Option<Result<Option<SnapshotInfo>, Error>> = executor::block_on(walk.next(&io, file), platform);
        let s = match next {
            Some(Ok(Some(s))) => s,
            Some(Ok(None)) => return Ok(()),
            Some(Err(e)) => return Err(stack::fail("snapshot", options, e)),
            None => return Err(exit_code::FAILURE),
        };
        println!("{:<7} {:<16} {:>19} {:>15} {:>20}", s.id.as_str(), s.name.as_str(), s.date_sec, s.vm_clock_nsec / 1_000_000, s.disk_size);
        Record::new("snapshot")
            .str("id", s.id.as_str())
            .str("name", s.name.as_str())
            .num("date_sec", u64::from(s.date_sec))
            .num("vm_clock_nsec", s.vm_clock_nsec)
            .num("disk_size", s.disk_size)
            .num("vm_state_size", s.vm_state_size)
            .emit();
    }
}
