//! The aarch64 `virt` board: virtio-mmio transports from the device tree (`virtio,mmio` nodes;
//! QEMU has 32 at 0x0a00_0000, 0x200 apart), and PCI through the generic ECAM host bridge the
//! device tree describes. Nothing assigns BARs under `-kernel`, so the first [`pci`] call
//! places them from the bridge's `ranges` ([`crate::pci::bars`]).

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use super::boot_info::{accepted_device_tree, BootInfo};
use super::entry::DEVICE_MAPPED_END;
use crate::common::MmioWindows;
use crate::pci::bars;
use crate::pci::ecam::Ecam;
use crate::pci::host_bridge::HostBridge;
use crate::pci::ConfigSpace;

/// PCI configuration access: the ECAM window of `virt`'s host bridge.
#[derive(Clone, Copy, Debug)]
pub struct PciConfig(Ecam);

impl PciConfig {
    /// Reads the 32-bit word at `offset` (rounded down to 4) of a function's 4 KiB of
    /// configuration space; all ones outside the bridge's buses.
    pub fn read(&self, bus: u8, device: u8, function: u8, offset: u16) -> u32 {
        self.0.read(bus, device, function, offset)
    }

    /// Writes the 32-bit word at `offset` (rounded down to 4); ignored outside the bridge's
    /// buses.
    pub fn write(&self, bus: u8, device: u8, function: u8, offset: u16, value: u32) {
        self.0.write(bus, device, function, offset, value)
    }
}

const UNTRIED: u8 = 0;
const ABSENT: u8 = 1;
const READY: u8 = 2;

/// Whether [`pci`] has set the bridge up; the ECAM base and bus range when it has.
static PCI_STATE: AtomicU8 = AtomicU8::new(UNTRIED);
static PCI_ECAM: AtomicU64 = AtomicU64::new(0);
static PCI_BUSES: AtomicU32 = AtomicU32::new(0);

/// PCI configuration access, if the device tree has a generic ECAM host bridge the boot
/// tables map. The first call (after `BootInfo::read`) assigns every BAR on the bridge's first
/// bus and enables the functions that fit; later calls return the same access.
pub fn pci() -> Option<PciConfig> {
    let ecam = |buses: u32| {
        // SAFETY: READY is stored only after `setup` found the window in the device tree and
        // checked that the boot tables map it (Device memory); configuration space is driven
        // only through this type on one CPU.
        unsafe {
            Ecam::new(
                PCI_ECAM.load(Ordering::Relaxed),
                (buses >> 8) as u8,
                buses as u8,
            )
        }
    };
    match PCI_STATE.load(Ordering::Relaxed) {
        READY => Some(PciConfig(ecam(PCI_BUSES.load(Ordering::Relaxed)))),
        ABSENT => None,
        _ => {
            let found = setup();
            PCI_STATE.store(if found { READY } else { ABSENT }, Ordering::Relaxed);
            found.then(|| PciConfig(ecam(PCI_BUSES.load(Ordering::Relaxed))))
        }
    }
}

/// Finds the host bridge and assigns BARs; false without a usable one.
fn setup() -> bool {
    let Some(fdt) = accepted_device_tree() else {
        return false;
    };
    let Ok(bridge) = HostBridge::find_top(&fdt) else {
        return false;
    };
    if !is_mapped(bridge.ecam_base, bridge.ecam_size) {
        return false;
    }
    // SAFETY: the window comes from the device tree's host bridge and is mapped (checked
    // above); nothing else drives configuration space.
    let ecam = unsafe { Ecam::new(bridge.ecam_base, bridge.bus_start, bridge.bus_end) };
    // Functions that did not fit keep decoding off and BARs at 0, which the kernel refuses.
    bars::assign(&ecam, &bridge, is_mapped);
    PCI_ECAM.store(bridge.ecam_base, Ordering::Relaxed);
    PCI_BUSES.store(
        u32::from(bridge.bus_start) << 8 | u32::from(bridge.bus_end),
        Ordering::Relaxed,
    );
    true
}

/// The device tree's virtio-mmio windows, in tree order.
pub fn virtio_mmio(info: &BootInfo) -> MmioWindows {
    crate::fdt::virtio_mmio_windows(info.fdt().top_nodes())
}

/// True if `[addr, addr + size)` is mapped (Device memory below 1 GiB, RAM to 4 GiB, Device
/// memory again to 512 GiB).
pub fn is_mapped(addr: u64, size: u64) -> bool {
    addr.checked_add(size)
        .is_some_and(|end| end <= DEVICE_MAPPED_END)
}
