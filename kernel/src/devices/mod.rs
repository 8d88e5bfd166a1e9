//! The device catalog: every virtio-blk device the kernel found, known by its serial.
//!
//! Devices are named by serial only (at most 20 bytes, set by the runner): microvm enumerates its
//! virtio-mmio slots from the top and PCI order depends on the command line, so position means
//! nothing. Discovery tries both transports: PCI through port I/O when a host bridge answers
//! (pc, q35), else the microvm virtio-mmio window.

mod mmio;
mod pci;
pub mod stream;

use core::sync::atomic::{AtomicU64, Ordering};
use strata_boot::arch::tsc;
use virtio_drivers::{device::blk::VirtIOBlk, transport::SomeTransport};

use crate::hal::KernelHal;
use crate::println;

/// Most devices the catalog holds; more are reported and ignored.
pub const MAX_DISKS: usize = 16;

/// Bytes per virtio-blk sector (capacity unit and request address unit).
pub const SECTOR: u64 = 512;

/// Where a device sits on its transport.
#[derive(Clone, Copy, Debug)]
pub enum Location {
    /// virtio-mmio register window at this physical address.
    Mmio(u64),
    /// PCI bus, device, function.
    Pci(u8, u8, u8),
}

/// One virtio-blk device.
pub struct Disk {
    serial: heapless::String<20>,
    /// The driver (virtio-drivers' synchronous request layer plus its non-blocking calls).
    pub blk: VirtIOBlk<KernelHal, SomeTransport<'static>>,
    /// Where the device was found.
    pub location: Location,
}

impl Disk {
    /// The device's serial (GetId); bytes that are not printable ASCII show as `?`.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.blk.capacity().saturating_mul(SECTOR)
    }

    /// True if the device refuses writes (VIRTIO_BLK_F_RO).
    pub fn read_only(&self) -> bool {
        self.blk.readonly()
    }
}

/// All devices found, in discovery order.
pub struct Catalog {
    disks: heapless::Vec<Disk, MAX_DISKS>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self { disks: heapless::Vec::new() }
    }

    /// The devices, in discovery order.
    pub fn iter(&self) -> impl Iterator<Item = &Disk> {
        self.disks.iter()
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.disks.len()
    }

    /// The device with this serial.
    pub fn find(&mut self, serial: &str) -> Option<&mut Disk> {
        self.disks.iter_mut().find(|d| d.serial() == serial)
    }

    /// The device whose serial sorts first (the demo's default).
    pub fn first_by_serial(&mut self) -> Option<&mut Disk> {
        self.disks.iter_mut().min_by(|a, b| a.serial().cmp(b.serial()))
    }

    fn add(&mut self, transport: SomeTransport<'static>, location: Location) {
        let mut blk = match VirtIOBlk::<KernelHal, _>::new(transport) {
            Ok(blk) => blk,
            Err(e) => {
                println!("strata: virtio-blk at {:?}: init failed: {:?}", location, e);
                return;
            }
        };
        let mut id = [0u8; 20];
        let serial = match blk.device_id(&mut id) {
            Ok(len) => {
                note_first_io();
                printable(&id[..len.min(20)])
            }
            Err(e) => {
                println!("strata: virtio-blk at {:?}: GetId failed: {:?}", location, e);
                heapless::String::new()
            }
        };
        if self.disks.iter().any(|d| d.serial == serial) {
            println!("strata: warning: two devices have serial \"{}\"; only the first is usable by name", serial);
        }
        if self.disks.push(Disk { serial, blk, location }).is_err() {
            println!("strata: more than {} virtio-blk devices; ignoring {:?}", MAX_DISKS, location);
        }
    }
}

/// Finds every virtio-blk device on this machine.
pub fn discover(catalog: &mut Catalog) {
    if !pci::discover(catalog) {
        mmio::discover(catalog);
    }
}

fn printable(bytes: &[u8]) -> heapless::String<20> {
    let mut s = heapless::String::new();
    for &b in bytes {
        let c = if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' };
        let _ = s.push(c);
    }
    s
}

static FIRST_IO_TSC: AtomicU64 = AtomicU64::new(0);

/// Records the completion of the first device request since boot.
pub fn note_first_io() {
    let _ = FIRST_IO_TSC.compare_exchange(0, tsc::rdtsc(), Ordering::Relaxed, Ordering::Relaxed);
}

/// Nanoseconds from kernel entry to the first completed device request, if any.
pub fn first_io_ns() -> Option<u64> {
    match FIRST_IO_TSC.load(Ordering::Relaxed) {
        0 => None,
        t => Some(tsc::ticks_to_ns(t.wrapping_sub(tsc::boot_tsc()))),
    }
}
