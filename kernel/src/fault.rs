//! The last words: panics and CPU exceptions print where they happened and end the machine with
//! [`exit_code::PANIC`].

use strata_boot::arch::idt::{cr2, ExceptionFrame};

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

/// Called by the exception stubs in `strata_boot::arch::idt`.
#[no_mangle]
extern "C" fn strata_exception(frame: &ExceptionFrame) -> ! {
    console::force_unlock();
    println!(
        "strata: CPU EXCEPTION {} ({}) at rip {:#x}, error code {:#x}, rsp {:#x}",
        frame.vector,
        frame.name(),
        frame.rip,
        frame.error_code,
        frame.rsp
    );
    if frame.vector == 14 {
        println!("strata: page fault address {:#x}", cr2());
    }
    report::error("panic", format_args!("CPU exception {} ({}) at rip {:#x}", frame.vector, frame.name(), frame.rip));
    exit_code::exit(exit_code::PANIC)
}
