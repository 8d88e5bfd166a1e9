//! `demo [OPTIONS]`: writes a pattern over a node (default: the first 16 MiB of the device whose
//! serial sorts first; `demo scratch,size=8M` the first 8 MiB of `scratch`), flushes, reads it
//! back, verifies every byte, and reports throughput and latency for each phase. The node is
//! closed cleanly at the end (after a failure too): a qcow2 image is left consistent.
//!
//! The pattern depends on the byte offset and a seed taken from the clock, so a stale read from
//! an earlier run can never pass verification. [`DEPTH`] tasks move [`CHUNK`]-byte pieces.

use core::cell::Cell;

use strata_block::backend::{KindStats, OpKind};
use strata_block::{BackendOptions, Error};
use strata_boot::clock;

use super::{data, per_sec, MbPerSec, Micros};
use crate::devices::Catalog;
use crate::executor;
use crate::report::{self, Record};
use crate::stack::{self, KBackend};
use crate::{exit_code, println};

/// Bytes written when the node is larger.
const DEFAULT_SIZE: u64 = 16 * 1024 * 1024;
/// Tasks (requests in flight).
const DEPTH: usize = 8;
/// Bytes per request.
const CHUNK: usize = 64 * 1024;

/// Runs the demo on the node `options` describes.
///
/// Not inlined: each workload's request futures get their own frame, not a share of the
/// dispatcher's.
#[inline(never)]
pub fn run(catalog: &Catalog, maps: &crate::cmdline::Maps<'_>, options: &str) -> u32 {
    let (Some(mut graph), Some(buf)) = (stack::graph(), data()) else { return exit_code::FAILURE };
    let (node, _leaves) = match stack::open(&mut graph, catalog, maps, options) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let opts = BackendOptions { clock: stack::clock_ns, ..BackendOptions::default() };
    let backend = match KBackend::new(&graph, node, opts) {
        Ok(b) => b,
        Err(Error::ReadOnly) => {
            println!("strata: demo: \"{}\" is read-only; the demo writes to it", options);
            report::error("read-only", format_args!("\"{}\" is read-only", options));
            return exit_code::FAILURE;
        }
        Err(e) => return stack::fail("demo", options, e),
    };
    let size = backend.size().min(DEFAULT_SIZE) / 512 * 512;
    if size == 0 {
        println!("strata: demo: nothing to do on \"{}\" (size 0)", options);
        report::error("usage", format_args!("demo size is 0"));
        return exit_code::USAGE;
    }
    let seed = clock::now() | 1;
    println!("demo: \"{}\": write {} bytes, flush, read back, verify", options, size);
    let platform = stack::Io::new(&graph, catalog);
    let first_bad = Cell::new(None);

    let started = clock::now();
    if let Err(e) = phase(&backend, &platform, buf, size, true, seed, &first_bad) {
        let code = stack::fail("demo: write", options, e);
        // Leave the image consistent: write back what the completed writes allocated.
        let _ = stack::close(backend, &platform, "demo", options);
        return code;
    }
    let write_ns = clock::ticks_to_ns(clock::now().wrapping_sub(started));
    let flush_start = clock::now();
    if let Some(Err(e)) = executor::block_on(backend.flush(), &platform) {
        let code = stack::fail("demo: flush", options, e);
        let _ = stack::close(backend, &platform, "demo", options);
        return code;
    }
    let flush_ns = clock::ticks_to_ns(clock::now().wrapping_sub(flush_start));
    let started = clock::now();
    let read = phase(&backend, &platform, buf, size, false, seed, &first_bad);
    let read_ns = clock::ticks_to_ns(clock::now().wrapping_sub(started));
    let stats = backend.stats();
    // A clean close (caches written back, flushed, the image marked clean) ends every run.
    let closed = stack::close(backend, &platform, "demo", options);
    if let Err(e) = read {
        return stack::fail("demo: read", options, e);
    }
    if let Err(code) = closed {
        return code;
    }
    if let Some(at) = first_bad.get() {
        println!("strata: demo: verification FAILED at byte {} of \"{}\"", at, options);
        report::error("verify", format_args!("mismatch at byte {}", at));
        return exit_code::FAILURE;
    }

    let (w, r) = (stats.kind(OpKind::Write), stats.kind(OpKind::Read));
    print_phase("write", w, write_ns);
    println!("demo: flush  {}", Micros(flush_ns));
    print_phase("read ", r, read_ns);
    println!("demo: verified {} bytes: OK", size);
    Record::new("demo")
        .str("node", options)
        .num("bytes", size)
        .num("write_bytes_per_sec", per_sec(w.bytes, write_ns))
        .num("write_p50_ns", w.percentile_ns(500))
        .num("write_p99_ns", w.percentile_ns(990))
        .num("flush_ns", flush_ns)
        .num("read_bytes_per_sec", per_sec(r.bytes, read_ns))
        .num("read_p50_ns", r.percentile_ns(500))
        .num("read_p99_ns", r.percentile_ns(990))
        .bool("verified", true)
        .emit();
    exit_code::SUCCESS
}

/// Writes (`write`) or reads and verifies `size` bytes with [`DEPTH`] tasks.
fn phase(backend: &KBackend<'_>, platform: &stack::Io<'_>, buf: &mut [u8], size: u64, write: bool, seed: u64, first_bad: &Cell<Option<u64>>) -> Result<(), Error> {
    let failed: Cell<Option<Error>> = Cell::new(None);
    let mut tasks: heapless::Vec<_, DEPTH> = heapless::Vec::new();
    for (first, mem) in buf.chunks_mut(CHUNK).take(DEPTH).enumerate() {
        let failed = &failed;
        let _ = tasks.push(async move {
            let mut offset = (first * CHUNK) as u64;
            while offset < size && failed.get().is_none() {
                let len = (size - offset).min(CHUNK as u64) as usize;
                let chunk = &mut mem[..len];
                let result = if write {
                    fill(seed, offset, chunk);
                    backend.write(offset, chunk).await
                } else {
                    let r = backend.read(offset, chunk).await;
                    if r.is_ok() && first_bad.get().is_none() {
                        first_bad.set(verify(seed, offset, chunk));
                    }
                    r
                };
                if let Err(e) = result {
                    failed.set(Some(e));
                }
                offset += (DEPTH * CHUNK) as u64;
            }
        });
    }
    executor::run(executor::as_slice(core::pin::pin!(tasks)), platform);
    failed.get().map_or(Ok(()), Err)
}

fn print_phase(phase: &str, s: &KindStats, ns: u64) {
    println!(
        "demo: {}  {} in {} requests of up to 64 KiB: {}, latency p50 <{} p99 <{}",
        phase,
        s.bytes,
        s.ops,
        MbPerSec(per_sec(s.bytes, ns)),
        Micros(s.percentile_ns(500)),
        Micros(s.percentile_ns(990))
    );
}

/// The pattern's 8-byte word at byte `offset` (a multiple of 8): splitmix64 of offset and seed.
fn word(seed: u64, offset: u64) -> u64 {
    let mut z = seed.wrapping_add(offset.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fill(seed: u64, offset: u64, chunk: &mut [u8]) {
    for (i, w) in chunk.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&word(seed, offset + 8 * i as u64).to_le_bytes());
    }
}

/// The byte offset of the first mismatch in `chunk`, if any.
fn verify(seed: u64, offset: u64, chunk: &[u8]) -> Option<u64> {
    chunk.chunks_exact(8).enumerate().find_map(|(i, w)| {
        let at = offset + 8 * i as u64;
        (w != word(seed, at).to_le_bytes()).then_some(at)
    })
}
