//! virtio-mmio discovery in the windows the board describes (`strata_boot::board::virtio_mmio`:
//! microvm's 24 slots from 0xfeb00000, or the device tree's `virtio,mmio` nodes).

use core::ptr::NonNull;
use strata_boot::board;
use strata_boot::common::MmioWindows;
use virtio_drivers::transport::{
    mmio::{MmioTransport, VirtIOHeader},
    DeviceType, Transport,
};

use super::{Catalog, Location};

/// virtio-mmio magic value "virt".
const MAGIC: u32 = 0x7472_6976;

/// Smallest window that holds the virtio-mmio registers we touch.
const MIN_WINDOW: u64 = 0x100;

/// Adds every block device in `windows`.
pub fn discover(catalog: &mut Catalog, windows: &MmioWindows) {
    for (base, size) in windows.iter() {
        if size < MIN_WINDOW || !board::is_mapped(base, size) || !base.is_multiple_of(4) {
            continue;
        }
        // SAFETY: the board says a virtio-mmio window of `size` bytes is mapped as device memory
        // at `base`; reading the magic register of an empty slot has no side effects.
        let magic = unsafe { core::ptr::read_volatile(base as *const u32) };
        if magic != MAGIC {
            continue;
        }
        let Some(header) = NonNull::new(base as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: `base` is a virtio-mmio register window (magic checked) of `size` bytes that
        // nothing else in the kernel maps; it lives for the whole run.
        let transport = match unsafe { MmioTransport::new(header, size as usize) } {
            Ok(t) => t,
            Err(_) => continue, // device id 0: an empty slot
        };
        if transport.device_type() == DeviceType::Block {
            catalog.add(transport.into(), Location::Mmio(base));
        }
    }
}
