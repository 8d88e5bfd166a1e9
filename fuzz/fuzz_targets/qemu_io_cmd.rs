//! qemu-io command parsing on arbitrary text: never panics; errors print.
#![no_main]

use core::fmt::Write;

use libfuzzer_sys::fuzz_target;
use strata_block::cmd;

struct Sink;
impl Write for Sink {
    fn write_str(&mut self, _: &str) -> core::fmt::Result {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else { return };
    match cmd::parse(text) {
        Ok(c) => {
            let _ = c.name();
        }
        Err(e) => {
            let _ = write!(Sink, "{e}");
            let _ = e.usage_after();
        }
    }
    let _ = cmd::parse_words(text.split(','));
});
