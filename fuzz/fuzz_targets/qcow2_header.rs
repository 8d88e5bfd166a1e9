//! The qcow2 header parser on arbitrary bytes: never panics; what it accepts is self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_block::driver::qcow2::header::{Header, KNOWN_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let mut bytes = [0u8; KNOWN_HEADER_LEN];
    let present = data.len().min(KNOWN_HEADER_LEN);
    bytes[..present].copy_from_slice(&data[..present]);
    if let Ok(h) = Header::parse(&bytes, present) {
        assert!(h.version == 2 || h.version == 3);
        assert!(h.cluster_size().is_power_of_two());
        let _ = h.l1_entries_for(h.size);
        let _ = h.l2_entries();
    }
});
