//! The workloads the command line chooses between. Each returns an exit code
//! ([`crate::exit_code`]) and reports what it did on the console and as records.
//!
//! Workloads that move data open a node through the block layer ([`crate::stack`]) and run
//! their requests as tasks of the polled executor ([`crate::executor`]).

mod bench;
mod check;
mod create;
mod demo;
mod devices;
mod fat;
mod histogram;
mod io;
mod logbench;
mod sha256;
mod snapshot;
mod stress;

use static_cell::ConstStaticCell;

use crate::cmdline::{Command, Maps};
use crate::devices::Catalog;
use crate::{exit_code, println, report};

/// Bytes of the data buffer workloads share (one workload per boot).
pub const DATA_BYTES: usize = 8 << 20;

#[repr(C, align(4096))]
struct Data([u8; DATA_BYTES]);
static DATA: ConstStaticCell<Data> = ConstStaticCell::new(Data([0; DATA_BYTES]));

/// The data buffer (page-aligned); `None` if a workload took it already.
fn data() -> Option<&'static mut [u8]> {
    DATA.try_take().map(|d| &mut d.0[..])
}

/// Runs `command` against the discovered devices.
pub fn run(command: &Command, disks: &Catalog, maps: &Maps<'_>) -> u32 {
    match *command {
        Command::Devices => devices::run(disks),
        Command::LogBench => logbench::run(),
        Command::Sha256 { options } => sha256::run(disks, maps, options),
        Command::Fat { options, file, write } => fat::run(disks, maps, options, file, write),
        Command::Bench(args) => bench::run(disks, maps, &args),
        Command::Create(args) => create::run(disks, maps, &args),
        Command::Io { options, cmds } => io::run(disks, maps, options, cmds),
        Command::Stress(args) => stress::run(disks, maps, &args),
        Command::Snapshot { options, action } => snapshot::run(disks, maps, options, action),
        Command::Check { options, repair } => {
            use strata_block::driver::qcow2::check::Mode;
            let mode = match repair {
                crate::cmdline::CheckRepair::Nothing => Mode::CHECK,
                crate::cmdline::CheckRepair::Leaks => Mode::LEAKS,
                crate::cmdline::CheckRepair::All => Mode::ALL,
            };
            check::run(disks, maps, options, mode)
        }
        Command::Demo { options } => {
            let default = disks.first_by_serial().map(|d| d.serial());
            match options.or(default) {
                Some(options) => demo::run(disks, maps, options),
                None => {
                    println!("strata: demo: no virtio-blk device found");
                    report::error("usage", format_args!("no virtio-blk device"));
                    exit_code::USAGE
                }
            }
        }
    }
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

/// Bytes per second for `bytes` in `ns`.
fn per_sec(bytes: u64, ns: u64) -> u64 {
    (u128::from(bytes) * 1_000_000_000 / u128::from(ns.max(1))) as u64
}
