//! The riscv64 `virt` board: virtio-mmio transports from the device tree (`virtio,mmio` nodes
//! under `/soc`; QEMU has 8 of 4 KiB from 0x1000_1000). PCI
//! (ECAM with BARs allocated from the host bridge's `ranges`) is not driven here yet: [`pci`]
//! says there is none.

use super::boot_info::BootInfo;
use super::entry::PHYS_END;
use crate::common::MmioWindows;

/// PCI configuration access; `virt`'s ECAM is not driven yet, so there is never one.
#[derive(Clone, Copy, Debug)]
pub struct PciConfig(());

impl PciConfig {
    /// Reads a configuration word (never called: [`pci`] returns none).
    pub fn read(&self, _bus: u8, _device: u8, _function: u8, _offset: u16) -> u32 {
        u32::MAX
    }

    /// Writes a configuration word (never called: [`pci`] returns none).
    pub fn write(&self, _bus: u8, _device: u8, _function: u8, _offset: u16, _value: u32) {}
}

/// PCI configuration access: none yet on riscv64 `virt`.
pub fn pci() -> Option<PciConfig> {
    None
}

/// The device tree's virtio-mmio windows (top level or one bus down), in tree order.
pub fn virtio_mmio(info: &BootInfo) -> MmioWindows {
    crate::fdt::virtio_mmio_windows(info.fdt().shallow_nodes())
}

/// True if `[addr, addr + size)` is reachable (paging is off: any physical address).
pub fn is_mapped(addr: u64, size: u64) -> bool {
    addr.checked_add(size).is_some_and(|end| end <= PHYS_END)
}
