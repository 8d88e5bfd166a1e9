//! The trace sink on x86: QEMU's debugcon (I/O port 0xe9, `-device isa-debugcon,iobase=0xe9`),
//! written with one `rep outsb` per buffer: under KVM a string I/O instruction exits to QEMU
//! once per batch instead of once per byte. Without the device the bytes are dropped.

use crate::common::TraceChannel;

use super::port;
use super::serial::Uart;

/// QEMU's debugcon port as the runner configures it.
pub const DEBUGCON_PORT: u16 = 0xe9;

/// The second 16550 (COM2), one of the channels `logbench` compares.
const COM2: u16 = 0x2f8;

/// Writes trace bytes to the sink.
pub fn write(bytes: &[u8]) {
    // SAFETY: port 0xe9 is the debugcon the runner attaches for trace output; without it the
    // bytes go to an unassigned port and are dropped by QEMU.
    unsafe { port::outsb(DEBUGCON_PORT, bytes) };
}

/// The channels `logbench` times: COM2 (status poll and data write per byte), debugcon with one
/// `out` per byte, and debugcon with `rep outsb` per buffer (what [`write`] does).
pub fn channels() -> &'static [TraceChannel] {
    &[
        TraceChannel {
            name: "com2-uart",
            setup: com2_setup,
            write: com2_write,
        },
        TraceChannel {
            name: "debugcon-outb",
            setup: nothing,
            write: debugcon_outb,
        },
        TraceChannel {
            name: "debugcon-rep-outsb",
            setup: nothing,
            write,
        },
    ]
}

fn nothing() {}

fn com2_setup() {
    // SAFETY: nothing else in the kernel uses COM2; a missing UART drops the writes.
    let _ = unsafe { Uart::init(COM2) };
}

fn com2_write(bytes: &[u8]) {
    // SAFETY: as in `com2_setup`; `Uart::init` only programs registers, and a handle over an
    // already programmed COM2 writes the same way.
    let mut uart = unsafe { Uart::at(COM2) };
    uart.write_bytes(bytes);
}

fn debugcon_outb(bytes: &[u8]) {
    for &b in bytes {
        // SAFETY: as in `write`.
        unsafe { port::outb(DEBUGCON_PORT, b) };
    }
}
