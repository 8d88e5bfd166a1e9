//! Boot information on x86: the PVH `hvm_start_info` structure (Xen's
//! `arch-x86/hvm/start_info.h`), whose address the loader passes in `ebx`: where the loader put
//! the kernel command line, the memory map and the ACPI RSDP.

use crate::common::{BootError, MemoryRegion};
use core::ptr;

/// `hvm_start_info.magic`: "xEn3" with the top bit flipped.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// Longest command line we accept; the rest is cut off (QEMU's own limit is far smaller).
pub const MAX_CMDLINE: usize = 4096;

/// What the kernel needs from the PVH start info, copied out of guest memory once.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// Protocol version (0 has no memory map).
    pub version: u32,
    /// Physical address of the NUL-terminated command line, 0 if none.
    pub cmdline_paddr: u64,
    /// Physical address of the memory map (version >= 1), 0 if none.
    pub memmap_paddr: u64,
    /// Entries in the memory map.
    pub memmap_entries: u32,
}

impl BootInfo {
    /// Reads the start info at `paddr` (identity-mapped), checking its magic.
    ///
    /// # Safety
    /// `paddr` must be the value the entry code passed to `strata_main` (what the PVH loader
    /// passed in `ebx`), or any readable address.
    pub unsafe fn read(paddr: u64) -> Result<Self, BootError> {
        const NO_START_INFO: &str = "no PVH start info: boot with QEMU -kernel";
        if paddr == 0 {
            return Err(BootError { what: NO_START_INFO, found: 0 });
        }
        let base = paddr as *const u8;
        // SAFETY: the caller vouches that `paddr` is readable; the loader's struct is at least 56
        // bytes. Unaligned reads avoid assuming the loader's alignment.
        unsafe {
            let magic = ptr::read_unaligned(base.cast::<u32>());
            if magic != START_INFO_MAGIC {
                return Err(BootError { what: NO_START_INFO, found: u64::from(magic) });
            }
            let version = ptr::read_unaligned(base.add(4).cast::<u32>());
            let cmdline_paddr = ptr::read_unaligned(base.add(24).cast::<u64>());
            let (memmap_paddr, memmap_entries) = if version >= 1 {
                (
                    ptr::read_unaligned(base.add(40).cast::<u64>()),
                    ptr::read_unaligned(base.add(48).cast::<u32>()),
                )
            } else {
                (0, 0)
            };
            Ok(Self { version, cmdline_paddr, memmap_paddr, memmap_entries })
        }
    }

    /// The kernel command line (empty if absent), cut at [`MAX_CMDLINE`] bytes and at the first
    /// byte that is not valid UTF-8.
    pub fn cmdline(&self) -> &'static str {
        if self.cmdline_paddr == 0 {
            return "";
        }
        let base = self.cmdline_paddr as *const u8;
        let mut len = 0;
        // SAFETY: the loader placed a NUL-terminated string at `cmdline_paddr` in RAM that stays
        // untouched (below our image); we read at most MAX_CMDLINE bytes of it.
        let bytes = unsafe {
            while len < MAX_CMDLINE && *base.add(len) != 0 {
                len += 1;
            }
            core::slice::from_raw_parts(base, len)
        };
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// The loader's memory map.
    pub fn memory_map(&self) -> impl Iterator<Item = MemoryRegion> + '_ {
        let base = self.memmap_paddr as *const u8;
        let n = if self.memmap_paddr == 0 { 0 } else { self.memmap_entries.min(128) as usize };
        (0..n).map(move |i| {
            // SAFETY: the loader's map has `memmap_entries` 24-byte entries at `memmap_paddr`.
            unsafe {
                let e = base.add(i * 24);
                MemoryRegion {
                    addr: ptr::read_unaligned(e.cast::<u64>()),
                    size: ptr::read_unaligned(e.add(8).cast::<u64>()),
                    // E820 type 1 is RAM.
                    ram: ptr::read_unaligned(e.add(16).cast::<u32>()) == 1,
                }
            }
        })
    }

    /// Total RAM in the memory map.
    pub fn ram_bytes(&self) -> u64 {
        self.memory_map().filter(|r| r.ram).map(|r| r.size).sum()
    }
}
