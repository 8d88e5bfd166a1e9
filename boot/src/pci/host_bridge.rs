//! A generic ECAM host bridge as the device tree describes it (`compatible =
//! "pci-host-ecam-generic"`, Linux's `Documentation/devicetree/bindings/pci/host-generic-pci.yaml`):
//! `reg` the ECAM window, `bus-range` the buses behind it, `ranges` the windows through which
//! the CPU reaches PCI I/O and memory space.
//!
//! A `ranges` entry is a PCI address (3 cells: `phys.hi` with the space code in bits 24-25 and
//! the prefetchable bit 30, then 64 address bits), a CPU address (the parent's
//! `#address-cells`) and a size (the node's `#size-cells`). On QEMU `virt` (aarch64, QEMU 7.2
//! to 10.x) the ECAM is at 0x40_1000_0000 (256 buses; `highmem-ecam`, on by default) or
//! 0x3f00_0000 (16 buses), with an I/O window at 0x3eff_0000, a 32-bit memory window
//! 0x1000_0000-0x3efe_ffff and a 64-bit one at 512 GiB. On riscv64 `virt` the bridge sits
//! under `/soc` (`ranges;`, one to one): ECAM at 0x3000_0000 (256 buses), I/O at 0x0300_0000,
//! a 32-bit memory window 0x4000_0000-0x7fff_ffff and a 64-bit one of 16 GiB at 16 GiB
//! (QEMU 7.2 and 10.0 with up to 16 GiB of RAM; above RAM with more).

use crate::fdt::{Fdt, Node};

/// Most windows kept from `ranges` (QEMU's virt boards have three).
pub const MAX_WINDOWS: usize = 4;

/// The `compatible` string of a generic ECAM host bridge.
pub const COMPATIBLE: &str = "pci-host-ecam-generic";

/// Which PCI space a window opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// I/O space.
    Io,
    /// 32-bit memory space.
    Mem32,
    /// 64-bit memory space.
    Mem64,
}

/// One window from `ranges`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// The space.
    pub space: Space,
    /// Prefetchable memory only.
    pub prefetchable: bool,
    /// First PCI (bus) address.
    pub pci_base: u64,
    /// The CPU address `pci_base` appears at.
    pub cpu_base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// Why a host bridge node was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeError {
    /// No `pci-host-ecam-generic` node.
    Absent,
    /// `reg` missing, too short or not a whole number of buses (1 MiB each).
    BadReg,
    /// The node's `#address-cells` is not 3, or a cell count is not 1 or 2.
    BadCells,
    /// `bus-range` outside the ECAM window or reversed.
    BadBusRange,
}

/// The host bridge: its ECAM window, buses and windows.
#[derive(Clone, Copy, Debug)]
pub struct HostBridge {
    /// CPU address of the ECAM window (bus `bus_start`).
    pub ecam_base: u64,
    /// Its length (1 MiB per bus).
    pub ecam_size: u64,
    /// First bus number.
    pub bus_start: u8,
    /// Last bus number.
    pub bus_end: u8,
    windows: [Option<Window>; MAX_WINDOWS],
}

/// The big-endian number of `cells` cells (1 or 2) at cell `at` of `value`.
fn cells(value: &[u8], at: usize, cells: u32) -> Option<u64> {
    let word = |i: usize| -> Option<u64> {
        let start = i.checked_mul(4)?;
        let b = value.get(start..start.checked_add(4)?)?;
        Some(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    };
    match cells {
        1 => word(at),
        2 => Some(word(at)? << 32 | word(at.checked_add(1)?)?),
        _ => None,
    }
}

/// The big-endian u32 property `name` of `node`, if present and long enough.
fn u32_prop(node: &Node<'_>, name: &str) -> Option<u32> {
    node.prop(name)
        .and_then(|v| cells(v, 0, 1))
        .map(|v| v as u32)
}

/// The properties a host bridge is read from, as raw device tree values.
#[derive(Clone, Copy, Debug)]
pub struct Props<'a> {
    /// `reg`.
    pub reg: &'a [u8],
    /// `ranges` (empty when absent).
    pub ranges: &'a [u8],
    /// `bus-range`, if present.
    pub bus_range: Option<&'a [u8]>,
    /// The parent's `#address-cells` (CPU addresses in `reg` and `ranges`).
    pub parent_address_cells: u32,
    /// The parent's `#size-cells` (sizes in `reg`).
    pub parent_size_cells: u32,
    /// The node's own `#address-cells` (must be 3).
    pub address_cells: u32,
    /// The node's own `#size-cells` (sizes in `ranges`).
    pub size_cells: u32,
}

impl HostBridge {
    /// Reads a host bridge from its properties. `ranges` entries that are malformed or of
    /// configuration space are skipped; more than [`MAX_WINDOWS`] are ignored.
    pub fn from_props(p: &Props<'_>) -> Result<Self, BridgeError> {
        let (pac, psc) = (p.parent_address_cells, p.parent_size_cells);
        if p.address_cells != 3
            || !(1..=2).contains(&pac)
            || !(1..=2).contains(&psc)
            || !(1..=2).contains(&p.size_cells)
        {
            return Err(BridgeError::BadCells);
        }
        let ecam_base = cells(p.reg, 0, pac).ok_or(BridgeError::BadReg)?;
        let ecam_size = cells(p.reg, pac as usize, psc).ok_or(BridgeError::BadReg)?;
        let buses = ecam_size >> 20;
        if buses == 0
            || ecam_size & 0xf_ffff != 0
            || ecam_base & 0xf_ffff != 0
            || ecam_base.checked_add(ecam_size).is_none()
        {
            return Err(BridgeError::BadReg);
        }
        let (bus_start, bus_end) = match p.bus_range {
            Some(v) => {
                let start = cells(v, 0, 1).ok_or(BridgeError::BadBusRange)?;
                let end = cells(v, 1, 1).ok_or(BridgeError::BadBusRange)?;
                (start, end)
            }
            None => (0, buses.min(256) - 1),
        };
        // The window holds `buses` buses from `bus_start`: a longer range is cut to it.
        let bus_end = bus_end.min(bus_start.saturating_add(buses - 1));
        if bus_start > bus_end || bus_end > 255 {
            return Err(BridgeError::BadBusRange);
        }
        let mut bridge = HostBridge {
            ecam_base,
            ecam_size,
            bus_start: bus_start as u8,
            bus_end: bus_end as u8,
            windows: [None; MAX_WINDOWS],
        };
        let entry = 3 + pac as usize + p.size_cells as usize;
        let mut kept = 0;
        for i in 0..p.ranges.len() / 4 / entry {
            let at = i * entry;
            let (Some(hi), Some(pci_base), Some(cpu_base), Some(size)) = (
                cells(p.ranges, at, 1),
                cells(p.ranges, at + 1, 2),
                cells(p.ranges, at + 3, pac),
                cells(p.ranges, at + 3 + pac as usize, p.size_cells),
            ) else {
                continue;
            };
            let space = match (hi >> 24) & 3 {
                1 => Space::Io,
                2 => Space::Mem32,
                3 => Space::Mem64,
                _ => continue,
            };
            if size == 0
                || pci_base.checked_add(size).is_none()
                || cpu_base.checked_add(size).is_none()
            {
                continue;
            }
            if let Some(slot) = bridge.windows.get_mut(kept) {
                *slot = Some(Window {
                    space,
                    prefetchable: hi & (1 << 30) != 0,
                    pci_base,
                    cpu_base,
                    size,
                });
                kept += 1;
            }
        }
        Ok(bridge)
    }

    /// Reads the host bridge `node` (its CPU addresses in its parent's cells).
    pub fn from_node(node: &Node<'_>) -> Result<Self, BridgeError> {
        let (parent_address_cells, parent_size_cells) = node.parent_cells();
        Self::from_props(&Props {
            reg: node.prop("reg").unwrap_or(&[]),
            ranges: node.prop("ranges").unwrap_or(&[]),
            bus_range: node.prop("bus-range"),
            parent_address_cells,
            parent_size_cells,
            address_cells: u32_prop(node, "#address-cells").unwrap_or(0),
            size_cells: u32_prop(node, "#size-cells").unwrap_or(0),
        })
    }

    /// The first generic ECAM host bridge of `fdt` at the top level (aarch64 `virt`) or on a
    /// one-to-one bus below it (riscv64 `virt`: `/soc/pci@30000000`), as
    /// [`Fdt::shallow_nodes`] walks them.
    pub fn find(fdt: &Fdt<'_>) -> Result<Self, BridgeError> {
        let node = fdt
            .shallow_nodes()
            .find(|n| n.is_compatible(COMPATIBLE))
            .ok_or(BridgeError::Absent)?;
        Self::from_node(&node)
    }

    /// The windows, in `ranges` order.
    pub fn windows(&self) -> impl Iterator<Item = &Window> + '_ {
        self.windows.iter().flatten()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn bytes(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    /// `virt`'s properties as QEMU 10.0 writes them (`highmem-ecam` on).
    fn virt(reg: &[u32], bus_range: Option<&[u32]>) -> Result<HostBridge, BridgeError> {
        let ranges = bytes(&[
            0x0100_0000,
            0,
            0,
            0,
            0x3eff_0000,
            0,
            0x1_0000, //
            0x0200_0000,
            0,
            0x1000_0000,
            0,
            0x1000_0000,
            0,
            0x2eff_0000, //
            0x0300_0000,
            0x80,
            0,
            0x80,
            0,
            0x80,
            0,
        ]);
        let reg = bytes(reg);
        let bus_range = bus_range.map(bytes);
        HostBridge::from_props(&Props {
            reg: &reg,
            ranges: &ranges,
            bus_range: bus_range.as_deref(),
            parent_address_cells: 2,
            parent_size_cells: 2,
            address_cells: 3,
            size_cells: 2,
        })
    }

    #[test]
    fn reads_virts_ecam_and_windows() {
        let b = virt(&[0x40, 0x1000_0000, 0, 0x1000_0000], Some(&[0, 0xff])).unwrap();
        assert_eq!(
            (b.ecam_base, b.ecam_size, b.bus_start, b.bus_end),
            (0x40_1000_0000, 0x1000_0000, 0, 255)
        );
        let w: Vec<Window> = b.windows().copied().collect();
        assert_eq!(
            w,
            [
                Window {
                    space: Space::Io,
                    prefetchable: false,
                    pci_base: 0,
                    cpu_base: 0x3eff_0000,
                    size: 0x1_0000
                },
                Window {
                    space: Space::Mem32,
                    prefetchable: false,
                    pci_base: 0x1000_0000,
                    cpu_base: 0x1000_0000,
                    size: 0x2eff_0000
                },
                Window {
                    space: Space::Mem64,
                    prefetchable: false,
                    pci_base: 0x80_0000_0000,
                    cpu_base: 0x80_0000_0000,
                    size: 0x80_0000_0000
                },
            ]
        );
        // The low ECAM (highmem-ecam off): 16 buses; a bus-range longer than the window is cut.
        let low = virt(&[0, 0x3f00_0000, 0, 0x0100_0000], Some(&[0, 0xff])).unwrap();
        assert_eq!(
            (low.ecam_base, low.bus_start, low.bus_end),
            (0x3f00_0000, 0, 15)
        );
        let none = virt(&[0, 0x3f00_0000, 0, 0x0100_0000], None).unwrap();
        assert_eq!((none.bus_start, none.bus_end), (0, 15));
    }

    #[test]
    fn malformed_properties_are_refused_never_a_panic() {
        assert_eq!(
            virt(&[0x40, 0x1000_0000], None).unwrap_err(),
            BridgeError::BadReg
        );
        assert_eq!(
            virt(&[0, 0x3f00_0000, 0, 0x1234], None).unwrap_err(),
            BridgeError::BadReg
        );
        assert_eq!(
            virt(&[0xffff_ffff, 0xfff0_0000, 0, 0x0020_0000], None).unwrap_err(),
            BridgeError::BadReg
        );
        assert_eq!(
            virt(&[0, 0x3f00_0000, 0, 0x0100_0000], Some(&[5, 2])).unwrap_err(),
            BridgeError::BadBusRange
        );
        assert_eq!(
            virt(&[0, 0x3f00_0000, 0, 0x0100_0000], Some(&[300, 400])).unwrap_err(),
            BridgeError::BadBusRange
        );
        assert_eq!(
            virt(&[0, 0x3f00_0000, 0, 0x0100_0000], Some(&[1])).unwrap_err(),
            BridgeError::BadBusRange
        );
        // Truncated ranges, hostile cell counts: every prefix parses or is refused.
        let ranges = bytes(&[
            0x0200_0000,
            0,
            0x1000_0000,
            0,
            0x1000_0000,
            0,
            0x2eff_0000,
            0x0300_0000,
            0x80,
        ]);
        let reg = bytes(&[0, 0x3f00_0000, 0, 0x0100_0000]);
        for cut in 0..=ranges.len() {
            for (pac, psc, ac, sc) in [
                (2, 2, 3, 2),
                (1, 1, 3, 1),
                (3, 2, 3, 2),
                (2, 2, 2, 2),
                (u32::MAX, 2, 3, u32::MAX),
            ] {
                let _ = HostBridge::from_props(&Props {
                    reg: &reg,
                    ranges: &ranges[..cut],
                    bus_range: None,
                    parent_address_cells: pac,
                    parent_size_cells: psc,
                    address_cells: ac,
                    size_cells: sc,
                })
                .map(|b| b.windows().count());
            }
        }
    }

    #[test]
    fn finds_riscv64_virts_bridge_under_soc() {
        // `qemu-system-riscv64 -machine virt,dumpdtb=riscv64-virt-qemu10.dtb -m 256` (10.0.2).
        let blob = include_bytes!("testdata/riscv64-virt-qemu10.dtb");
        let fdt = Fdt::parse(blob).unwrap();
        assert!(
            fdt.top_nodes().all(|n| !n.is_compatible(COMPATIBLE)),
            "not at the top level"
        );
        let b = HostBridge::find(&fdt).unwrap();
        assert_eq!(
            (b.ecam_base, b.ecam_size, b.bus_start, b.bus_end),
            (0x3000_0000, 0x1000_0000, 0, 255)
        );
        let w: Vec<(Space, u64, u64, u64)> = b
            .windows()
            .map(|w| (w.space, w.pci_base, w.cpu_base, w.size))
            .collect();
        assert_eq!(
            w,
            [
                (Space::Io, 0, 0x0300_0000, 0x1_0000),
                (Space::Mem32, 0x4000_0000, 0x4000_0000, 0x4000_0000),
                (Space::Mem64, 0x4_0000_0000, 0x4_0000_0000, 0x4_0000_0000),
            ]
        );
    }
}
