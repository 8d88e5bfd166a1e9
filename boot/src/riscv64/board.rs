//! The riscv64 `virt` board: virtio-mmio transports from the device tree (`virtio,mmio` nodes
//! under `/soc`; QEMU has 8 of 4 KiB from 0x1000_1000), and PCI through the generic ECAM host
//! bridge under `/soc`. Nothing assigns BARs under `-kernel` (OpenSBI does not), so the first
//! [`pci`] call places them from the bridge's `ranges` ([`crate::pci::bars`]).

use super::boot_info::{saved, BootInfo};
use super::entry::PHYS_END;
use crate::common::MmioWindows;
use crate::pci::dt_ecam::EcamOnce;

pub use crate::pci::dt_ecam::PciConfig;

/// The host bridge, once [`pci`] has set it up.
static PCI: EcamOnce = EcamOnce::new();

/// PCI configuration access, if the device tree has a generic ECAM host bridge. The first
/// call (after `BootInfo::read`) assigns every BAR on the bridge's first bus and enables the
/// functions that fit; later calls return the same access.
pub fn pci() -> Option<PciConfig> {
    // SAFETY: the tree is the one OpenSBI passed this machine (`BootInfo::read` accepted it);
    // paging is off, so every address `is_mapped` accepts is reached as itself, and `virt`
    // does not cache device regions (PMAs); only the kernel, on one hart, drives
    // configuration space.
    unsafe { PCI.get(saved, is_mapped) }
}

/// The device tree's virtio-mmio windows (top level or one bus down), in tree order.
pub fn virtio_mmio(info: &BootInfo) -> MmioWindows {
    crate::fdt::virtio_mmio_windows(info.fdt().shallow_nodes())
}

/// True if `[addr, addr + size)` is reachable (paging is off: any physical address).
pub fn is_mapped(addr: u64, size: u64) -> bool {
    addr.checked_add(size).is_some_and(|end| end <= PHYS_END)
}
