//! The trace sink on riscv64: the semihosting console (as on aarch64; the board's one UART is
//! the human console), which the runner sends to a file with `-semihosting-config
//! enable=on,chardev=...`.

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
