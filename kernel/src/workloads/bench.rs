//! `bench OPTIONS --rw R --bs N --qd N (--seconds N | --count N)`: IOPS, throughput, latency
//! percentiles and cycles per request stage through the block layer (backend, graph, the node
//! the options open, the virtio leaf).
//!
//! `qd` tasks each keep one request in flight: a random (`rand*`, aligned to `bs`) or the next
//! sequential offset (shared, wrapping at the node's end). Latency is measured per request
//! around the backend call; the stages (submit, device, completion) come from the virtio leaf's
//! TSC stamps, with the most requests the device held at once. One `bench` record per run,
//! then the series `qemu-runner boot --plot` draws: `bench_latency` records (the latency
//! histogram in half-octave buckets, at most [`LATENCY_BUCKETS_PER_RECORD`] per record, in
//! order) and one `bench_series` record (completions per interval: a [`Timeline`] of at most 64
//! intervals of 1 ms or more).
//!
//! Read modes open the node read-only; write modes open it read-write and close it cleanly at
//! the end (outside the timed run), after a failed run too.

use core::cell::{Cell, RefCell};

use strata_block::cmd::timeline::Timeline;
use strata_block::{BackendOptions, Error};
use strata_boot::clock;

use super::histogram::{self, Histogram};
use super::{data, per_sec, MbPerSec, Micros};
use crate::cmdline::{BenchArgs, Stop};
use crate::devices::Catalog;
use crate::executor;
use crate::report::{self, Record};
use crate::stack::{self, KBackend};
use crate::{exit_code, println};

/// Latency buckets in one `bench_latency` record (so a record stays well inside its 1 KiB line).
const LATENCY_BUCKETS_PER_RECORD: usize = 16;

/// Runs the bench described by `args`.
///
/// Not inlined: each workload's request futures get their own frame, not a share of the
/// dispatcher's.
#[inline(never)]
pub fn run(catalog: &Catalog, maps: &crate::cmdline::Maps<'_>, args: &BenchArgs<'_>) -> u32 {
    let (Some(mut graph), Some(buf)) = (stack::graph(), data()) else { return exit_code::FAILURE };
    let options = args.options;
    let (bs, qd) = (args.bs, args.qd as usize);
    if bs as usize * qd > buf.len() {
        println!("strata: bench: --bs {} x --qd {} needs more than the {} MiB of buffers", bs, qd, buf.len() >> 20);
        report::error("usage", format_args!("--bs x --qd exceeds {} bytes", buf.len()));
        return exit_code::USAGE;
    }
    // Reads open the node read-only (no header write, dirty images allowed); writes read-write.
    let opened = if args.rw.writes() {
        stack::open(&mut graph, catalog, maps, options)
    } else {
        stack::open_read_only(&mut graph, catalog, maps, options)
    };
    let (node, leaves) = match opened {
        Ok(v) => v,
        Err(code) => return code,
    };
    // No backend clock: bench times each request itself, finer than the backend's histogram.
    let opts = BackendOptions { read_only: !args.rw.writes(), ..BackendOptions::default() };
    let backend = match KBackend::new(&graph, node, opts) {
        Ok(b) => b,
        Err(e) => return stack::fail("bench", options, e),
    };
    let size = backend.size();
    let slots = size / bs;
    if slots == 0 {
        println!("strata: bench: \"{}\" ({} bytes) is smaller than one request of {} bytes", options, size, bs);
        report::error("usage", format_args!("node smaller than --bs"));
        return exit_code::USAGE;
    }
    // Written data: a recognisable pattern rather than zeros (no zero detection surprises).
    buf.iter_mut().enumerate().for_each(|(i, b)| *b = (i as u8) ^ 0x5a);

    let hz = clock::hz();
    let (deadline_ticks, count) = match args.stop {
        Stop::Seconds(s) => (hz.saturating_mul(s), u64::MAX),
        Stop::Count(n) => (u64::MAX, n),
    };
    let issued = Cell::new(0u64);
    let next_seq = Cell::new(0u64);
    let latencies = RefCell::new(Histogram::new());
    let failed: Cell<Option<Error>> = Cell::new(None);
    for d in &leaves {
        d.dev.reset_stats();
    }
    let platform = stack::Io::new(&graph, catalog);
    let start = clock::now();
    // Completions per interval, from 1 ms intervals up (the timeline widens them as it fills).
    let timeline = RefCell::new(Timeline::new(start, hz / 1000));
    // The tasks live in this block: they borrow the backend, which the close below consumes.
    let exec = {
        let mut tasks: heapless::Vec<_, { crate::cmdline::MAX_QD as usize }> = heapless::Vec::new();
        for (i, mem) in buf.chunks_mut(bs as usize).take(qd).enumerate() {
            let (backend, issued, next_seq, latencies, timeline, failed) =
                (&backend, &issued, &next_seq, &latencies, &timeline, &failed);
            let rw = args.rw;
            let _ = tasks.push(async move {
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((i as u64 + 1) << 32) ^ start;
                loop {
                    let now = clock::now();
                    if issued.get() >= count || now.wrapping_sub(start) >= deadline_ticks || failed.get().is_some() {
                        return;
                    }
                    issued.set(issued.get() + 1);
                    let slot = if rw.random() {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng % slots
                    } else {
                        let s = next_seq.get();
                        next_seq.set((s + 1) % slots);
                        s
                    };
                    let offset = slot * bs;
                    let result = if rw.writes() { backend.write(offset, mem).await } else { backend.read(offset, mem).await };
                    match result {
                        Ok(()) => {
                            let done = clock::now();
                            latencies.borrow_mut().record(done.wrapping_sub(now));
                            timeline.borrow_mut().record(done);
                        }
                        Err(e) => failed.set(Some(e)),
                    }
                }
            });
        }
        // Pinned where they are: `pin!` would move the tasks (64 futures of up to ~30 KiB with
        // qcow2 writes) into a second copy on the stack.
        // SAFETY: `tasks` is shadowed by its pinned reference, so it is never moved again.
        let tasks = unsafe { core::pin::Pin::new_unchecked(&mut tasks) };
        executor::run(executor::as_slice(tasks), &platform)
    };
    let end = clock::now();
    let elapsed_ticks = end.wrapping_sub(start);
    let elapsed_ns = clock::ticks_to_ns(elapsed_ticks);
    // Writes end with a clean close (caches written back, flushed, the image marked clean), also
    // after a failure, so the image stays consistent; its time is not the bench's.
    let closed = if args.rw.writes() { stack::close(backend, &platform, "bench", options) } else { Ok(()) };
    if let Some(e) = failed.get() {
        return stack::fail("bench", options, e);
    }
    if let Err(code) = closed {
        return code;
    }

    let lat = latencies.into_inner();
    let ios = lat.count();
    let bytes = ios * bs;
    let iops = ios * 1_000_000_000 / elapsed_ns.max(1);
    let ns = |ticks: u64| clock::ticks_to_ns(ticks);
    let mut leaf = strata_block::dev::virtio::VirtioStats::default();
    for d in &leaves {
        let s = d.dev.stats();
        leaf.submitted += s.submitted;
        leaf.completed += s.completed;
        leaf.notifies += s.notifies;
        leaf.busy += s.busy;
        leaf.max_in_flight = leaf.max_in_flight.max(s.max_in_flight);
        leaf.submit_ticks += s.submit_ticks;
        leaf.device_ticks += s.device_ticks;
        leaf.completion_ticks += s.completion_ticks;
        leaf.returned += s.returned;
    }
    let per = |sum: u64, n: u64| sum / n.max(1);
    let (submit, device, completion) = (
        per(leaf.submit_ticks, leaf.completed),
        per(leaf.device_ticks, leaf.completed),
        per(leaf.completion_ticks, leaf.returned),
    );
    let total_per_io = per(elapsed_ticks, ios);
    println!(
        "bench: {} {} bs={} qd={}: {} I/Os in {}.{:03} s: {} IOPS, {}",
        options,
        args.rw.name(),
        bs,
        qd,
        ios,
        elapsed_ns / 1_000_000_000,
        (elapsed_ns / 1_000_000) % 1000,
        iops,
        MbPerSec(per_sec(bytes, elapsed_ns))
    );
    println!(
        "bench: latency p50 {} p99 {} p99.9 {} max {} mean {}",
        Micros(ns(lat.percentile(500))),
        Micros(ns(lat.percentile(990))),
        Micros(ns(lat.percentile(999))),
        Micros(ns(lat.max())),
        Micros(ns(lat.mean()))
    );
    println!(
        "bench: cycles per I/O: submit {} device {} completion {} (all {}); device held at most {} requests; {} doorbells ({} I/Os each)",
        submit,
        device,
        completion,
        total_per_io,
        leaf.max_in_flight,
        leaf.notifies,
        leaf.submitted / leaf.notifies.max(1)
    );
    let device_name = leaves.first().map_or("", |d| d.serial());
    Record::new("bench")
        .str("node", options)
        .str("device", device_name)
        .str("rw", args.rw.name())
        .num("bs", bs)
        .num("qd", qd as u64)
        .num("ios", ios)
        .num("ns", elapsed_ns)
        .num("iops", iops)
        .num("bytes_per_sec", per_sec(bytes, elapsed_ns))
        .num("lat_p50_ns", ns(lat.percentile(500)))
        .num("lat_p99_ns", ns(lat.percentile(990)))
        .num("lat_p999_ns", ns(lat.percentile(999)))
        .num("lat_max_ns", ns(lat.max()))
        .num("lat_mean_ns", ns(lat.mean()))
        .num("tsc_hz", hz)
        .num("submit_cycles", submit)
        .num("device_cycles", device)
        .num("completion_cycles", completion)
        .num("cycles_per_io", total_per_io)
        .num("max_in_flight", u64::from(leaf.max_in_flight))
        .num("doorbells", leaf.notifies)
        .num("busy", leaf.busy)
        .num("executor_rounds", exec.rounds)
        .num("executor_polls", exec.polls)
        .emit();
    emit_latency(&lat);
    let mut timeline = timeline.into_inner();
    timeline.finish(end);
    Record::new("bench_series")
        .num("interval_ns", ns(timeline.interval()))
        .num("ns", elapsed_ns)
        .nums("counts", timeline.used(end).iter().copied())
        .emit();
    exit_code::SUCCESS
}

/// The latency histogram as `bench_latency` records: the half-octave buckets from the first
/// non-empty one to the last (`lo_ns`, `hi_ns`: each bucket's `[lo, hi)` in ns; `count`).
fn emit_latency(lat: &Histogram) {
    let buckets = lat.half_octaves();
    let Some(first) = buckets.iter().position(|&n| n > 0) else { return };
    let last = buckets.iter().rposition(|&n| n > 0).unwrap_or(first);
    let ns = |j: usize, hi: bool| {
        let (lo_ticks, hi_ticks) = histogram::half_octave_bounds(j);
        clock::ticks_to_ns(if hi { hi_ticks } else { lo_ticks })
    };
    let mut from = first;
    while from <= last {
        let to = (from + LATENCY_BUCKETS_PER_RECORD).min(last + 1);
        Record::new("bench_latency")
            .nums("lo_ns", (from..to).map(|j| ns(j, false)))
            .nums("hi_ns", (from..to).map(|j| ns(j, true)))
            .nums("count", buckets[from..to].iter().copied())
            .emit();
        from = to;
    }
}
