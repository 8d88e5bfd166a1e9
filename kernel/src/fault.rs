//! The last words: panics and CPU exceptions print where they happened and end the machine with
//! [`exit_code::PANIC`].

use strata_boot::traps::Frame;

use crate::{console, exit_code, println, report};

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    console::force_unlock();
    match info.location() {
        Some(l) => println!("strata: PANIC at {}:{}:{}: {}", l.file(), l.line(), l.column(), info.message()),
        None => println!("strata: PANIC: {}", info.message()),
    }
    report::error("panic", format_args!("{}", info.message()));
    exit_code::exit(exit_code::PANIC)
}

/// Called by the trap stubs in `strata_boot::traps`.
#[no_mangle]
extern "C" fn strata_exception(frame: &Frame) -> ! {
    console::force_unlock();
    println!("strata: CPU EXCEPTION {}", frame);
    report::error("panic", format_args!("CPU exception {}", frame));
    exit_code::exit(exit_code::PANIC)
}
