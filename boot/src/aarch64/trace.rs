//! The trace sink on aarch64: the semihosting console, which the runner sends to a file with
//! `-semihosting-config enable=on,chardev=...`.
//!
//! The console's calls take NUL-terminated text (SYS_WRITE0) or one byte (SYS_WRITEC). defmt's
//! rzcobs frames hold no zero byte except the one ending each frame, so each run of non-zero
//! bytes goes out with one SYS_WRITE0 and each zero with one SYS_WRITEC: a trap per run of up to
//! [`RUN`] bytes, not per byte.

use super::semihosting;
use crate::common::TraceChannel;

/// Longest run written by one call.
const RUN: usize = 256;

/// Writes trace bytes to the sink.
pub fn write(bytes: &[u8]) {
    let mut run = [0u8; RUN + 1];
    let mut len = 0;
    let flush = |run: &mut [u8; RUN + 1], len: &mut usize| {
        if *len > 0 {
            run[*len] = 0;
            // SAFETY: `run[len]` is the NUL just written.
            unsafe { semihosting::write_nul_terminated(&run[..=*len]) };
            *len = 0;
        }
    };
    for &b in bytes {
        if b == 0 {
            flush(&mut run, &mut len);
            semihosting::write_char(0);
        } else {
            run[len] = b;
            len += 1;
            if len == RUN {
                flush(&mut run, &mut len);
            }
        }
    }
    flush(&mut run, &mut len);
}

/// The channels `logbench` times: only the semihosting console here.
pub fn channels() -> &'static [TraceChannel] {
    &[TraceChannel {
        name: "semihosting-console",
        setup: nothing,
        write,
    }]
}

fn nothing() {}
