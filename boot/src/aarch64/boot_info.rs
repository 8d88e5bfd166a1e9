//! Boot information on `virt`: the device tree QEMU puts at the start of RAM (0x4000_0000) for
//! an ELF `-kernel`: command line (`/chosen` `bootargs`), memory (`/memory` `reg`) and the
//! devices the board module looks up.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::entry::MAPPED_END;
use crate::common::{BootError, MemoryRegion};
use crate::fdt::{self, Fdt};

/// Where `virt` places the device tree for an ELF kernel linked above it.
pub const DTB_AT_RAM_START: u64 = 0x4000_0000;

/// RAM starts at 1 GiB on `virt`; a device tree must lie in the mapped RAM.
const RAM_START: u64 = 0x4000_0000;

/// Most memory regions reported.
const MAX_REGIONS: usize = 8;

/// Where the device tree [`BootInfo::read`] accepted lies (0: none yet), for board code
/// that runs without a `BootInfo` in hand ([`super::board::pci`]).
static ACCEPTED_AT: AtomicU64 = AtomicU64::new(0);
static ACCEPTED_LEN: AtomicUsize = AtomicUsize::new(0);

/// The device tree [`BootInfo::read`] accepted, if it has run.
pub(crate) fn accepted_device_tree() -> Option<Fdt<'static>> {
    let at = ACCEPTED_AT.load(Ordering::Relaxed);
    let len = ACCEPTED_LEN.load(Ordering::Relaxed);
    if at == 0 {
        return None;
    }
    // SAFETY: `read` stored these only after checking that `len` bytes from `at` lie in mapped
    // RAM and parse as a device tree, which its caller promised stays untouched.
    let blob: &'static [u8] = unsafe { core::slice::from_raw_parts(at as *const u8, len) };
    Fdt::parse(blob).ok()
}

/// What the kernel needs from the device tree.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    fdt: Fdt<'static>,
}

impl BootInfo {
    /// Finds the device tree at `handle` (x0 at entry, if a loader set it) or at the start of
    /// RAM, and checks its header.
    ///
    /// # Safety
    /// `handle` must be the value the entry code passed to `strata_main`; the device tree's
    /// memory must stay untouched for the kernel's life (it lies below the kernel image).
    pub unsafe fn read(handle: u64) -> Result<Self, BootError> {
        let mut last = BootError {
            what: "no device tree at the start of RAM: boot with QEMU -kernel",
            found: 0,
        };
        for at in [handle, DTB_AT_RAM_START] {
            if at < RAM_START
                || !at.is_multiple_of(8)
                || at.checked_add(8).is_none_or(|end| end > MAPPED_END)
            {
                continue;
            }
            // SAFETY: `at` is 8-byte aligned in mapped RAM.
            let header = unsafe { core::ptr::read(at as *const [u8; 8]) };
            let Some(size) = fdt::total_size(&header) else {
                last.found = u64::from(u32::from_be_bytes([
                    header[0], header[1], header[2], header[3],
                ]));
                continue;
            };
            if size > fdt::MAX_SIZE || at + size as u64 > MAPPED_END {
                last = BootError {
                    what: "device tree larger than the mapped RAM allows",
                    found: size as u64,
                };
                continue;
            }
            // SAFETY: `size` bytes from `at` lie in mapped RAM, and the caller promises nobody
            // writes them while the kernel runs.
            let blob: &'static [u8] = unsafe { core::slice::from_raw_parts(at as *const u8, size) };
            match Fdt::parse(blob) {
                Ok(fdt) => {
                    ACCEPTED_AT.store(at, Ordering::Relaxed);
                    ACCEPTED_LEN.store(size, Ordering::Relaxed);
                    return Ok(Self { fdt });
                }
                Err(_) => {
                    last = BootError {
                        what: "malformed device tree",
                        found: at,
                    }
                }
            }
        }
        Err(last)
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
