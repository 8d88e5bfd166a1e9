//! Leaf devices: the bottom of every graph, where bytes really move.
//!
//! One object-safe trait, [`BlockDevice`], with submission and completion by polling so it works
//! alike for a RAM disk, a host file (feature `std`) and virtio-blk hardware: `submit` hands a
//! request to the device and returns a [`Ticket`]; `poll` reports when that ticket is done.
//! Devices take many requests at once ([`DeviceInfo::queue_depth`]) and say [`SubmitError::Busy`]
//! when full — back-pressure, never a panic.
//!
//! The io layer (`crate::io`) makes every request fit the device's limits before it gets here:
//! aligned to `block_size` and `mem_alignment`, at most `max_transfer` bytes and `max_segments`
//! segments. Devices still check and refuse what does not fit ([`DeviceError::Invalid`]).

#[cfg(feature = "std")] pub mod file;
pub mod ram;
pub mod record;
#[cfg(feature = "embedded-io")] pub mod stream;
pub mod virtio;

use core::task::{Context, Poll};

/// Largest serial a device reports (virtio-blk's GetId is 20 bytes).
pub const MAX_SERIAL: usize = 20;

bitflags::bitflags! {
    /// Optional operations a device implements.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct DeviceFeatures: u32 {
        /// Has a volatile cache that [`DeviceOp::Flush`] writes back.
        const FLUSH = 1 << 0;
        /// Understands [`DeviceOp::Discard`].
        const DISCARD = 1 << 1;
        /// Understands [`DeviceOp::WriteZeroes`] without unmapping.
        const WRITE_ZEROES = 1 << 2;
        /// Understands [`DeviceOp::WriteZeroes`] with `unmap: true` (may deallocate).
        const WRITE_ZEROES_UNMAP = 1 << 3;
    }
}

/// What a device is and what it accepts. Fixed once the device is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Size in bytes. A multiple of `block_size`, except for a host file opened with O_DIRECT,
    /// whose last block may be partial: requests may reach to its end (reads past the end of
    /// the file return zeros).
    pub capacity: u64,
    /// Logical block size: every request's offset and length are multiples of it. A power of two.
    pub block_size: u32,
    /// Writes, discards and write-zeroes are refused.
    pub read_only: bool,
    /// Most bytes in one request (a multiple of `block_size`).
    pub max_transfer: u32,
    /// Preferred request size for throughput (0: no preference).
    pub opt_transfer: u32,
    /// Most scatter-gather segments in one request.
    pub max_segments: u16,
    /// Most bytes in one segment.
    pub max_segment_size: u32,
    /// Required alignment of buffer addresses and segment lengths in memory (1: none).
    pub mem_alignment: u32,
    /// Requests the device holds at once.
    pub queue_depth: u16,
    /// Optional operations.
    pub features: DeviceFeatures,
    /// Granularity of discard and write-zeroes in bytes (a multiple of `block_size`).
    pub discard_alignment: u32,
    /// Serial or name, at most [`MAX_SERIAL`] bytes used.
    pub serial: [u8; MAX_SERIAL],
    /// Bytes of `serial` used.
    pub serial_len: u8,
}

impl DeviceInfo {
    /// A device of `capacity` bytes in `block_size` blocks with permissive defaults: 1 MiB
    /// transfers, 128 segments, no memory alignment, queue depth 64, no optional features.
    pub const fn new(capacity: u64, block_size: u32) -> Self {
        Self {
            capacity,
            block_size,
            read_only: false,
            max_transfer: 1 << 20,
            opt_transfer: 0,
            max_segments: 128,
            max_segment_size: 1 << 20,
            mem_alignment: 1,
            queue_depth: 64,
            features: DeviceFeatures::empty(),
            discard_alignment: block_size,
            serial: [0; MAX_SERIAL],
            serial_len: 0,
        }
    }

    /// Sets the serial (cut at [`MAX_SERIAL`] bytes, on a character boundary).
    pub fn with_serial(mut self, serial: &str) -> Self {
        let mut n = serial.len().min(MAX_SERIAL);
        while !serial.is_char_boundary(n) {
            n -= 1;
        }
        self.serial = [0; MAX_SERIAL];
        self.serial[..n].copy_from_slice(&serial.as_bytes()[..n]);
        self.serial_len = n as u8;
        self
    }

    /// Checks `req` against these limits and features: what every device does before accepting
    /// a request (the io layer never sends one that fails, but a device does not trust that).
    pub fn check(&self, req: &DeviceRequest<'_>) -> Result<(), DeviceError> {
        self.check_within(req, self.capacity)
    }

    /// [`DeviceInfo::check`] against a device that has grown to `capacity` bytes since it was
    /// opened ([`BlockDevice::grow`]).
    pub fn check_within(&self, req: &DeviceRequest<'_>, capacity: u64) -> Result<(), DeviceError> {
        let moves_data = match req.op {
            DeviceOp::Read => true,
            DeviceOp::Flush => return Ok(()),
            _ if self.read_only => return Err(DeviceError::ReadOnly),
            DeviceOp::Write => true,
            DeviceOp::Discard => {
                if !self.features.contains(DeviceFeatures::DISCARD) {
                    return Err(DeviceError::Unsupported);
                }
                false
            }
            DeviceOp::WriteZeroes { unmap } => {
                let need = if unmap { DeviceFeatures::WRITE_ZEROES_UNMAP } else { DeviceFeatures::WRITE_ZEROES };
                if !self.features.contains(need) {
                    return Err(DeviceError::Unsupported);
                }
                false
            }
        };
        let bs = u64::from(self.block_size.max(1));
        let end = req.offset.checked_add(req.len).ok_or(DeviceError::Invalid)?;
        // Block sizes are powers of two in practice: masks, not divisions, on every request.
        let (aligned, limit) = if bs.is_power_of_two() {
            ((req.offset | req.len) & (bs - 1) == 0, capacity.checked_add(bs - 1).map_or(u64::MAX, |c| c & !(bs - 1)))
        } else {
            (req.offset.is_multiple_of(bs) && req.len.is_multiple_of(bs), capacity.next_multiple_of(bs))
        };
        if !aligned || end > limit || req.len == 0 {
            return Err(DeviceError::Invalid);
        }
        if moves_data && !self.segments_fit(req) {
            return Err(DeviceError::Invalid);
        }
        Ok(())
    }

    /// True if `req`'s segments add up to its length and each fits the memory limits.
    fn segments_fit(&self, req: &DeviceRequest<'_>) -> bool {
        let align = self.mem_alignment.max(1) as usize;
        let fits = |s: &Segment| {
            let aligned = if align.is_power_of_two() {
                (s.ptr as usize | s.len) & (align - 1) == 0
            } else {
                (s.ptr as usize).is_multiple_of(align) && s.len.is_multiple_of(align)
            };
            s.len <= self.max_segment_size as usize && aligned
        };
        if req.len > u64::from(self.max_transfer) {
            return false;
        }
        match req.segments {
            // One buffer: most requests.
            [one] => one.len as u64 == req.len && fits(one),
            many => {
                many.len() <= usize::from(self.max_segments)
                    && many.iter().map(|s| s.len as u64).sum::<u64>() == req.len
                    && many.iter().all(fits)
            }
        }
    }

    /// The serial as text.
    pub fn serial(&self) -> &str {
        let n = usize::from(self.serial_len).min(MAX_SERIAL);
        core::str::from_utf8(&self.serial[..n]).unwrap_or("")
    }
}

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceOp {
    /// Device to memory.
    Read,
    /// Memory to device.
    Write,
    /// Make every completed write stable.
    Flush,
    /// The range's contents may be dropped (advisory).
    Discard,
    /// The range reads as zeros afterwards; `unmap` allows deallocating it.
    WriteZeroes {
        /// Deallocation allowed.
        unmap: bool,
    },
}

/// One piece of a scatter-gather list: `len` bytes at `ptr`.
///
/// Raw because a device may hold it past the borrow that made it: see [`BlockDevice::submit`].
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    /// Start of the memory.
    pub ptr: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

impl Segment {
    /// A segment the device will write into (a read).
    pub fn from_mut(buf: &mut [u8]) -> Self {
        Self { ptr: buf.as_mut_ptr(), len: buf.len() }
    }

    /// A segment the device will only read from (a write). The pointer is made mutable only to
    /// share the type; devices never write through segments of a [`DeviceOp::Write`].
    pub fn from_ref(buf: &[u8]) -> Self {
        Self { ptr: buf.as_ptr().cast_mut(), len: buf.len() }
    }
}

/// A request as handed to a device.
#[derive(Clone, Copy, Debug)]
pub struct DeviceRequest<'s> {
    /// The operation.
    pub op: DeviceOp,
    /// Byte offset on the device.
    pub offset: u64,
    /// Bytes covered: the sum of `segments` for reads and writes; the range for discard and
    /// write-zeroes; 0 for flush.
    pub len: u64,
    /// Memory for reads and writes (empty otherwise).
    pub segments: &'s [Segment],
}

/// Names one submitted request until it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(pub u32);

/// Why a request could not be submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The device holds as many requests as it can; try again after one completes.
    Busy,
    /// The request breaks the device's limits or is out of range; it will never be accepted.
    Invalid(DeviceError),
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device reported an I/O error.
    Io,
    /// The device is read-only.
    ReadOnly,
    /// The request does not fit the device's limits (alignment, size, segments, range).
    Invalid,
    /// The device does not implement this operation.
    Unsupported,
    /// The device has no space left (thin provisioning, a full host file system).
    NoSpace,
    /// The device stopped answering.
    Timeout,
}

impl core::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Io => "I/O error",
            Self::ReadOnly => "device is read-only",
            Self::Invalid => "request outside the device's limits",
            Self::Unsupported => "operation not supported by the device",
            Self::NoSpace => "no space left on device",
            Self::Timeout => "device timed out",
        })
    }
}

#[allow(unsafe_code)] // reason: `submit` hands raw memory to the device; its contract is below
/// A leaf device. Object-safe, so graphs hold `&dyn BlockDevice` and any device mixes with any
/// other; all methods take `&self` (devices use interior mutability; one executor thread drives
/// them).
pub trait BlockDevice {
    /// What the device is and accepts.
    fn info(&self) -> &DeviceInfo;

    /// Hands `req` to the device.
    ///
    /// # Safety
    /// The memory of every segment must stay valid, and for [`DeviceOp::Read`] unaliased, until
    /// [`BlockDevice::poll`] has returned `Ready` for the returned ticket. Callers guarantee it
    /// by keeping the buffer borrowed in the request future and, if that future is dropped early,
    /// waiting for completion in its destructor ([`crate::io`]'s request guard). Leaking such a
    /// future with `mem::forget` breaks this contract, which is why the function is unsafe.
    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError>;

    /// Performs `req` at once in the caller's thread, if the device would run it there anyway
    /// (a host file running requests inline): `Some(result)`, and the request is done. `None`:
    /// the device would queue it, so nothing was done; use [`BlockDevice::submit`]. This spares
    /// a request that completes inside `submit` its ticket and its `poll`. The default does
    /// nothing now.
    ///
    /// # Safety
    /// The memory of every segment must be valid, and for [`DeviceOp::Read`] unaliased, for the
    /// duration of the call.
    unsafe fn rw_now(&self, _req: &DeviceRequest<'_>) -> Option<Result<(), DeviceError>> {
        None
    }

    /// A cheap hint that [`BlockDevice::rw_now`] would do a request now (it may change from
    /// one request to the next: a host file's engine moves between inline and shared). Callers
    /// that would do work before trying `rw_now` (a whole read resolved without an await) ask
    /// this first; `rw_now` itself decides.
    fn runs_now(&self) -> bool {
        false
    }

    /// Checks a submitted request. Also moves the device forward (polls its completion queue).
    /// After `Ready`, the ticket is forgotten; polling it again is `Invalid`.
    ///
    /// A pending poll registers `cx`'s waker; polled devices with no interrupt wake it at once so
    /// the executor keeps polling while I/O is in flight.
    fn poll(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>>;

    /// Ends a submission batch: devices that queue requests notify the hardware once here
    /// (QEMU's io_unplug) instead of once per request. The default does nothing.
    fn unplug(&self) {}

    /// Where the device is known to read as zeros to its end, if anywhere: a disk whose host
    /// file was extended (sparse) just for this boot. Formats skip writing zeros there (a
    /// copy-on-write of zeros into a cluster that was never used). `None`: nothing known.
    fn zeroed_from(&self) -> Option<u64> {
        None
    }

    /// Size in bytes now: [`DeviceInfo::capacity`] unless the device has grown since.
    fn capacity(&self) -> u64 {
        self.info().capacity
    }

    /// Extends the device to at least `min_capacity` bytes and returns its new capacity (QEMU's
    /// truncate on a growing file). A host file grows; devices of fixed size (virtio-blk, RAM)
    /// say [`DeviceError::NoSpace`], which is what an image that fills its disk gets.
    fn grow(&self, min_capacity: u64) -> Result<u64, DeviceError> {
        if min_capacity <= self.capacity() {
            return Ok(self.capacity());
        }
        Err(DeviceError::NoSpace)
    }
}
