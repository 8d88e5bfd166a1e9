//! virtio-pci discovery on pc and q35, with configuration space through ports 0xcf8/0xcfc.
//!
//! Port I/O reaches the first 256 bytes of each function's configuration space on both machines,
//! which holds everything virtio needs. Buses behind bridges are followed through their
//! secondary bus numbers (firmware has numbered them), without recursion.

use strata_boot::arch::port::{inl, outl};
use virtio_drivers::transport::{
    pci::{
        bus::{BarInfo, Command, ConfigurationAccess, DeviceFunction, HeaderType, PciRoot},
        virtio_device_type, PciTransport,
    },
    DeviceType,
};

use super::{Catalog, Location};
use crate::{hal, hal::KernelHal, println};

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// PCI configuration mechanism #1 (ports 0xcf8/0xcfc).
struct PortCam;

impl PortCam {
    fn address(df: DeviceFunction, offset: u8) -> u32 {
        0x8000_0000
            | (u32::from(df.bus) << 16)
            | (u32::from(df.device) << 11)
            | (u32::from(df.function) << 8)
            | u32::from(offset & 0xfc)
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        // SAFETY: 0xcf8/0xcfc are the PCI configuration ports, used only from this module on
        // one CPU; the address/data pair is not interleaved.
        unsafe {
            outl(CONFIG_ADDRESS, Self::address(df, offset));
            inl(CONFIG_DATA)
        }
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        // SAFETY: as in `read_word`.
        unsafe {
            outl(CONFIG_ADDRESS, Self::address(df, offset));
            outl(CONFIG_DATA, data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// Adds every virtio-blk PCI function. Returns false if there is no PCI host bridge.
pub fn discover(catalog: &mut Catalog) -> bool {
    let host = DeviceFunction { bus: 0, device: 0, function: 0 };
    if PortCam.read_word(host, 0) & 0xffff == 0xffff {
        return false;
    }
    let mut root = PciRoot::new(PortCam);
    let mut buses: heapless::Vec<u8, 32> = heapless::Vec::new();
    let _ = buses.push(0);
    let mut scanned = 0;
    while let Some(&bus) = buses.get(scanned) {
        scanned += 1;
        let found: heapless::Vec<_, 64> = root.enumerate_bus(bus).collect();
        for (df, info) in found {
            if info.header_type == HeaderType::PciPciBridge {
                // Secondary bus number: byte 1 of the dword at 0x18.
                let secondary = (PortCam.read_word(df, 0x18) >> 8) as u8;
                if secondary != 0 && !buses.contains(&secondary) {
                    let _ = buses.push(secondary);
                }
                continue;
            }
            if virtio_device_type(&info) != Some(DeviceType::Block) {
                continue;
            }
            let location = Location::Pci(df.bus, df.device, df.function);
            if let Some(addr) = unmapped_bar(&mut root, df) {
                println!("strata: virtio-blk at {:?}: BAR at {:#x} is above the 4 GiB identity map; skipped", location, addr);
                continue;
            }
            root.set_command(df, Command::IO_SPACE | Command::MEMORY_SPACE | Command::BUS_MASTER);
            match PciTransport::new::<KernelHal, _>(&mut root, df) {
                Ok(t) => catalog.add(t.into(), location),
                Err(e) => println!("strata: virtio-blk at {:?}: {:?}", location, e),
            }
        }
    }
    true
}

/// The first memory BAR that the boot identity map does not cover.
fn unmapped_bar(root: &mut PciRoot<PortCam>, df: DeviceFunction) -> Option<u64> {
    let bars = root.bars(df).ok()?;
    bars.iter().flatten().find_map(|bar| match bar {
        BarInfo::Memory { address, size, .. } if !hal::is_mapped(*address, *size) => Some(*address),
        _ => None,
    })
}
