//! virtio-pci discovery through the board's configuration access (`strata_boot::board::pci`;
//! x86 pc and q35: ports 0xcf8/0xcfc, BARs from the firmware; aarch64 and riscv64 `virt`:
//! ECAM, BARs from the board's allocator).
//!
//! The first 256 bytes of each function's configuration space hold everything virtio needs.
//! Buses behind bridges are followed through their secondary bus numbers (firmware has numbered
//! them), without recursion.

use strata_boot::board::{self, PciConfig};
use virtio_drivers::transport::{
    pci::{
        bus::{BarInfo, Command, ConfigurationAccess, DeviceFunction, HeaderType, PciRoot},
        virtio_device_type, PciTransport,
    },
    DeviceType,
};

use super::{Catalog, Location};
use crate::{hal::KernelHal, println};

/// The board's configuration access as virtio-drivers wants it.
struct BoardCam(PciConfig);

impl ConfigurationAccess for BoardCam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        self.0.read(df.bus, df.device, df.function, u16::from(offset))
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        self.0.write(df.bus, df.device, df.function, u16::from(offset), data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        BoardCam(self.0)
    }
}

/// Adds every virtio-blk PCI function reachable through `config`.
pub fn discover(catalog: &mut Catalog, config: PciConfig) {
    let cam = BoardCam(config);
    let mut root = PciRoot::new(BoardCam(config));
    let mut buses: heapless::Vec<u8, 32> = heapless::Vec::new();
    let _ = buses.push(0);
    let mut scanned = 0;
    while let Some(&bus) = buses.get(scanned) {
        scanned += 1;
        let found: heapless::Vec<_, 64> = root.enumerate_bus(bus).collect();
        for (df, info) in found {
            if info.header_type == HeaderType::PciPciBridge {
                // Secondary bus number: byte 1 of the dword at 0x18.
                let secondary = (cam.read_word(df, 0x18) >> 8) as u8;
                if secondary != 0 && !buses.contains(&secondary) {
                    let _ = buses.push(secondary);
                }
                continue;
            }
            if virtio_device_type(&info) != Some(DeviceType::Block) {
                continue;
            }
            let location = Location::Pci(df.bus, df.device, df.function);
            match unusable_bar(&mut root, df) {
                Some(0) => {
                    println!("strata: virtio-blk at {:?}: a memory BAR was never assigned (no room in the host bridge's windows); skipped", location);
                    continue;
                }
                Some(addr) => {
                    println!("strata: virtio-blk at {:?}: BAR at {:#x} is outside the boot identity map; skipped", location, addr);
                    continue;
                }
                None => {}
            }
            root.set_command(df, Command::IO_SPACE | Command::MEMORY_SPACE | Command::BUS_MASTER);
            match PciTransport::new::<KernelHal, _>(&mut root, df) {
                Ok(t) => catalog.add(t.into(), location),
                Err(e) => println!("strata: virtio-blk at {:?}: {:?}", location, e),
            }
        }
    }
}

/// The address of the first memory BAR the kernel cannot use: unassigned (0: firmware or the
/// board's allocator found no room for it) or outside the boot identity map.
fn unusable_bar(root: &mut PciRoot<BoardCam>, df: DeviceFunction) -> Option<u64> {
    let bars = root.bars(df).ok()?;
    bars.iter().flatten().find_map(|bar| match bar {
        BarInfo::Memory { address, size, .. } if *address == 0 || !board::is_mapped(*address, *size) => Some(*address),
        _ => None,
    })
}
