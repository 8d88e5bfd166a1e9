//! A window of another device: bytes `[offset, offset + size)` of it, seen as a device of its
//! own. What lets many image files share one virtio disk: the host packs a backing chain's
//! read-only files into one disk at aligned offsets, and the guest opens each file as a window
//! of it (a microvm has 24 virtio slots; a chain may be deeper).
//!
//! Each window is its own device, so the graph tells files apart as it does separate disks (a
//! leaf per file, loops found by device identity), and a format's metadata I/O reaches the disk
//! with no translation node in between. Requests are checked against the window and moved by
//! its offset; everything else (limits, completion, tickets) is the disk's. A window is
//! read-only if the disk is or if it is made so.

#![allow(unsafe_code)] // reason: `submit` forwards the caller's segments under the same contract

use core::task::{Context, Poll};

use super::{
    BlockDevice, DeviceError, DeviceFeatures, DeviceInfo, DeviceRequest, SubmitError, Ticket,
};

/// Bytes `[offset, offset + size)` of a device, as a device.
pub struct Window<'d> {
    dev: &'d dyn BlockDevice,
    offset: u64,
    info: DeviceInfo,
}

impl<'d> Window<'d> {
    /// The window `[offset, offset + size)` of `dev`, read-only if `read_only` or `dev` is.
    /// [`DeviceError::Invalid`] unless both ends are multiples of the device's block size and
    /// the window lies inside the device.
    pub fn new(
        dev: &'d dyn BlockDevice,
        offset: u64,
        size: u64,
        read_only: bool,
    ) -> Result<Self, DeviceError> {
        let mut info = dev.info().clone();
        let bs = u64::from(info.block_size.max(1));
        let end = offset.checked_add(size).ok_or(DeviceError::Invalid)?;
        if !offset.is_multiple_of(bs)
            || !size.is_multiple_of(bs)
            || size == 0
            || end > dev.capacity()
        {
            return Err(DeviceError::Invalid);
        }
        info.capacity = size;
        info.read_only |= read_only;
        if info.read_only {
            // Nothing to write back, and nothing that changes the disk.
            info.features.remove(
                DeviceFeatures::FLUSH
                    | DeviceFeatures::DISCARD
                    | DeviceFeatures::WRITE_ZEROES
                    | DeviceFeatures::WRITE_ZEROES_UNMAP,
            );
        }
        Ok(Self { dev, offset, info })
    }

    /// Where the window starts on its device.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl BlockDevice for Window<'_> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        self.info.check(req).map_err(SubmitError::Invalid)?;
        let offset = req
            .offset
            .checked_add(self.offset)
            .ok_or(SubmitError::Invalid(DeviceError::Invalid))?;
        let moved = DeviceRequest {
            op: req.op,
            offset,
            len: req.len,
            segments: req.segments,
        };
        // SAFETY: the segments are the caller's, passed on unchanged; the caller keeps them valid
        // (and unaliased for reads) until this ticket, which is the device's own, polls ready.
        unsafe { self.dev.submit(&moved) }
    }

    fn poll(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        self.dev.poll(ticket, cx)
    }

    fn unplug(&self) {
        self.dev.unplug();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::ram::{RamConfig, RamDisk};
    use crate::dev::{DeviceOp, Segment};

    fn run(
        dev: &dyn BlockDevice,
        op: DeviceOp,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), DeviceError> {
        let segments = [Segment {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }];
        let req = DeviceRequest {
            op,
            offset,
            len: buf.len() as u64,
            segments: &segments,
        };
        // SAFETY: `buf` outlives the request: it is polled to completion below.
        let ticket = unsafe { dev.submit(&req) }.map_err(|e| match e {
            SubmitError::Invalid(e) => e,
            SubmitError::Busy => DeviceError::Io,
        })?;
        let waker = core::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            if let Poll::Ready(r) = dev.poll(ticket, &mut cx) {
                return r;
            }
        }
    }

    #[test]
    fn a_window_moves_requests_and_keeps_them_inside() {
        let mut mem = std::vec![0u8; 64 * 1024];
        for (i, b) in mem.iter_mut().enumerate() {
            *b = (i / 512) as u8;
        }
        let disk: RamDisk<'_, 8> = RamDisk::new(&mut mem, 512, RamConfig::default());
        assert_eq!(
            Window::new(&disk, 100, 4096, true).err(),
            Some(DeviceError::Invalid)
        );
        assert_eq!(
            Window::new(&disk, 60 * 1024, 8192, true).err(),
            Some(DeviceError::Invalid)
        );
        let w = Window::new(&disk, 8192, 4096, true).unwrap();
        assert_eq!(w.info().capacity, 4096);
        assert!(w.info().read_only);
        let mut buf = [0u8; 1024];
        run(&w, DeviceOp::Read, 1024, &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 18) && buf[512..].iter().all(|&b| b == 19));
        assert_eq!(
            run(&w, DeviceOp::Read, 4096 - 512, &mut buf),
            Err(DeviceError::Invalid)
        );
        assert_eq!(
            run(&w, DeviceOp::Write, 0, &mut buf),
            Err(DeviceError::ReadOnly)
        );
    }
}
