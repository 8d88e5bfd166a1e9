//! The workloads the command line chooses between. Each returns an exit code
//! ([`crate::exit_code`]) and reports what it did on the console and as records.

mod demo;
mod devices;
mod logbench;
mod sha256;

use crate::cmdline::Command;
use crate::devices::{Catalog, Disk};
use crate::{exit_code, println, report};

/// Runs `command` against the discovered devices.
pub fn run(command: &Command, disks: &mut Catalog) -> u32 {
    match *command {
        Command::Devices => devices::run(disks),
        Command::LogBench => logbench::run(),
        Command::Sha256 { device } => match find(disks, device) {
            Ok(disk) => sha256::run(disk),
            Err(code) => code,
        },
        Command::Demo { device, size } => {
            let disk = match device {
                Some(serial) => find(disks, serial),
                None => disks.first_by_serial().ok_or_else(|| {
                    println!("strata: demo: no virtio-blk device found");
                    report::error("usage", format_args!("no virtio-blk device"));
                    exit_code::USAGE
                }),
            };
            match disk {
                Ok(disk) => demo::run(disk, size),
                Err(code) => code,
            }
        }
    }
}

/// The device with `serial`, or a reported usage error listing the serials there are.
fn find<'c>(disks: &'c mut Catalog, serial: &str) -> Result<&'c mut Disk, u32> {
    if disks.find(serial).is_none() {
        println!("strata: no device with serial \"{}\"; devices are:", serial);
        for d in disks.iter() {
            println!("  {}", d.serial());
        }
        report::error("usage", format_args!("no device with serial \"{}\"", serial));
        return Err(exit_code::USAGE);
    }
    disks.find(serial).ok_or(exit_code::USAGE)
}

/// Formats bytes per second as MB/s with one decimal, for the console.
struct MbPerSec(u64);

impl core::fmt::Display for MbPerSec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let tenths = self.0 / 100_000;
        write!(f, "{}.{} MB/s", tenths / 10, tenths % 10)
    }
}

/// Formats nanoseconds as microseconds with one decimal, for the console.
struct Micros(u64);

impl core::fmt::Display for Micros {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{} us", self.0 / 1000, (self.0 % 1000) / 100)
    }
}
