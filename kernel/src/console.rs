//! The human console on COM1, shared by `print!`/`println!`.

use core::fmt::Write;
use spin::Mutex;
use strata_boot::arch::serial::{Uart, COM1};

static CONSOLE: Mutex<Option<Uart>> = Mutex::new(None);

/// Programs COM1. Call once, first thing.
pub fn init() {
    // SAFETY: COM1 is the console on every QEMU x86 machine and nothing else drives it.
    *CONSOLE.lock() = Some(unsafe { Uart::init(COM1) });
}

/// Writes formatted text to the console (dropped before [`init`]).
pub fn write_fmt(args: core::fmt::Arguments) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        let _ = uart.write_fmt(args);
    }
}

/// Breaks the console lock so a panic raised while printing can still print.
pub fn force_unlock() {
    if CONSOLE.is_locked() {
        // SAFETY: single CPU, no interrupts: the holder is the code that panicked, which never
        // runs again.
        unsafe { CONSOLE.force_unlock() };
    }
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
