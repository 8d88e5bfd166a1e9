//! defmt logs on QEMU's debugcon (I/O port 0xe9), decoded on the host by `qemu-runner`.
//!
//! Frames are rzcobs-encoded by defmt, gathered in a small buffer and written with one
//! `rep outsb` per buffer: under KVM a string I/O instruction exits to QEMU once per batch instead
//! of once per byte (a second 16550 UART would cost two exits per byte: status poll and data).
//! Timestamps are microseconds since kernel entry.
//!
//! Single CPU and no interrupts: the logger needs no lock, only the promise that it is not
//! re-entered.

use strata_boot::arch::{port, tsc};

/// QEMU's debugcon port as the runner configures it (`-device isa-debugcon,iobase=0xe9`).
pub const DEBUGCON_PORT: u16 = 0xe9;

struct Channel {
    encoder: defmt::Encoder,
    buf: [u8; 256],
    len: usize,
}

/// Appends encoded bytes to the staging buffer, writing it out whenever it fills.
fn stage(buf: &mut [u8; 256], len: &mut usize, piece: &[u8]) {
    for &b in piece {
        if *len == buf.len() {
            drain(buf, len);
        }
        buf[*len] = b;
        *len += 1;
    }
}

fn drain(buf: &[u8; 256], len: &mut usize) {
    // SAFETY: port 0xe9 is the debugcon the runner attaches for this channel; without it the
    // bytes are dropped by QEMU.
    unsafe { port::outsb(DEBUGCON_PORT, &buf[..*len]) };
    *len = 0;
}

static mut CHANNEL: Channel = Channel { encoder: defmt::Encoder::new(), buf: [0; 256], len: 0 };

/// The channel, owned between `acquire` and `release`.
///
/// # Safety
/// Only call between a successful `acquire` and its `release`.
unsafe fn channel() -> &'static mut Channel {
    // SAFETY: the caller holds the logger, so this is the only reference.
    unsafe { &mut *core::ptr::addr_of_mut!(CHANNEL) }
}

#[defmt::global_logger]
struct DebugconLogger;

// SAFETY: one CPU and no interrupts, so nothing else can use `CHANNEL` between acquire and release. Re-entry (a log call inside a log call) cannot happen: the
// panic handler does not log through defmt.
unsafe impl defmt::Logger for DebugconLogger {
    fn acquire() {
        // SAFETY: `acquire` starts the logger's ownership of CHANNEL.
        let Channel { encoder, buf, len } = unsafe { channel() };
        encoder.start_frame(|piece| stage(buf, len, piece));
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: defmt calls `release` only after `acquire`.
        let Channel { encoder, buf, len } = unsafe { channel() };
        encoder.end_frame(|piece| stage(buf, len, piece));
        drain(buf, len);
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: defmt calls `write` only between `acquire` and `release`.
        let Channel { encoder, buf, len } = unsafe { channel() };
        encoder.write(bytes, |piece| stage(buf, len, piece));
    }
}

defmt::timestamp!("{=u64:us}", tsc::ns_since_boot() / 1000);
