//! The Strata unikernel.
//!
//! Boots on QEMU's x86_64 machines through PVH, finds every virtio-blk device (virtio-mmio on
//! microvm, virtio-pci on pc/q35), names each by its serial, runs the workload the command line
//! asks for, and ends QEMU with a status the runner understands (see [`exit_code`]).
//!
//! Output has three channels: the human console on COM1 (with machine-readable `@{...}` records
//! mixed in, see [`report`]), defmt logs on QEMU's debugcon (port 0xe9), and the exit status.

#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

mod cmdline;
mod console;
mod devices;
mod executor;
mod exit_code;
mod fault;
mod footprint;
mod hal;
pub mod log;
mod pack;
mod report;
mod stack;
mod stack_depth;
mod workloads;

use strata_boot::{boot_info::BootInfo, clock, traps};

/// The kernel's entry, called by the architecture's entry code with its boot handle (x86: the
/// PVH start info's address).
#[no_mangle]
extern "C" fn strata_main(boot_handle: u64) -> ! {
    clock::mark_boot();
    stack_depth::paint();
    console::init();
    traps::init();
    // SAFETY: `boot_handle` is what the entry code passed us.
    let info = match unsafe { BootInfo::read(boot_handle) } {
        Ok(info) => info,
        Err(e) => {
            println!("strata: {}", e);
            exit_code::exit(exit_code::BOOT_ERROR);
        }
    };
    // Devices first: nothing on the way to the first I/O needs the clock's frequency (times are
    // kept in clock ticks and converted later), so calibration waits until after discovery.
    let mut disks = devices::Catalog::new();
    devices::discover(&mut disks, &info);
    let cal = clock::calibrate();
    let cmdline = info.cmdline();
    println!("strata {} booting: cmdline \"{}\"", env!("CARGO_PKG_VERSION"), cmdline);
    report::boot(&cal, info.ram_bytes(), cmdline);
    footprint::report();
    defmt::info!("boot: clock {=u64} Hz (calibrated: {=bool}), {=usize} virtio-blk devices", cal.hz, cal.calibrated, disks.len());

    let parsed = match cmdline::parse(cmdline) {
        Ok(c) => c,
        Err(e) => {
            println!("strata: bad command line: {}", e);
            report::error("usage", format_args!("{}", e));
            println!("{}", cmdline::USAGE);
            exit_code::exit(exit_code::USAGE);
        }
    };
    for &(serial, format) in &parsed.formats {
        if let Some(disk) = disks.find(serial) {
            disk.set_format(format);
        }
    }
    for &(serial, at) in &parsed.zeroed {
        if let Some(disk) = disks.find(serial) {
            disk.dev.set_zeroed_from(at);
        }
    }
    stack::define_objects(&parsed.objects);
    let code = workloads::run(&parsed.command, &disks, &parsed.maps);
    exit_code::exit(code)
}
