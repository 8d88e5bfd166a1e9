//! A leaf device over anything that is `embedded-io` `Read + Write + Seek` (feature
//! `embedded-io`): a file of a host library, a flash driver with a byte interface, a buffer.
//! Requests run to completion in `submit` (the stream is synchronous), one at a time: a
//! second submit before the first is polled says [`SubmitError::Busy`]; `poll` reports.

#![allow(unsafe_code)] // reason: data moves through the raw segments of the BlockDevice contract

use core::cell::{Cell, RefCell};
use core::task::{Context, Poll};

use embedded_io::{Read, Seek, SeekFrom, Write};

use super::{BlockDevice, DeviceError, DeviceFeatures, DeviceInfo, DeviceOp, DeviceRequest, SubmitError, Ticket};

/// A device of a fixed capacity over `stream`.
pub struct StreamDevice<S> {
    info: DeviceInfo,
    stream: RefCell<S>,
    /// The result of the request submitted and not yet polled.
    done: Cell<Option<Result<(), DeviceError>>>,
}

impl<S: Read + Write + Seek> StreamDevice<S> {
    /// A read-write device of `capacity` bytes (rounded down to `block_size`) over `stream`.
    pub fn new(stream: S, capacity: u64, block_size: u32) -> Self {
        let bs = u64::from(block_size.max(1));
        let mut info = DeviceInfo::new(capacity / bs * bs, block_size.max(1));
        info.queue_depth = 1;
        info.features = DeviceFeatures::FLUSH;
        Self { info, stream: RefCell::new(stream), done: Cell::new(None) }
    }

    /// The same, refusing writes.
    pub fn read_only(stream: S, capacity: u64, block_size: u32) -> Self {
        let mut dev = Self::new(stream, capacity, block_size);
        dev.info.read_only = true;
        dev
    }

    /// The stream back.
    pub fn into_inner(self) -> S {
        self.stream.into_inner()
    }

    fn run(&self, req: &DeviceRequest<'_>) -> Result<(), DeviceError> {
        let mut s = self.stream.try_borrow_mut().map_err(|_| DeviceError::Io)?;
        if req.op == DeviceOp::Flush {
            return s.flush().map_err(|_| DeviceError::Io);
        }
        s.seek(SeekFrom::Start(req.offset)).map_err(|_| DeviceError::Io)?;
        for seg in req.segments {
            // SAFETY: the caller keeps every segment valid (and, for reads, unaliased) until
            // the ticket completes (BlockDevice::submit's contract); this runs inside submit.
            let buf = unsafe { core::slice::from_raw_parts_mut(seg.ptr, seg.len) };
            match req.op {
                DeviceOp::Read => s.read_exact(buf).map_err(|_| DeviceError::Io)?,
                _ => s.write_all(buf).map_err(|_| DeviceError::Io)?,
            }
        }
        Ok(())
    }
}

impl<S: Read + Write + Seek> BlockDevice for StreamDevice<S> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        self.info.check(req).map_err(SubmitError::Invalid)?;
        if self.done.get().is_some() {
            return Err(SubmitError::Busy);
        }
        self.done.set(Some(self.run(req)));
        Ok(Ticket(0))
    }

    fn poll(&self, _ticket: Ticket, _cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        Poll::Ready(self.done.take().unwrap_or(Err(DeviceError::Invalid)))
    }
}
