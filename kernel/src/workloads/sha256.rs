//! `sha256 SERIAL`: the SHA-256 of a device's raw bytes, read through the polled path.

use sha2::{Digest, Sha256};

use crate::devices::stream::{stream, Dir};
use crate::devices::Disk;
use crate::report::{self, Record};
use crate::workloads::{MbPerSec, Micros};
use crate::{exit_code, println};

/// Hashes the whole device and prints the hex digest.
pub fn run(disk: &mut Disk) -> u32 {
    let mut hasher = Sha256::new();
    let capacity = disk.capacity();
    let stats = match stream(disk, Dir::Read, 0, capacity, |_, chunk| hasher.update(&*chunk)) {
        Ok(s) => s,
        Err(e) => {
            println!("strata: sha256 {}: {}", disk.serial(), e);
            report::error("io", format_args!("sha256 {}: {}", disk.serial(), e));
            return exit_code::FAILURE;
        }
    };
    let digest = hasher.finalize();
    let mut hex = heapless::String::<64>::new();
    for b in digest {
        let _ = core::fmt::write(&mut hex, format_args!("{:02x}", b));
    }
    println!("{}  {}", hex, disk.serial());
    println!(
        "sha256: {} bytes in {} requests, {}, latency p50 {} p99 {}",
        stats.bytes, stats.requests, MbPerSec(stats.bytes_per_sec()), Micros(stats.p50_ns), Micros(stats.p99_ns)
    );
    Record::new("sha256")
        .str("device", disk.serial())
        .num("bytes", stats.bytes)
        .str("digest", hex.as_str())
        .num("us", stats.ns / 1000)
        .emit();
    exit_code::SUCCESS
}
