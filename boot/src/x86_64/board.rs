//! The x86 boards (QEMU `pc`, `q35`, `microvm`): where devices are found.
//!
//! pc and q35 have PCI with configuration mechanism #1 (ports 0xcf8/0xcfc; firmware has
//! assigned BARs and bus numbers); microvm has no PCI host bridge and 24 virtio-mmio windows of
//! 512 bytes from 0xfeb00000 (QEMU `hw/i386/microvm.c`), a fixed table since microvm passes no
//! device tree to a PVH kernel. The boot page tables identity-map the first 4 GiB, which holds
//! both windows.

use super::boot_info::BootInfo;
use super::port::{inl, outl};
use crate::common::MmioWindows;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// microvm's virtio-mmio window: VIRTIO_MMIO_BASE, 24 slots of 512 bytes.
const MICROVM_MMIO_BASE: u64 = 0xfeb0_0000;
const MICROVM_MMIO_SLOT: u64 = 0x200;
const MICROVM_MMIO_SLOTS: u64 = 24;

/// Highest address (exclusive) the boot page tables map.
const IDENTITY_MAPPED: u64 = 4 << 30;

/// PCI configuration space access (here: mechanism #1 over ports, 256 bytes per function).
#[derive(Clone, Copy, Debug)]
pub struct PciConfig(());

impl PciConfig {
    fn address(bus: u8, device: u8, function: u8, offset: u16) -> u32 {
        0x8000_0000
            | (u32::from(bus) << 16)
            | (u32::from(device & 0x1f) << 11)
            | (u32::from(function & 0x7) << 8)
            | u32::from(offset & 0xfc)
    }

    /// Reads the 32-bit word at `offset` (rounded down to 4) of a function's configuration
    /// space; offsets past 255 are not reachable through ports and read as all ones.
    pub fn read(&self, bus: u8, device: u8, function: u8, offset: u16) -> u32 {
        if offset > 0xff {
            return u32::MAX;
        }
        // SAFETY: 0xcf8/0xcfc are the PCI configuration ports, used only through this type on
        // one CPU without interrupts, so the address/data pair is not interleaved.
        unsafe {
            outl(CONFIG_ADDRESS, Self::address(bus, device, function, offset));
            inl(CONFIG_DATA)
        }
    }

    /// Writes the 32-bit word at `offset` (rounded down to 4); offsets past 255 are ignored.
    pub fn write(&self, bus: u8, device: u8, function: u8, offset: u16, value: u32) {
        if offset > 0xff {
            return;
        }
        // SAFETY: as in `read`.
        unsafe {
            outl(CONFIG_ADDRESS, Self::address(bus, device, function, offset));
            outl(CONFIG_DATA, value);
        }
    }
}

/// PCI configuration access, if a host bridge answers (pc, q35; not microvm).
pub fn pci() -> Option<PciConfig> {
    let config = PciConfig(());
    (config.read(0, 0, 0, 0) & 0xffff != 0xffff).then_some(config)
}

/// The virtio-mmio windows to probe: microvm's table when there is no PCI, else none.
pub fn virtio_mmio(_info: &BootInfo) -> MmioWindows {
    let mut windows = MmioWindows::new();
    if pci().is_none() {
        for slot in 0..MICROVM_MMIO_SLOTS {
            windows.push(
                MICROVM_MMIO_BASE + slot * MICROVM_MMIO_SLOT,
                MICROVM_MMIO_SLOT,
            );
        }
    }
    windows
}

/// True if `[addr, addr + size)` is mapped (identity, device memory where it is MMIO).
pub fn is_mapped(addr: u64, size: u64) -> bool {
    addr.checked_add(size)
        .is_some_and(|end| end <= IDENTITY_MAPPED)
}
