//! `demo`: the main job. Writes a pattern over the start of a device, flushes, reads it back,
//! verifies every byte, and reports throughput and latency for each phase.
//!
//! The pattern depends on the byte offset and a seed taken from the clock, so a stale read from
//! an earlier run can never pass verification.

use strata_boot::arch::tsc;

use crate::devices::stream::{stream, Dir, StreamStats};
use crate::devices::Disk;
use crate::report::{self, Record};
use crate::workloads::{MbPerSec, Micros};
use crate::{exit_code, println};

/// Bytes written when the command line does not say.
const DEFAULT_SIZE: u64 = 16 * 1024 * 1024;

/// Runs the demo on `disk` over `size` bytes (default [`DEFAULT_SIZE`], capped at the device).
pub fn run(disk: &mut Disk, size: Option<u64>) -> u32 {
    let serial = disk.serial();
    let mut name = heapless::String::<20>::new();
    let _ = name.push_str(serial);
    if disk.read_only() {
        println!("strata: demo: device \"{}\" is read-only; the demo writes to its device", name);
        report::error("read-only", format_args!("device \"{}\" is read-only", name));
        return exit_code::FAILURE;
    }
    let size = size.unwrap_or(DEFAULT_SIZE).min(disk.capacity()) / 512 * 512;
    if size == 0 {
        println!("strata: demo: nothing to do on \"{}\" (size 0)", name);
        report::error("usage", format_args!("demo size is 0"));
        return exit_code::USAGE;
    }
    let seed = tsc::rdtsc() | 1;
    println!("demo: device \"{}\": write {} bytes, flush, read back, verify", name, size);

    let write = match stream(disk, Dir::Write, 0, size, |offset, chunk| fill(seed, offset, chunk)) {
        Ok(s) => s,
        Err(e) => return fail(&name, "write", e),
    };
    let flush_start = tsc::rdtsc();
    if let Err(e) = disk.blk.flush() {
        return fail(&name, "flush", e);
    }
    let flush_ns = tsc::ticks_to_ns(tsc::rdtsc().wrapping_sub(flush_start));

    let mut first_bad = None;
    let read = match stream(disk, Dir::Read, 0, size, |offset, chunk| {
        if first_bad.is_none() {
            first_bad = verify(seed, offset, chunk);
        }
    }) {
        Ok(s) => s,
        Err(e) => return fail(&name, "read", e),
    };
    if let Some(at) = first_bad {
        println!("strata: demo: verification FAILED at byte {} of \"{}\"", at, name);
        report::error("verify", format_args!("mismatch at byte {}", at));
        return exit_code::FAILURE;
    }

    print_phase("write", &write);
    println!("demo: flush  {}", Micros(flush_ns));
    print_phase("read ", &read);
    println!("demo: verified {} bytes: OK", size);
    Record::new("demo")
        .str("device", name.as_str())
        .num("bytes", size)
        .num("write_bytes_per_sec", write.bytes_per_sec())
        .num("write_p50_ns", write.p50_ns)
        .num("write_p99_ns", write.p99_ns)
        .num("flush_ns", flush_ns)
        .num("read_bytes_per_sec", read.bytes_per_sec())
        .num("read_p50_ns", read.p50_ns)
        .num("read_p99_ns", read.p99_ns)
        .bool("verified", true)
        .emit();
    exit_code::SUCCESS
}

fn print_phase(phase: &str, s: &StreamStats) {
    println!(
        "demo: {}  {} in {} requests of up to 64 KiB: {}, latency p50 {} p99 {} max {}",
        phase, s.bytes, s.requests, MbPerSec(s.bytes_per_sec()), Micros(s.p50_ns), Micros(s.p99_ns), Micros(s.max_ns)
    );
}

fn fail(name: &str, phase: &str, e: impl core::fmt::Display) -> u32 {
    println!("strata: demo: {} on \"{}\" failed: {}", phase, name, e);
    report::error("io", format_args!("{} failed: {}", phase, e));
    exit_code::FAILURE
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
