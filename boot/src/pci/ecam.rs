//! ECAM (PCIe's enhanced configuration access mechanism): each function's 4 KiB of
//! configuration space memory-mapped at `base + (bus - first bus) << 20 | device << 15 |
//! function << 12` (PCI Firmware 3.2, 4.1; the device tree's `pci-host-ecam-generic` `reg`).

use super::ConfigSpace;

/// Configuration access through a memory-mapped ECAM window covering buses
/// `bus_start..=bus_end`; buses outside it read as all ones and ignore writes.
#[derive(Clone, Copy, Debug)]
pub struct Ecam {
    base: u64,
    bus_start: u8,
    bus_end: u8,
}

impl Ecam {
    /// An ECAM window at `base` for buses `bus_start..=bus_end` (1 MiB each).
    ///
    /// # Safety
    /// `base` must be the identity-mapped (Device memory) address of an ECAM window covering
    /// those buses, and nothing else may write it while this value is used.
    pub const unsafe fn new(base: u64, bus_start: u8, bus_end: u8) -> Self {
        Self {
            base,
            bus_start,
            bus_end,
        }
    }

    /// The first bus.
    pub fn bus_start(&self) -> u8 {
        self.bus_start
    }

    /// The address of the word at `offset` (rounded down to 4), if `bus` is in the window and
    /// `offset` inside the function's 4 KiB.
    pub fn address(&self, bus: u8, device: u8, function: u8, offset: u16) -> Option<u64> {
        if bus < self.bus_start
            || bus > self.bus_end
            || device > 31
            || function > 7
            || offset > 0xfff
        {
            return None;
        }
        let at = (u64::from(bus - self.bus_start) << 20)
            | (u64::from(device) << 15)
            | (u64::from(function) << 12)
            | u64::from(offset & 0xffc);
        self.base.checked_add(at)
    }
}

impl ConfigSpace for Ecam {
    fn read(&self, bus: u8, device: u8, function: u8, offset: u16) -> u32 {
        match self.address(bus, device, function, offset) {
            // SAFETY: `new`'s contract: the address lies in the mapped ECAM window and is
            // 4-byte aligned (offset rounded down, base from a 1 MiB-aligned `reg`).
            Some(at) => unsafe { core::ptr::read_volatile(at as *const u32) },
            None => u32::MAX,
        }
    }

    fn write(&self, bus: u8, device: u8, function: u8, offset: u16, value: u32) {
        if let Some(at) = self.address(bus, device, function, offset) {
            // SAFETY: as in `read`.
            unsafe { core::ptr::write_volatile(at as *mut u32, value) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_ecam_layout_and_stay_in_the_window() {
        // SAFETY: only `address` is called; nothing is read or written.
        let ecam = unsafe { Ecam::new(0x40_1000_0000, 0, 255) };
        assert_eq!(ecam.address(0, 0, 0, 0), Some(0x40_1000_0000));
        assert_eq!(
            ecam.address(1, 2, 3, 0x13),
            Some(0x40_1000_0000 + (1 << 20) + (2 << 15) + (3 << 12) + 0x10)
        );
        assert_eq!(ecam.address(0, 32, 0, 0), None);
        assert_eq!(ecam.address(0, 0, 8, 0), None);
        assert_eq!(ecam.address(0, 0, 0, 0x1000), None);
        // SAFETY: as above.
        let low = unsafe { Ecam::new(0x3f00_0000, 2, 15) };
        assert_eq!(low.address(1, 0, 0, 0), None);
        assert_eq!(low.address(16, 0, 0, 0), None);
        assert_eq!(low.address(2, 0, 0, 0), Some(0x3f00_0000));
        assert_eq!(
            low.read(16, 0, 0, 0),
            u32::MAX,
            "outside the window reads all ones"
        );
        low.write(16, 0, 0, 0, 0); // ignored, no access
                                   // SAFETY: as above.
        let top = unsafe { Ecam::new(u64::MAX - 0xfff, 0, 255) };
        assert_eq!(top.address(1, 0, 0, 0), None, "no wrap-around");
    }
}
