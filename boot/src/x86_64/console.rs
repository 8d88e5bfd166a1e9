//! The human console on x86: the 16550 UART at COM1, on every QEMU x86 machine.

use super::serial::{Uart, COM1};

/// The console.
pub struct Console(Uart);

impl Console {
    /// Programs the console UART.
    ///
    /// # Safety
    /// Call once; nothing else may drive COM1.
    pub unsafe fn init() -> Self {
        // SAFETY: the caller promises COM1 is ours alone.
        Self(unsafe { Uart::init(COM1) })
    }

    /// Writes bytes as they are.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.0.write_bytes(bytes);
    }
}

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.write_str(s)
    }
}
