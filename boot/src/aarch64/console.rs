//! The human console on `virt`: the PL011 UART at 0x0900_0000 (`-serial stdio`).

/// `virt`'s UART0 (QEMU `hw/arm/virt.c`, VIRT_UART0).
const PL011_BASE: usize = 0x0900_0000;
const DR: usize = 0x00;
const FR: usize = 0x18;
const CR: usize = 0x30;
/// FR: transmit FIFO full.
const FR_TXFF: u32 = 1 << 5;

/// The console.
pub struct Console(());

impl Console {
    /// Enables the UART's transmitter.
    ///
    /// # Safety
    /// Call once; nothing else may drive the PL011.
    pub unsafe fn init() -> Self {
        // SAFETY: the PL011's control register, in the Device-mapped first GiB; UARTEN | TXE |
        // RXE. QEMU's model transmits regardless; real hardware needs it.
        unsafe { core::ptr::write_volatile((PL011_BASE + CR) as *mut u32, 0x301) };
        Self(())
    }

    /// Writes bytes as they are, waiting for room in the FIFO before each (bounded).
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let mut spins = 0u32;
            // SAFETY: reading FR and writing DR of our PL011 (see `init`) only transmit data.
            unsafe {
                while core::ptr::read_volatile((PL011_BASE + FR) as *const u32) & FR_TXFF != 0
                    && spins < 100_000
                {
                    spins += 1;
                }
                core::ptr::write_volatile((PL011_BASE + DR) as *mut u32, u32::from(b));
            }
        }
    }
}

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        crate::common::write_crlf(s, |b| self.write_bytes(b));
        Ok(())
    }
}
