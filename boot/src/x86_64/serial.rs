//! A 16550 UART on an I/O port (COM1 is the console, COM2 an optional second channel).

use super::port::{inb, outb};

/// COM1, the console on every QEMU x86 machine.
pub const COM1: u16 = 0x3f8;

/// A polled 16550 UART.
pub struct Uart {
    base: u16,
}

impl Uart {
    /// Programs the UART at `base` for 115200 8N1 with FIFOs on and interrupts off.
    ///
    /// # Safety
    /// `base` must be a 16550's I/O base that nothing else drives.
    pub unsafe fn init(base: u16) -> Self {
        // SAFETY: the caller gives us the UART at `base`.
        unsafe {
            outb(base + 1, 0x00); // no interrupts
            outb(base + 3, 0x80); // DLAB on
            outb(base, 0x01); // divisor 1: 115200 baud
            outb(base + 1, 0x00);
            outb(base + 3, 0x03); // 8N1, DLAB off
            outb(base + 2, 0xc7); // FIFO on, cleared, 14-byte threshold
            outb(base + 4, 0x03); // DTR | RTS
        }
        Self { base }
    }

    /// A handle on the UART at `base` as it is already programmed.
    ///
    /// # Safety
    /// As for [`Uart::init`].
    pub unsafe fn at(base: u16) -> Self {
        Self { base }
    }

    /// Writes bytes, waiting for room in the transmitter before each one.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            // SAFETY: `self.base` is our UART (see `init`); reading LSR and writing THR only
            // transmit data.
            unsafe {
                let mut spins = 0u32;
                // Bounded: a missing UART reads 0xff (THRE set); a stuck one is given up on.
                while inb(self.base + 5) & 0x20 == 0 && spins < 100_000 {
                    spins += 1;
                }
                outb(self.base, b);
            }
        }
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        crate::common::write_crlf(s, |b| self.write_bytes(b));
        Ok(())
    }
}
