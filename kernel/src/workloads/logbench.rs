//! `logbench`: what each candidate log channel costs per byte, to choose defmt's channel.
//!
//! Writes the same bytes through every channel the board offers (`strata_boot::trace::channels`;
//! on x86: a second 16550 UART (COM2, status poll + data write per byte), debugcon with one `out`
//! per byte, and debugcon with `rep outsb` per 256-byte buffer, what `log.rs` uses). Under KVM
//! every port access the CPU cannot batch is a VM exit, so nanoseconds per byte track exits per
//! byte. Attach COM2 with `-device isa-serial,...` (index 1) and debugcon with
//! `-debugcon file:/dev/null` for a fair run; a missing device still "works" (the writes are
//! dropped) and is reported as such.

use strata_boot::{clock, trace};

use crate::report::Record;
use crate::{exit_code, println};

const BYTES: usize = 16 * 1024;

/// Runs every channel and reports nanoseconds per byte for each.
pub fn run() -> u32 {
    let data = [b'x'; 256];
    for channel in trace::channels() {
        (channel.setup)();
        let ns = measure(|| (channel.write)(&data));
        println!(
            "logbench: {:<20} {}.{:02} ns/byte",
            channel.name,
            ns / 100,
            ns % 100
        );
        Record::new("logbench")
            .str("channel", channel.name)
            .num("centi_ns_per_byte", ns)
            .emit();
    }
    exit_code::SUCCESS
}

/// Hundredths of a nanosecond per byte for writing [`BYTES`] through `write_256`.
fn measure(mut write_256: impl FnMut()) -> u64 {
    let start = clock::now();
    for _ in 0..BYTES / 256 {
        write_256();
    }
    clock::ticks_to_ns(clock::now().wrapping_sub(start)) * 100 / BYTES as u64
}
