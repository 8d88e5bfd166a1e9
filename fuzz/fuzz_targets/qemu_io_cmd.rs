//! qemu-io command parsing on arbitrary text: never panics; errors print.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_block::cmd;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else { return };
    match cmd::parse(text) {
        Ok(c) => {
            let _ = c.name();
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = e.usage_after();
        }
    }
    let _ = cmd::parse_words(text.split(','));
});
