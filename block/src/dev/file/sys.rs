//! The host side: thin, checked wrappers over the syscalls the file device makes, and [`Exec`],
//! which runs one request synchronously (in the submitting thread in writeback mode, in a worker
//! in the thread-pool engine, and as the fallback of the io_uring engine).

#![allow(unsafe_code)] // reason: raw syscalls (preadv, pwritev, fallocate, ioctl) on caller memory

use std::alloc::Layout;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::failure::LastFailure;
use crate::dev::{DeviceError, DeviceOp};

/// Most iovecs one `preadv`/`pwritev` takes (Linux's `UIO_MAXIOV`).
pub(super) const IOV_MAX: usize = 1024;

/// Bytes of the zero buffer that emulated write-zeroes writes from.
const ZERO_BUF_LEN: usize = 256 << 10;

/// `pwrite` (`write`) or `pread` of one buffer, as the syscall itself: glibc's wrappers are
/// cancellation points, which in a multi-threaded process flip the calling thread's
/// cancellation state with an atomic read-modify-write before and after the syscall (3.8% of
/// all perf samples at QD32 fell there, all in the helper thread). Strata never cancels a
/// thread, so the fast path skips them. Returns what the wrappers return: the bytes moved, or
/// -1 with `errno` set. (On 32-bit targets, where the syscall splits the offset across
/// registers, the wrappers are called.)
///
/// # Safety
/// `buf` must be valid for `len` bytes of the access (writes for a read).
unsafe fn transfer_one(fd: libc::c_int, write: bool, buf: *mut libc::c_void, len: usize, off: libc::off_t) -> isize {
    #[cfg(target_pointer_width = "64")]
    {
        let call = if write { libc::SYS_pwrite64 } else { libc::SYS_pread64 };
        // SAFETY: the caller guarantees `buf`; the kernel checks the rest. `syscall` itself is
        // not a cancellation point.
        let n = unsafe { libc::syscall(call, fd, buf, len, off) };
        n as isize
    }
    #[cfg(not(target_pointer_width = "64"))]
    {
        // SAFETY: as above.
        unsafe {
            if write {
                libc::pwrite(fd, buf, len, off)
            } else {
                libc::pread(fd, buf, len, off)
            }
        }
    }
}

/// A heap buffer with a chosen alignment, allocated once (at open) and zero-filled.
pub(super) struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the buffer is plain memory owned by this value; it is only read through shared
// references (`as_ptr`) or written through `&mut self`.
unsafe impl Send for AlignedBuf {}
// SAFETY: as above: no interior mutability.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes aligned to `align` (a power of two). `None` if the allocation fails.
    pub(super) fn zeroed(len: usize, align: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len.max(1), align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Self { ptr, layout })
    }

    pub(super) fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    pub(super) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    pub(super) fn len(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this very layout and is freed only here.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// The calling thread's last OS error number.
pub(super) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// True for error numbers that mean "this operation is not implemented here".
pub(super) fn is_unsupported(e: i32) -> bool {
    matches!(e, libc::EOPNOTSUPP | libc::ENOSYS | libc::ENOTTY)
}

/// Drops the first `n` bytes from the front of `iov` (advancing the first partial entry in
/// place) and returns what is left.
pub(super) fn advance_iov(iov: &mut [libc::iovec], mut n: usize) -> &mut [libc::iovec] {
    let mut skip = 0;
    for v in iov.iter_mut() {
        if n < v.iov_len {
            v.iov_base = v.iov_base.cast::<u8>().wrapping_add(n).cast();
            v.iov_len -= n;
            break;
        }
        n -= v.iov_len;
        skip += 1;
    }
    &mut iov[skip..]
}

/// Fills every byte `iov` describes with zeros.
///
/// # Safety
/// Every entry must describe memory valid for writes.
pub(super) unsafe fn zero_iov(iov: &[libc::iovec]) {
    for v in iov {
        // SAFETY: the caller guarantees the memory is valid for writes of `iov_len` bytes.
        unsafe { core::ptr::write_bytes(v.iov_base.cast::<u8>(), 0, v.iov_len) };
    }
}

/// The `ioctl`s for block devices (Linux's `<linux/fs.h>`, generic `_IOR` encoding).
mod blk {
    /// `_IOR(0x12, 114, size_t)`: size in bytes.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64", target_arch = "loongarch64", target_arch = "s390x"))]
    pub const BLKGETSIZE64: u64 = 0x8008_1272;
    /// `_IO(0x12, 104)`: logical sector size.
    pub const BLKSSZGET: u64 = 0x1268;
    /// `_IO(0x12, 119)`: discard a `[u64; 2]` range.
    pub const BLKDISCARD: u64 = 0x1277;
    /// `_IO(0x12, 94)`: read-only flag of the device.
    pub const BLKROGET: u64 = 0x125e;
}

/// Size in bytes of a block device (`BLKGETSIZE64`, else `lseek(SEEK_END)`).
pub(super) fn blockdev_size(file: &File) -> io::Result<u64> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64", target_arch = "loongarch64", target_arch = "s390x"))]
    {
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), blk::BLKGETSIZE64 as _, &mut size as *mut u64) };
        if r == 0 {
            return Ok(size);
        }
    }
    // SAFETY: lseek on an owned descriptor; no memory is involved.
    let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
    u64::try_from(end).map_err(|_| io::Error::last_os_error())
}

/// Logical sector size of a block device (`BLKSSZGET`).
pub(super) fn blockdev_sector_size(file: &File) -> Option<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at `size`.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), blk::BLKSSZGET as _, &mut size as *mut libc::c_int) };
    (r == 0 && size > 0 && (size as u32).is_power_of_two()).then_some(size as u32)
}

/// Whether a block device is set read-only (`blockdev --setro`), which `open(O_RDWR)` does not
/// report.
pub(super) fn blockdev_read_only(file: &File) -> bool {
    let mut ro: libc::c_int = 0;
    // SAFETY: BLKROGET writes one int through the pointer, which points at `ro`.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), blk::BLKROGET as _, &mut ro as *mut libc::c_int) };
    r == 0 && ro != 0
}

/// `pread` of `len` bytes at offset 0 into `buf`; true unless the kernel says EINVAL (the
/// misaligned O_DIRECT answer). Other errors count as aligned, as in QEMU's `raw_is_io_aligned`.
fn is_io_aligned(file: &File, buf: *mut u8, len: usize) -> bool {
    // SAFETY: callers pass a buffer valid for `len` bytes of writes.
    let r = unsafe { libc::pread(file.as_raw_fd(), buf.cast(), len, 0) };
    r >= 0 || errno() != libc::EINVAL
}

/// What O_DIRECT needs, probed like QEMU's `raw_probe_alignment`: (request alignment, memory
/// alignment). Block devices start from their logical sector size; otherwise reads of 1, 512,
/// 1024, 2048 and 4096 bytes find the smallest request size the kernel takes, and reads into a
/// buffer shifted by those amounts the smallest memory alignment. A probe that works at 1 byte
/// proves nothing (empty file, short read) and falls back to the page size, like QEMU.
pub(super) fn probe_direct_alignment(file: &File, is_blockdev: bool) -> (u32, u32) {
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let max_align = usize::try_from(page).unwrap_or(4096).max(4096);
    const ALIGNMENTS: [usize; 5] = [1, 512, 1024, 2048, 4096];
    let mut request = if is_blockdev { blockdev_sector_size(file).map_or(0, |s| s as usize) } else { 0 };
    let Some(mut buf) = AlignedBuf::zeroed(2 * max_align, max_align) else {
        return (max_align as u32, max_align as u32);
    };
    if request == 0 {
        if let Some(&a) = ALIGNMENTS.iter().find(|&&a| is_io_aligned(file, buf.as_mut_ptr(), a)) {
            request = if a != 1 { a } else { max_align };
        }
    }
    if request == 0 {
        request = max_align;
    }
    let mut memory = 0;
    for &a in &ALIGNMENTS {
        // `a + max_align <= 2 * max_align`: in bounds.
        if is_io_aligned(file, buf.as_mut_ptr().wrapping_add(a), max_align) {
            memory = if a != 1 { a } else { request };
            break;
        }
    }
    if memory == 0 {
        memory = max_align;
    }
    (request as u32, memory as u32)
}

/// An open host file and the way requests execute on it synchronously.
pub(super) struct Exec {
    pub(super) file: File,
    pub(super) is_blockdev: bool,
    /// `FALLOC_FL_PUNCH_HOLE` has not been refused yet.
    punch_ok: AtomicBool,
    /// `FALLOC_FL_ZERO_RANGE` has not been refused yet.
    zero_range_ok: AtomicBool,
    /// Zeros for emulated write-zeroes (aligned for O_DIRECT). `None` on read-only files.
    zeros: Option<AlignedBuf>,
    /// The last request the OS refused, for error messages.
    pub(super) failures: LastFailure,
}

impl Exec {
    pub(super) fn new(file: File, is_blockdev: bool, writable: bool) -> io::Result<Self> {
        let zeros = if writable { Some(AlignedBuf::zeroed(ZERO_BUF_LEN, 4096).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?) } else { None };
        Ok(Self { file, is_blockdev, punch_ok: AtomicBool::new(true), zero_range_ok: AtomicBool::new(true), zeros, failures: LastFailure::default() })
    }

    pub(super) fn fd(&self) -> libc::c_int {
        self.file.as_raw_fd()
    }

    /// Whether punching holes works, probed with a no-op punch beyond the end of the file
    /// (a regular file opened read-write). Remembers the answer.
    pub(super) fn probe_punch(&self, file_len: u64) -> bool {
        const MIB: u64 = 1 << 20;
        let beyond = (file_len.div_ceil(MIB) + 1) * MIB;
        let ok = match self.fallocate(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, beyond, 4096) {
            Ok(()) => true,
            Err(e) => !is_unsupported(e),
        };
        self.punch_ok.store(ok, Ordering::Relaxed);
        ok
    }

    /// Whether `FALLOC_FL_ZERO_RANGE` should be tried first (not refused so far).
    pub(super) fn zero_range_ok(&self) -> bool {
        self.zero_range_ok.load(Ordering::Relaxed)
    }

    /// Whether `FALLOC_FL_PUNCH_HOLE` should be tried first (not refused so far).
    pub(super) fn punch_ok(&self) -> bool {
        self.punch_ok.load(Ordering::Relaxed)
    }

    /// Notes that the kernel refused a fallocate `mode` (from an asynchronous engine).
    pub(super) fn note_unsupported(&self, mode: libc::c_int) {
        if mode & libc::FALLOC_FL_PUNCH_HOLE != 0 {
            self.punch_ok.store(false, Ordering::Relaxed);
        }
        if mode & libc::FALLOC_FL_ZERO_RANGE != 0 {
            self.zero_range_ok.store(false, Ordering::Relaxed);
        }
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> Result<(), i32> {
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(libc::EINVAL);
        };
        loop {
            // SAFETY: fallocate on an owned descriptor; no memory is involved.
            let r = unsafe { libc::fallocate(self.fd(), mode, off, n) };
            if r == 0 {
                return Ok(());
            }
            match errno() {
                libc::EINTR => continue,
                e => return Err(e),
            }
        }
    }

    /// Reads (`write == false`) or writes all of `iov` at `offset`, looping over short transfers
    /// and `EINTR`. A read that meets the end of the file zero-fills the rest (QEMU does the
    /// same); a write that makes no progress is `NoSpace`.
    ///
    /// # Safety
    /// Every entry of `iov` must describe memory valid for the access (writes for a read) for
    /// the duration of the call.
    pub(super) unsafe fn rw(&self, write: bool, offset: u64, iov: &mut [libc::iovec]) -> Result<(), DeviceError> {
        // One buffer moved whole by one call: most requests, with no iovec bookkeeping. Anything
        // else (a short transfer, an error, EINTR) is done again by the loop below.
        if let ([one], Ok(off)) = (&*iov, libc::off_t::try_from(offset)) {
            // SAFETY: as in the loop below.
            let n = unsafe { transfer_one(self.fd(), write, one.iov_base, one.iov_len, off) };
            if n > 0 && n as usize == one.iov_len {
                return Ok(());
            }
        }
        let mut iov = iov;
        let mut offset = offset;
        while let Some(first) = iov.first().copied() {
            if first.iov_len == 0 {
                iov = &mut iov[1..];
                continue;
            }
            let off = libc::off_t::try_from(offset).map_err(|_| DeviceError::Invalid)?;
            let count = iov.len().min(IOV_MAX) as libc::c_int;
            // SAFETY: the caller guarantees each iovec's memory is valid for this access; the
            // kernel touches at most `count` entries of the slice.
            let n = unsafe {
                match (write, iov.len()) {
                    (_, 1) => transfer_one(self.fd(), write, first.iov_base, first.iov_len, off),
                    (false, _) => libc::preadv(self.fd(), iov.as_ptr(), count, off),
                    (true, _) => libc::pwritev(self.fd(), iov.as_ptr(), count, off),
                }
            };
            if n < 0 {
                match errno() {
                    libc::EINTR | libc::EAGAIN => continue,
                    e => {
                        let left = iov.iter().map(|v| v.iov_len as u64).sum();
                        return Err(self.failures.note(if write { "write" } else { "read" }, offset, left, e));
                    }
                }
            }
            if n == 0 {
                if write {
                    return Err(DeviceError::NoSpace);
                }
                // SAFETY: as above; a read's memory is valid for writes.
                unsafe { zero_iov(iov) };
                return Ok(());
            }
            offset += n as u64;
            let before = iov.iter().map(|v| v.iov_len).sum::<usize>();
            iov = advance_iov(iov, n as usize);
            if !write && (n as usize) < before {
                // A regular file reads short only at its end (an O_DIRECT read of its partial
                // last block): the rest is past the end and reads as zeros. Asking again at an
                // unaligned offset would fail under O_DIRECT.
                // SAFETY: as above; a read's memory is valid for writes.
                unsafe { zero_iov(iov) };
                return Ok(());
            }
        }
        Ok(())
    }

    /// `fdatasync`.
    pub(super) fn flush(&self) -> Result<(), DeviceError> {
        loop {
            // SAFETY: fdatasync on an owned descriptor; no memory is involved.
            if unsafe { libc::fdatasync(self.fd()) } == 0 {
                return Ok(());
            }
            match errno() {
                libc::EINTR => continue,
                // Some special files (pipes, character devices) cannot sync: nothing to do.
                libc::EINVAL | libc::EROFS => return Ok(()),
                e => return Err(self.failures.note("flush", 0, 0, e)),
            }
        }
    }

    /// Discard: `BLKDISCARD` on block devices, a hole punched (keeping the size) in files.
    pub(super) fn discard(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        if self.is_blockdev {
            let range = [offset, len];
            // SAFETY: BLKDISCARD reads two u64 through the pointer, which points at `range`.
            let r = unsafe { libc::ioctl(self.fd(), blk::BLKDISCARD as _, range.as_ptr()) };
            return if r == 0 { Ok(()) } else { Err(self.failures.note("discard", offset, len, errno())) };
        }
        if !self.punch_ok() {
            return Err(DeviceError::Unsupported);
        }
        match self.fallocate(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len) {
            Ok(()) => Ok(()),
            Err(e) if is_unsupported(e) => {
                self.punch_ok.store(false, Ordering::Relaxed);
                Err(DeviceError::Unsupported)
            }
            Err(e) => Err(self.failures.note("discard", offset, len, e)),
        }
    }

    /// Write-zeroes: a punched hole if `unmap` allows it, else `FALLOC_FL_ZERO_RANGE`, else (the
    /// file system has neither) writing zeros. Refusals are remembered so the next request goes
    /// straight to what works.
    pub(super) fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> Result<(), DeviceError> {
        if unmap && self.punch_ok() {
            match self.fallocate(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, offset, len) {
                Ok(()) => return Ok(()),
                Err(e) if is_unsupported(e) => self.punch_ok.store(false, Ordering::Relaxed),
                Err(e) => return Err(self.failures.note("write-zeroes", offset, len, e)),
            }
        }
        if self.zero_range_ok() {
            match self.fallocate(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE, offset, len) {
                Ok(()) => return Ok(()),
                Err(e) if is_unsupported(e) => self.zero_range_ok.store(false, Ordering::Relaxed),
                Err(e) => return Err(self.failures.note("write-zeroes", offset, len, e)),
            }
        }
        self.write_zeroes_emulated(offset, len)
    }

    /// Writes zeros from the preallocated zero buffer (aligned, so valid under O_DIRECT for
    /// ranges the device accepted).
    pub(super) fn write_zeroes_emulated(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        let zeros = self.zeros.as_ref().ok_or(DeviceError::ReadOnly)?;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            let mut iov = [libc::iovec { iov_base: zeros.as_ptr().cast_mut().cast(), iov_len: n }];
            // SAFETY: the zero buffer is valid for reads of `zeros.len() >= n` bytes and lives as
            // long as `self`; a write only reads from it.
            unsafe { self.rw(true, offset + done, &mut iov)? };
            done += n as u64;
        }
        Ok(())
    }

    /// Runs one request to completion in the calling thread.
    ///
    /// # Safety
    /// As [`Exec::rw`] for reads and writes.
    pub(super) unsafe fn execute(&self, op: DeviceOp, offset: u64, len: u64, iov: &mut [libc::iovec]) -> Result<(), DeviceError> {
        match op {
            // SAFETY: forwarded from the caller.
            DeviceOp::Read => unsafe { self.rw(false, offset, iov) },
            // SAFETY: forwarded from the caller.
            DeviceOp::Write => unsafe { self.rw(true, offset, iov) },
            DeviceOp::Flush => self.flush(),
            DeviceOp::Discard => self.discard(offset, len),
            DeviceOp::WriteZeroes { unmap } => self.write_zeroes(offset, len, unmap),
        }
    }
}
