//! `devices`: the device table.

use crate::devices::{Catalog, Location};
use crate::report::Record;
use crate::{exit_code, println};

/// Prints one line per device (sorted by serial) and a `device` record for each.
pub fn run(disks: &Catalog) -> u32 {
    let mut order: heapless::Vec<usize, { crate::devices::MAX_DISKS }> = (0..disks.len()).collect();
    let all: heapless::Vec<_, { crate::devices::MAX_DISKS }> = disks.iter().collect();
    order.sort_unstable_by(|&a, &b| all[a].serial().cmp(all[b].serial()));
    println!("{:<20}  {:>14}  {:<4}  {}", "SERIAL", "BYTES", "MODE", "LOCATION");
    for &i in &order {
        let d = all[i];
        let mode = if d.read_only() { "ro" } else { "rw" };
        let (transport, location) = describe(d.location);
        println!("{:<20}  {:>14}  {:<4}  {} {}", d.serial(), d.capacity(), mode, transport, location);
        Record::new("device")
            .str("serial", d.serial())
            .num("capacity", d.capacity())
            .bool("read_only", d.read_only())
            .str("transport", transport)
            .str("location", location)
            .emit();
    }
    println!("{} device(s)", all.len());
    exit_code::SUCCESS
}

struct Where(Location);

impl core::fmt::Display for Where {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Location::Mmio(addr) => write!(f, "{:#x}", addr),
            Location::Pci(b, d, func) => write!(f, "{:02x}:{:02x}.{}", b, d, func),
        }
    }
}

fn describe(location: Location) -> (&'static str, Where) {
    match location {
        Location::Mmio(_) => ("virtio-mmio", Where(location)),
        Location::Pci(..) => ("virtio-pci", Where(location)),
    }
}
