//! The zstd decoder (`strata_block::codec::zstd`) on arbitrary bytes: the first 3 bytes give
//! the output size (at most 256 KiB), the rest is the compressed stream. Never panics, never
//! loops; what it accepts fills the output exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_block::codec::zstd::{decode_exact, Decoder};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let len = (usize::from(data[0]) | usize::from(data[1]) << 8 | usize::from(data[2]) << 16) & ((1 << 18) - 1);
    let mut out = vec![0u8; len];
    let mut decoder = Box::new(Decoder::new());
    let _ = decode_exact(&mut decoder, &data[3..], &mut out);
});
