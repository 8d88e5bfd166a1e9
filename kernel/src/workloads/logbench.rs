//! `logbench`: what each candidate log channel costs per byte, to choose defmt's channel.
//!
//! Writes the same bytes through (a) a second 16550 UART (COM2, status poll + data write per
//! byte), (b) debugcon with one `out` per byte, and (c) debugcon with `rep outsb` per 256-byte
//! buffer (what `log.rs` does). Under KVM every port access the CPU cannot batch is a VM exit, so
//! nanoseconds per byte track exits per byte. Attach COM2 with `-device isa-serial,...` (index 1)
//! and debugcon with `-debugcon file:/dev/null` for a fair run; a missing device still "works"
//! (the writes are dropped) and is reported as such.

use strata_boot::arch::{port, serial::Uart, tsc};

use crate::report::Record;
use crate::{exit_code, log::DEBUGCON_PORT, println};

const COM2: u16 = 0x2f8;
const BYTES: usize = 16 * 1024;

/// Runs the three channels and reports nanoseconds per byte for each.
pub fn run() -> u32 {
    let data = [b'x'; 256];
    // SAFETY: COM2 is not used by anything else in the kernel; a missing UART drops writes.
    let mut com2 = unsafe { Uart::init(COM2) };
    let uart = measure(|| com2.write_bytes(&data));
    // SAFETY: debugcon is the log channel; the benchmark bytes are harmless noise in it.
    let outb = measure(|| data.iter().for_each(|&b| unsafe { port::outb(DEBUGCON_PORT, b) }));
    // SAFETY: as above.
    let outsb = measure(|| unsafe { port::outsb(DEBUGCON_PORT, &data) });
    for (name, ns) in [("com2-uart", uart), ("debugcon-outb", outb), ("debugcon-rep-outsb", outsb)] {
        println!("logbench: {:<20} {}.{:02} ns/byte", name, ns / 100, ns % 100);
        Record::new("logbench").str("channel", name).num("centi_ns_per_byte", ns).emit();
    }
    exit_code::SUCCESS
}

/// Hundredths of a nanosecond per byte for writing [`BYTES`] through `write_256`.
fn measure(mut write_256: impl FnMut()) -> u64 {
    let start = tsc::rdtsc();
    for _ in 0..BYTES / 256 {
        write_256();
    }
    tsc::ticks_to_ns(tsc::rdtsc().wrapping_sub(start)) * 100 / BYTES as u64
}
