//! PCI without firmware, for boards whose loader assigns nothing (QEMU `virt` on aarch64 and
//! riscv64 under `-kernel`): configuration space through ECAM, the host bridge read from the
//! device tree (`pci-host-ecam-generic`: `reg`, `bus-range`, `ranges`), and a heap-free BAR
//! allocator that sizes every BAR of the root bus's functions and places them in the bridge's
//! windows.
//!
//! The pieces are portable and tested on the host against a fake configuration space
//! ([`bars`]' tests); [`dt_ecam`] wires them for a device-tree board: it finds the node, checks
//! that the ECAM and the windows are reachable, and runs [`bars::assign`] once before the
//! kernel enumerates devices through the board's `board::pci()`.

pub mod bars;
pub mod dt_ecam;
pub mod ecam;
pub mod host_bridge;

/// One PCI segment's configuration space as 32-bit words (`offset` is rounded down to 4).
///
/// Methods take `&self`: the space is hardware (or a fake with interior mutability), and the
/// kernel is single-threaded.
pub trait ConfigSpace {
    /// Reads the word at `offset` of a function's configuration space; all ones where nothing
    /// answers.
    fn read(&self, bus: u8, device: u8, function: u8, offset: u16) -> u32;

    /// Writes the word at `offset` of a function's configuration space.
    fn write(&self, bus: u8, device: u8, function: u8, offset: u16, value: u32);
}

/// The command register's bits this module sets (PCI Local Bus 3.0, 6.2.2).
pub mod command {
    /// Respond to I/O space accesses.
    pub const IO_SPACE: u16 = 1 << 0;
    /// Respond to memory space accesses.
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// May master the bus (DMA): virtio's rings need it.
    pub const BUS_MASTER: u16 = 1 << 2;
}
