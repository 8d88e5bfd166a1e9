//! The options grammar (QEMU `-blockdev` style) on arbitrary text: never panics, and every
//! value it hands out can be read every way a driver reads values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_block::options::Options;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else { return };
    for implied in [None, Some("file")] {
        let Ok(opts) = Options::<'_, 32>::parse(text, implied) else { continue };
        let mut buf = [0u8; 256];
        for (_, value) in opts.iter() {
            let _ = value.parse_bool();
            let _ = value.parse_u64();
            let _ = value.parse_size();
            let _ = value.unescape_into(&mut buf);
            let _ = value.eq_str("raw");
            let _ = value.parts().count();
        }
        let root = opts.root();
        let _ = root.check_only(&["driver", "file", "node-name", "read-only"]);
        if let Some(file) = root.child("file") {
            let _ = file.get("driver");
            let _ = file.child("file").map(|f| f.iter().count());
        }
    }
});
