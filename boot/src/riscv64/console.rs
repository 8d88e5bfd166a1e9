//! The human console on `virt`: the NS16550A UART at 0x1000_0000 (`-serial stdio`), byte
//! registers (`reg-shift` 0). The address is the board's (QEMU `hw/riscv/virt.c`, VIRT_UART0):
//! the console starts before the device tree is read.

/// `virt`'s UART0.
const UART_BASE: usize = 0x1000_0000;
/// Transmit holding register (write).
const THR: usize = 0;
/// Interrupt enable register.
const IER: usize = 1;
/// FIFO control register (write).
const FCR: usize = 2;
/// Line control register.
const LCR: usize = 3;
/// Line status register.
const LSR: usize = 5;
/// LSR: the transmit holding register is empty.
const LSR_THRE: u8 = 1 << 5;

/// The console.
pub struct Console(());

/// Writes `value` to UART register `reg`.
///
/// # Safety
/// Only the console may drive the UART.
unsafe fn write_reg(reg: usize, value: u8) {
    // SAFETY: a byte register of the UART, which the caller owns; paging is off, so the
    // physical address is the one we use.
    unsafe { core::ptr::write_volatile((UART_BASE + reg) as *mut u8, value) };
}

impl Console {
    /// Programs 8 data bits, no parity, FIFOs on, no interrupts.
    ///
    /// # Safety
    /// Call once; nothing else may drive the UART.
    pub unsafe fn init() -> Self {
        // SAFETY: the caller hands us the UART.
        unsafe {
            write_reg(IER, 0);
            write_reg(LCR, 0x03);
            write_reg(FCR, 0x07);
        }
        Self(())
    }

    /// Writes bytes as they are, waiting (bounded) for the transmitter before each.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let mut spins = 0u32;
            // SAFETY: reading LSR and writing THR of our UART (see `init`) only transmit data.
            unsafe {
                while core::ptr::read_volatile((UART_BASE + LSR) as *const u8) & LSR_THRE == 0
                    && spins < 100_000
                {
                    spins += 1;
                }
                write_reg(THR, b);
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
