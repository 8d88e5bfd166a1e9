//! The aarch64 `virt` board: virtio-mmio transports from the device tree (`virtio,mmio` nodes;
//! QEMU has 32 at 0x0a00_0000, 0x200 apart), and PCI through the generic ECAM host bridge the
//! device tree describes. Nothing assigns BARs under `-kernel`, so the first [`pci`] call
//! places them from the bridge's `ranges` ([`crate::pci::bars`]).

use super::boot_info::{accepted_device_tree, BootInfo};
use super::entry::DEVICE_MAPPED_END;
use crate::common::MmioWindows;
use crate::pci::dt_ecam::EcamOnce;

pub use crate::pci::dt_ecam::PciConfig;

/// The host bridge, once [`pci`] has set it up.
static PCI: EcamOnce = EcamOnce::new();

/// PCI configuration access, if the device tree has a generic ECAM host bridge the boot
/// tables map. The first call (after `BootInfo::read`) assigns every BAR on the bridge's first
/// bus and enables the functions that fit; later calls return the same access.
pub fn pci() -> Option<PciConfig> {
    // SAFETY: the tree is the one QEMU gave this machine (`BootInfo::read` accepted it);
    // `is_mapped` follows the boot tables, which map everything below DEVICE_MAPPED_END
    // outside RAM as Device memory; only the kernel, on one CPU, drives configuration space.
    unsafe { PCI.get(accepted_device_tree, is_mapped) }
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
