//! defmt logs on the board's trace sink (`strata_boot::trace`; x86: QEMU's debugcon, I/O port
//! 0xe9), decoded on the host by `qemu-runner`.
//!
//! Frames are rzcobs-encoded by defmt and gathered in a small buffer, written to the sink once
//! per buffer: under KVM the x86 sink exits to QEMU once per batch instead of once per byte.
//! Timestamps are microseconds since kernel entry.
//!
//! Single CPU and no interrupts: the logger needs no lock, only the promise that it is not
//! re-entered.

use strata_boot::{clock, trace};

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
    trace::write(&buf[..*len]);
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
struct TraceLogger;

// SAFETY: one CPU and no interrupts, so nothing else can use `CHANNEL` between acquire and release. Re-entry (a log call inside a log call) cannot happen: the
// panic handler does not log through defmt.
unsafe impl defmt::Logger for TraceLogger {
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

defmt::timestamp!("{=u64:us}", clock::ns_since_boot() / 1000);
