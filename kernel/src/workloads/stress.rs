//! `stress OPTIONS --seed N --ops N --qd N [--max-len SIZE] [--block SIZE] [--mix R:W:Z:ZU:D:F]`:
//! the block layer's seeded stress engine (`strata_block::cmd::stress`) on a node, `qd` tasks of
//! the polled executor. Every op is printed (`stress: op ...` and an `@{"type":"stress_op",...}`
//! record), every flush barrier as `stress: flush K covers ops 0..N` and an
//! `@{"type":"stress_flush","flush":K,"ops":N}` record, the end as a `stress_done` record.
//!
//! The shared data buffer holds the model table (4 bytes per block of the node) and then the
//! workers' data buffers.

use core::pin::pin;

use strata_block::cmd::stress::{Config, Event, Stress};
use strata_block::BackendOptions;
use zerocopy::FromBytes;

use super::data;
use crate::cmdline::StressArgs;
use crate::devices::Catalog;
use crate::report::{self, Record};
use crate::stack::{self, KBackend};
use crate::{executor, exit_code, println};

/// Runs the stress `args` describe.
pub fn run(catalog: &Catalog, maps: &crate::cmdline::Maps<'_>, args: &StressArgs<'_>) -> u32 {
    let (Some(mut graph), Some(buf)) = (stack::graph(), data()) else { return exit_code::FAILURE };
    let options = args.options;
    let (node, _leaves) = match stack::open(&mut graph, catalog, maps, options) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let backend = match KBackend::new(&graph, node, BackendOptions { clock: stack::clock_ns, ..BackendOptions::default() }) {
        Ok(b) => b,
        Err(e) => return stack::fail("stress", options, e),
    };
    let size = backend.size();
    let bs = u64::from(args.block.max(1));
    let len = size / bs * bs;
    let max_len = args.max_len.unwrap_or((64 << 10).min(len));
    let cfg = Config { seed: args.seed, ops: args.ops, qd: args.qd, max_len, block: args.block, start: 0, len, mix: args.mix };
    // The table first (page-rounded, so the data buffers stay aligned), then the buffers.
    let table_bytes = usize::try_from(cfg.blocks().saturating_mul(4)).unwrap_or(usize::MAX).next_multiple_of(4096);
    if table_bytes >= buf.len() {
        return usage(format_args!("\"{}\": a model of {} blocks does not fit in {} bytes (use a larger --block)", options, cfg.blocks(), buf.len()));
    }
    let (table_mem, data_mem) = buf.split_at_mut(table_bytes);
    let Ok(table) = <[u32]>::mut_from_bytes(table_mem) else { return exit_code::FAILURE };
    let per_worker = (data_mem.len() / args.qd.max(1) as usize).min(max_len as usize) / bs as usize * bs as usize;
    if per_worker == 0 {
        return usage(format_args!("no room for {} data buffers of one block", args.qd));
    }
    println!("stress: \"{}\": seed {} ops {} qd {} max-len {} block {} over {} bytes", options, cfg.seed, cfg.ops, cfg.qd, max_len, bs, len);
    let mut sink = |event: Event| print_event(&event);
    let engine = match Stress::new(&backend, cfg, table, &mut sink) {
        Ok(e) => e,
        Err(e) => return usage(format_args!("\"{}\": {}", options, e)),
    };
    let platform = stack::Io::new(&graph, catalog);
    let mut tasks: heapless::Vec<_, { strata_block::cmd::stress::MAX_QD as usize }> = heapless::Vec::new();
    for chunk in data_mem.chunks_mut(per_worker).take(args.qd as usize) {
        let _ = tasks.push(engine.worker(chunk));
    }
    executor::run(executor::as_slice(pin!(tasks)), &platform);
    let finished = executor::block_on(engine.finish(), &platform);
    // A clean close ends every run (caches written back, flushed, a qcow2 image marked clean).
    let closed = stack::close(backend, &platform, "stress", options);
    if let (Some(Ok(_)), Err(code)) = (&finished, closed) {
        return code;
    }
    match finished {
        Some(Ok(s)) => {
            let [reads, writes, zeroes, discards, flushes] = s.by_kind;
            println!(
                "stress: {} ops ({} reads, {} writes, {} write-zeroes, {} discards, {} flushes); {} bytes verified, at most {} in flight",
                s.ops, reads, writes, zeroes, discards, flushes, s.verified, s.max_in_flight
            );
            Record::new("stress_done")
                .str("node", options)
                .num("seed", cfg.seed)
                .num("ops", u64::from(s.ops))
                .num("qd", u64::from(cfg.qd))
                .num("reads", u64::from(reads))
                .num("writes", u64::from(writes))
                .num("zeroes", u64::from(zeroes))
                .num("discards", u64::from(discards))
                .num("flushes", u64::from(flushes))
                .num("verified", s.verified)
                .num("max_in_flight", u64::from(s.max_in_flight))
                .emit();
            exit_code::SUCCESS
        }
        Some(Err(e)) => {
            println!("stress: \"{}\": {}", options, e);
            report::error("stress", format_args!("\"{}\": {}", options, e));
            exit_code::FAILURE
        }
        None => exit_code::FAILURE,
    }
}

fn usage(message: core::fmt::Arguments) -> u32 {
    println!("strata: stress: {}", message);
    report::error("usage", message);
    exit_code::USAGE
}

fn print_event(event: &Event) {
    match *event {
        Event::Op { op, verified } => {
            println!("stress: op {} {} {} bytes at {} ({} verified)", op.index, op.kind.name(), op.len, op.offset, verified);
            Record::new("stress_op")
                .num("op", u64::from(op.index))
                .str("kind", op.kind.name())
                .num("offset", op.offset)
                .num("len", op.len)
                .num("verified", verified)
                .emit();
        }
        Event::Flush(m) => {
            println!("stress: {}", m);
            Record::new("stress_flush").num("flush", u64::from(m.flush)).num("ops", u64::from(m.ops)).emit();
        }
    }
}
