//! The trace sink on aarch64: the semihosting console, which the runner sends to a file with
//! `-semihosting-config enable=on,chardev=...` (runs of bytes split as
//! [`crate::semihosting_trace`] describes).

use super::semihosting;
use crate::common::TraceChannel;

/// Writes trace bytes to the sink.
pub fn write(bytes: &[u8]) {
    crate::semihosting_trace::write(
        bytes,
        // SAFETY: `semihosting_trace::write` hands over runs that end with their NUL.
        |run| unsafe { semihosting::write_nul_terminated(run) },
        semihosting::write_char,
    );
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
