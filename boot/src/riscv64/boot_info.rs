//! Boot information on `virt`: the device tree whose address OpenSBI passes in a1 (QEMU puts it
//! near the top of RAM): command line (`/chosen` `bootargs`), memory (`/memory` `reg`), the
//! timebase the clock reads, the test finisher the exit uses, and the devices the board module
//! looks up.

use super::entry::PHYS_END;
use crate::common::{BootError, MemoryRegion};
use crate::fdt::{self, Fdt};
use core::sync::atomic::{AtomicU64, Ordering};

/// RAM starts at 2 GiB on `virt`; a device tree outside RAM is not believed.
const RAM_START: u64 = 0x8000_0000;

/// Most memory regions reported.
const MAX_REGIONS: usize = 8;

/// The accepted device tree's address and size, for [`saved`] (0: none yet).
static SAVED_AT: AtomicU64 = AtomicU64::new(0);
static SAVED_SIZE: AtomicU64 = AtomicU64::new(0);

/// What the kernel needs from the device tree.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    fdt: Fdt<'static>,
}

/// The device tree [`BootInfo::read`] accepted, if any (for the clock's timebase and the
/// exit's test finisher).
pub(super) fn saved() -> Option<Fdt<'static>> {
    let at = SAVED_AT.load(Ordering::Relaxed);
    let size = SAVED_SIZE.load(Ordering::Relaxed) as usize;
    if at == 0 {
        return None;
    }
    // SAFETY: `read` checked and parsed these bytes, and its caller promised they stay
    // untouched for the kernel's life.
    let blob: &'static [u8] = unsafe { core::slice::from_raw_parts(at as *const u8, size) };
    Fdt::parse(blob).ok()
}

impl BootInfo {
    /// Checks the device tree at `handle` (a1 at entry) and remembers it for the clock and the
    /// exit.
    ///
    /// # Safety
    /// `handle` must be the value the entry code passed to `strata_main`; the device tree's
    /// memory must stay untouched for the kernel's life (the kernel never allocates from RAM
    /// outside its image).
    pub unsafe fn read(handle: u64) -> Result<Self, BootError> {
        let at = handle;
        if at < RAM_START || !at.is_multiple_of(8) || at.checked_add(8).is_none_or(|e| e > PHYS_END)
        {
            return Err(BootError {
                what: "no device tree address in a1: boot with QEMU -kernel under OpenSBI",
                found: at,
            });
        }
        // SAFETY: `at` is 8-byte aligned in RAM, where the firmware said the blob is.
        let header = unsafe { core::ptr::read(at as *const [u8; 8]) };
        let Some(size) = fdt::total_size(&header) else {
            return Err(BootError {
                what: "no device tree magic at the address in a1",
                found: u64::from(u32::from_be_bytes([
                    header[0], header[1], header[2], header[3],
                ])),
            });
        };
        if size > fdt::MAX_SIZE {
            return Err(BootError {
                what: "device tree too large",
                found: size as u64,
            });
        }
        // SAFETY: the blob's `size` bytes from `at` lie in RAM (at most 4 MiB past an address in
        // RAM, checked against the memory nodes below), and the caller promises nobody writes them.
        let blob: &'static [u8] = unsafe { core::slice::from_raw_parts(at as *const u8, size) };
        let fdt = Fdt::parse(blob).map_err(|_| BootError {
            what: "malformed device tree",
            found: at,
        })?;
        let info = Self { fdt };
        let end = at + size as u64;
        if !info
            .memory_map()
            .any(|r| r.addr <= at && r.addr.checked_add(r.size).is_some_and(|e| end <= e))
        {
            return Err(BootError {
                what: "device tree outside the RAM it describes",
                found: at,
            });
        }
        SAVED_AT.store(at, Ordering::Relaxed);
        SAVED_SIZE.store(size as u64, Ordering::Relaxed);
        Ok(info)
    }

    /// The device tree.
    pub fn fdt(&self) -> &Fdt<'static> {
        &self.fdt
    }

    /// The kernel command line (`/chosen` `bootargs`; empty if absent).
    pub fn cmdline(&self) -> &'static str {
        self.fdt.bootargs()
    }

    /// RAM regions (`/memory` nodes' `reg`).
    pub fn memory_map(&self) -> impl Iterator<Item = MemoryRegion> + '_ {
        self.fdt.memory_regions(MAX_REGIONS)
    }

    /// Total RAM.
    pub fn ram_bytes(&self) -> u64 {
        self.memory_map().map(|r| r.size).sum()
    }
}
