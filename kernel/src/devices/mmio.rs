//! virtio-mmio discovery on QEMU's microvm: 24 transports of 512 bytes from 0xfeb00000.

use core::ptr::NonNull;
use virtio_drivers::transport::{
    mmio::{MmioTransport, VirtIOHeader},
    DeviceType, Transport,
};

use super::{Catalog, Location};
use crate::hal;

/// microvm's virtio-mmio window (QEMU `hw/i386/microvm.c`: VIRTIO_MMIO_BASE, 24 slots).
const MMIO_BASE: u64 = 0xfeb0_0000;
const MMIO_SLOT_SIZE: u64 = 0x200;
const MMIO_SLOTS: u64 = 24;

/// virtio-mmio magic value "virt".
const MAGIC: u32 = 0x7472_6976;

/// Adds every block device in the microvm virtio-mmio window.
pub fn discover(catalog: &mut Catalog) {
    for slot in 0..MMIO_SLOTS {
        let base = MMIO_BASE + slot * MMIO_SLOT_SIZE;
        if !hal::is_mapped(base, MMIO_SLOT_SIZE) {
            continue;
        }
        // SAFETY: the window is identity-mapped device memory on microvm; reading the magic
        // register of an empty slot has no side effects.
        let magic = unsafe { core::ptr::read_volatile(base as *const u32) };
        if magic != MAGIC {
            continue;
        }
        let Some(header) = NonNull::new(base as *mut VirtIOHeader) else { continue };
        // SAFETY: `base` is a virtio-mmio register window (magic checked) of MMIO_SLOT_SIZE
        // bytes that nothing else in the kernel maps; it lives for the whole run.
        let transport = match unsafe { MmioTransport::new(header, MMIO_SLOT_SIZE as usize) } {
            Ok(t) => t,
            Err(_) => continue, // device id 0: an empty slot
        };
        if transport.device_type() == DeviceType::Block {
            catalog.add(transport.into(), Location::Mmio(base));
        }
    }
}
