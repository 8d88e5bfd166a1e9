//! The embedder's own leaf device: a RAM disk over a byte slice that finishes every request
//! as it is submitted. This is the part of the glue a board replaces with its own driver
//! (an SD card, NOR flash, a virtio queue): `info`, `submit` and `poll`.

#![allow(unsafe_code)] // reason: `BlockDevice::submit` hands over raw segments; see SAFETY below

use core::cell::RefCell;
use core::task::{Context, Poll};

use strata_block::dev::{BlockDevice, DeviceError, DeviceInfo, DeviceOp, DeviceRequest, SubmitError, Ticket};

/// A disk over `memory`, 512-byte blocks, its capacity `memory.len()` rounded down to them.
pub struct SliceDisk<'m> {
    info: DeviceInfo,
    memory: RefCell<&'m mut [u8]>,
}

impl<'m> SliceDisk<'m> {
    /// A disk over `memory`; `serial` names it in the device catalog.
    pub fn new(memory: &'m mut [u8], serial: &str) -> Self {
        let capacity = memory.len() as u64 / 512 * 512;
        Self { info: DeviceInfo::new(capacity, 512).with_serial(serial), memory: RefCell::new(memory) }
    }
}

impl BlockDevice for SliceDisk<'_> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        self.info.check(req).map_err(SubmitError::Invalid)?; // alignment, range, segments
        let mut memory = self.memory.borrow_mut();
        let mut at = usize::try_from(req.offset).map_err(|_| SubmitError::Invalid(DeviceError::Invalid))?;
        for seg in req.segments {
            let disk = memory.get_mut(at..at + seg.len).ok_or(SubmitError::Invalid(DeviceError::Invalid))?;
            // SAFETY: the caller keeps each segment valid (and, for reads, unaliased) until the
            // ticket completes (BlockDevice::submit's contract); we are done with it right here.
            let buf = unsafe { core::slice::from_raw_parts_mut(seg.ptr, seg.len) };
            match req.op {
                DeviceOp::Read => buf.copy_from_slice(disk),
                _ => disk.copy_from_slice(buf), // Write; flush has no segments
            }
            at += seg.len;
        }
        Ok(Ticket(0))
    }

    fn poll(&self, _ticket: Ticket, _cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        Poll::Ready(Ok(())) // everything finished in `submit`
    }
}
