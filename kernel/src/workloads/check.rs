//! `check OPTIONS [--repair leaks|all]`: qemu-img check of a qcow2 image in the guest, with the
//! block layer's check (`strata_block::driver::qcow2::check`, the code `qemu-runner img check`
//! runs): a firmware can verify or repair its disk at boot. The budget is the workloads' static
//! data buffer ([`super::DATA_BYTES`]): refcounts of 4 Mi clusters (16-bit) per pass.
//!
//! A bare device name is opened as raw bytes (`driver=raw,file=NAME`), so a corrupt or dirty
//! image is checked and repaired as it is; other options open as given, and the check runs on
//! the qcow2 node's file. Prints each finding as qemu-img does and its report, emits one
//! `check` record (qemu-img's counters and its exit status as `status`), and re-checks after a
//! repair as qemu-img does. Exit: 0 when the image is (now) clean, 1 otherwise.

use strata_block::driver::qcow2::check::{self, CheckResult, Finding, Mode};
use strata_block::node::Role;
use strata_block::{BackendOptions, Error, NodeId};

use super::data;
use crate::cmdline::Maps;
use crate::devices::Catalog;
use crate::report::Record;
use crate::stack::{self, KBackend};
use crate::{executor, exit_code, println};

/// Checks (and with `repair`, repairs) the qcow2 image `options` name.
#[inline(never)]
pub fn run(catalog: &Catalog, maps: &Maps<'_>, options: &str, repair: Mode) -> u32 {
    let (Some(mut graph), Some(budget)) = (stack::graph(), data()) else { return exit_code::FAILURE };
    let mut text = heapless::String::<1100>::new();
    let bare = !options.contains('=') && !options.contains(',');
    let open_as = if bare && text.push_str("driver=raw,file=").is_ok() && text.push_str(options).is_ok() { text.as_str() } else { options };
    let opened = if repair.repairs() { stack::open(&mut graph, catalog, maps, open_as) } else { stack::open_read_only(&mut graph, catalog, maps, open_as) };
    let (node, _leaves) = match opened {
        Ok(v) => v,
        Err(code) => return code,
    };
    let opts = BackendOptions { read_only: !repair.repairs(), clock: stack::clock_ns, ..BackendOptions::default() };
    let backend = match KBackend::new(&graph, node, opts) {
        Ok(b) => b,
        Err(e) => return stack::fail("check", options, e),
    };
    let file = match graph.node(node) {
        Ok(n) if n.driver == "raw" || n.driver == "qcow2" => n.child(Role::File),
        _ => None,
    };
    let Some(file) = file else {
        return stack::fail("check", options, Error::Unsupported("checks of a format other than qcow2"));
    };
    let platform = stack::Io::new(&graph, catalog);
    let mut result = match one(&graph, &platform, file, repair, budget, options) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if result.corruptions_fixed != 0 || result.leaks_fixed != 0 {
        println!("The following inconsistencies were found and repaired:");
        println!("    {} leaked clusters", result.leaks_fixed);
        println!("    {} corruptions", result.corruptions_fixed);
        println!("Double checking the fixed image now...");
        let (leaks_fixed, corruptions_fixed) = (result.leaks_fixed, result.corruptions_fixed);
        result = match one(&graph, &platform, file, Mode::CHECK, budget, options) {
            Ok(r) => r,
            Err(code) => return code,
        };
        result.leaks_fixed = leaks_fixed;
        result.corruptions_fixed = corruptions_fixed;
    }
    report(&result);
    if repair.repairs() {
        if let Err(code) = stack::close(backend, &platform, "check", options) {
            return code;
        }
    }
    if status(&result) == 0 {
        exit_code::SUCCESS
    } else {
        exit_code::FAILURE
    }
}

/// One check with its findings on the console.
fn one(graph: &stack::KGraph, platform: &stack::Io<'_>, file: NodeId, mode: Mode, budget: &mut [u8], options: &str) -> Result<CheckResult, u32> {
    let io = graph.io();
    let mut sink = |f: &Finding| println!("{}", f);
    match executor::block_on(check::check(&io, file, mode, budget, &mut sink), platform) {
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) => Err(stack::fail("check", options, e)),
        None => Err(exit_code::FAILURE),
    }
}

/// qemu-img check's exit status for `r`.
fn status(r: &CheckResult) -> u64 {
    if r.check_errors != 0 {
        1
    } else if r.corruptions != 0 {
        2
    } else if r.leaks != 0 {
        3
    } else {
        0
    }
}

/// qemu-img's human report, and the record.
fn report(r: &CheckResult) {
    if r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0 {
        println!("No errors were found on the image.");
    }
    if r.corruptions != 0 {
        println!("{} errors were found on the image.", r.corruptions);
    }
    if r.leaks != 0 {
        println!("{} leaked clusters were found on the image.", r.leaks);
    }
    if r.check_errors != 0 {
        println!("{} internal errors have occurred during the check.", r.check_errors);
    }
    let f = &r.frag;
    if f.total_clusters != 0 && f.allocated_clusters != 0 {
        // Hundredths of a percent, as qemu-img's %0.2f.
        let pct = |n: u64, d: u64| (n * 10000 + d / 2) / d;
        let (a, fr, c) = (pct(f.allocated_clusters, f.total_clusters), pct(f.fragmented_clusters, f.allocated_clusters), pct(f.compressed_clusters, f.allocated_clusters));
        println!(
            "{}/{} = {}.{:02}% allocated, {}.{:02}% fragmented, {}.{:02}% compressed clusters",
            f.allocated_clusters,
            f.total_clusters,
            a / 100,
            a % 100,
            fr / 100,
            fr % 100,
            c / 100,
            c % 100
        );
    }
    if r.image_end_offset != 0 {
        println!("Image end offset: {}", r.image_end_offset);
    }
    Record::new("check")
        .num("status", status(r))
        .num("check_errors", r.check_errors)
        .num("corruptions", r.corruptions)
        .num("leaks", r.leaks)
        .num("corruptions_fixed", r.corruptions_fixed)
        .num("leaks_fixed", r.leaks_fixed)
        .num("image_end_offset", r.image_end_offset)
        .num("total_clusters", f.total_clusters)
        .num("allocated_clusters", f.allocated_clusters)
        .num("fragmented_clusters", f.fragmented_clusters)
        .num("compressed_clusters", f.compressed_clusters)
        .num("passes", u64::from(r.passes))
        .emit();
}
