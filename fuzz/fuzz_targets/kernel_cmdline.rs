//! The kernel's command line parser on arbitrary text: never panics; errors print. The parser
//! lives in the kernel binary (no_std, bare metal), so its source file is compiled in here as
//! it is: one source, built for both.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, missing_docs)]
#[path = "../../kernel/src/cmdline.rs"]
mod cmdline;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else { return };
    match cmdline::parse(text) {
        Ok(parsed) => {
            let _ = format!("{parsed:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
