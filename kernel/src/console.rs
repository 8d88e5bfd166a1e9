//! The human console (the board's: COM1 on x86), shared by `print!`/`println!`.

use core::fmt::Write;
use spin::Mutex;
use strata_boot::console::Console;

static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);

/// Programs the console. Call once, first thing.
pub fn init() {
    // SAFETY: called once; the console device is driven only through CONSOLE.
    *CONSOLE.lock() = Some(unsafe { Console::init() });
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
