//! The device catalog: every virtio-blk device the kernel found, known by its serial.
//!
//! Devices are named by serial only (at most 20 bytes, set by the runner): microvm enumerates its
//! virtio-mmio slots from the top and PCI order depends on the command line, so position means
//! nothing. Discovery tries both transports the board describes (`strata_boot::board`): PCI when
//! it has configuration access (pc, q35), and its virtio-mmio windows (microvm's fixed table, or
//! the device tree's).
//!
//! Each device is the block layer's virtio-blk leaf ([`strata_block::dev::virtio::VirtioBlk`])
//! in a `'static` cell of its own, so graphs can hold it for the whole run.

mod mmio;
mod pci;

use core::sync::atomic::{AtomicU64, Ordering};
use static_cell::StaticCell;
use strata_block::dev::virtio::VirtioBlk;
use strata_block::dev::BlockDevice;
use strata_boot::{board, boot_info::BootInfo, clock};
use virtio_drivers::transport::SomeTransport;

use crate::hal::KernelHal;
use crate::println;

/// Most devices the catalog holds (microvm's 24 virtio-mmio slots: a qcow2 chain arrives as
/// one device per file); more are reported and ignored.
pub const MAX_DISKS: usize = 24;

/// Descriptors in each device's queue (QEMU offers 256 on virtio-pci and more on virtio-mmio).
pub const QUEUE_SIZE: usize = 256;

/// Request slots per device: the deepest queue depth a workload can ask for.
pub const QUEUE_SLOTS: usize = 64;

/// The leaf type of every kernel device.
pub type Leaf = VirtioBlk<KernelHal, SomeTransport<'static>, QUEUE_SIZE, QUEUE_SLOTS>;

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
    /// The block layer's leaf over it.
    pub dev: Leaf,
    /// Where the device was found.
    pub location: Location,
    /// The image format the host named for it (`--format`): opened with that driver, never
    /// probed.
    format: core::cell::Cell<Option<&'static str>>,
}

impl Disk {
    /// The device's serial (GetId); bytes that are not printable ASCII show as `?`.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The image format the host named, if any.
    pub fn format(&self) -> Option<&'static str> {
        self.format.get()
    }

    /// Names the device's image format (`--format SERIAL=FMT`).
    pub fn set_format(&self, format: &'static str) {
        self.format.set(Some(format));
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.dev.info().capacity
    }

    /// True if the device refuses writes (VIRTIO_BLK_F_RO).
    pub fn read_only(&self) -> bool {
        self.dev.info().read_only
    }
}

static CELLS: [StaticCell<Disk>; MAX_DISKS] = [const { StaticCell::new() }; MAX_DISKS];

/// All devices found, in discovery order.
pub struct Catalog {
    disks: heapless::Vec<&'static Disk, MAX_DISKS>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self { disks: heapless::Vec::new() }
    }

    /// The devices, in discovery order.
    pub fn iter(&self) -> impl Iterator<Item = &'static Disk> + '_ {
        self.disks.iter().copied()
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.disks.len()
    }

    /// The device with this serial.
    pub fn find(&self, serial: &str) -> Option<&'static Disk> {
        self.iter().find(|d| d.serial() == serial)
    }

    /// The device whose serial sorts first (the demo's default).
    pub fn first_by_serial(&self) -> Option<&'static Disk> {
        self.iter().min_by(|a, b| a.serial().cmp(b.serial()))
    }

    /// Moves every device forward: pops completions and wakes the tasks waiting for them.
    /// Returns the requests completed.
    pub fn poll_all(&self) -> usize {
        self.iter().map(|d| d.dev.process_completions()).sum()
    }

    /// Requests in flight on all devices.
    pub fn in_flight(&self) -> u32 {
        self.iter().map(|d| d.dev.in_flight()).sum()
    }

    fn add(&mut self, transport: SomeTransport<'static>, location: Location) {
        let Some(cell) = CELLS.get(self.disks.len()) else {
            println!("strata: more than {} virtio-blk devices; ignoring {:?}", MAX_DISKS, location);
            return;
        };
        let dev = match Leaf::new(transport, Some(clock::now)) {
            Ok(dev) => dev,
            Err(e) => {
                println!("strata: virtio-blk at {:?}: init failed: {}", location, e);
                return;
            }
        };
        // Bring-up asked the device for its serial: the first device I/O.
        note_first_io();
        // The executor polls devices when idle: tasks waiting on one are woken by completions.
        dev.set_wake_on_pending(false);
        let serial = printable(dev.serial_bytes());
        if serial.is_empty() {
            println!("strata: virtio-blk at {:?}: no serial (GetId)", location);
        }
        if self.disks.iter().any(|d| d.serial == serial) {
            println!("strata: warning: two devices have serial \"{}\"; only the first is usable by name", serial);
        }
        let disk: &'static Disk = cell.init(Disk { serial, dev, location, format: core::cell::Cell::new(None) });
        let _ = self.disks.push(disk);
    }
}

/// Finds every virtio-blk device on this machine.
pub fn discover(catalog: &mut Catalog, info: &BootInfo) {
    if let Some(config) = board::pci() {
        pci::discover(catalog, config);
    }
    mmio::discover(catalog, &board::virtio_mmio(info));
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
    let _ = FIRST_IO_TSC.compare_exchange(0, clock::now(), Ordering::Relaxed, Ordering::Relaxed);
}

/// Nanoseconds from kernel entry to the first completed device request, if any.
pub fn first_io_ns() -> Option<u64> {
    match FIRST_IO_TSC.load(Ordering::Relaxed) {
        0 => None,
        t => Some(clock::ticks_to_ns(t.wrapping_sub(clock::boot_ticks()))),
    }
}
