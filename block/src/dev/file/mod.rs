//! A host file or block device as a leaf ([`HostFile`]), QEMU's `file`/`host_device` protocol
//! drivers (`block/file-posix.c`). Feature `std` only: this is the one part of `block/` that
//! uses the host OS, threads and (at open time only) the heap.
//!
//! Two cache modes, as QEMU's `cache.direct`:
//!
//! - [`CacheMode::Writeback`] (default): the page cache is used. With [`Engine::Auto`] each
//!   request runs as `preadv`/`pwritev`/`fallocate`/`fdatasync` **inside
//!   [`BlockDevice::submit`]**, in the caller's thread, while requests come one at a time (a
//!   page-cache hit costs a syscall, never a thread hand-off), and is shared with helper threads
//!   while the caller keeps several in flight (see [`adaptive`]); [`Engine::InThread`] never
//!   uses another thread; [`Engine::IoUring`] and [`Engine::Threads`] queue as in
//!   [`CacheMode::None`], through the page cache (QEMU's `aio=` with `cache.direct=off`). Any
//!   byte offset works: `block_size` is 1 and `capacity` is the exact file length (the sector
//!   size and size for block devices).
//! - [`CacheMode::None`]: the file is opened with `O_DIRECT` and requests really queue: `submit`
//!   prepares them, [`BlockDevice::unplug`] hands the batch to the kernel (one
//!   `io_uring_enter`) or to a thread pool, `poll` reaps completions. `block_size` and
//!   `mem_alignment` are what O_DIRECT needs, probed like QEMU's `raw_probe_alignment`;
//!   `capacity` is the exact file length: a request may reach into the last, partial block
//!   (reads past the end of the file come back as zeros, as in QEMU), so a qcow2 file that
//!   `qemu-img create` left at 196616 bytes opens with O_DIRECT too.
//!
//! Both report [`DeviceFeatures::FLUSH`] (`fdatasync`) unless opened with
//! [`HostFileOptions::no_flush`] (`cache=unsafe`). Writable files also get
//! `WRITE_ZEROES` and `WRITE_ZEROES_UNMAP` (a punched hole when unmapping is allowed, else
//! `FALLOC_FL_ZERO_RANGE`; where the file system has neither, zeros are written, so the
//! operation always works), and `DISCARD` when the file system punches holes (probed at open
//! with a no-op punch past the end of the file; block devices use `BLKDISCARD`).
//!
//! Image locks: [`HostFile::open`] takes QEMU's lock bytes (see [`lock`]'s docs), so a QEMU
//! process using the image and Strata refuse each other exactly as two QEMU processes would.
//! A writer holds consistent-read, write and resize and shares neither write nor resize, as
//! QEMU's qcow2 does on its file; a reader holds consistent-read and does not share write
//! (unless [`HostFileOptions::force_share`], QEMU's `-U`).
//!
//! Dropping a [`HostFile`] waits for every request still in flight: worker threads and the
//! kernel hold raw pointers into callers' memory until they finish.
//!
//! A [`DeviceError`] says only what kind of failure it was; [`HostFile::last_os_failure`] keeps
//! the operation, range and OS error number of the last request the OS refused, for messages.

#![allow(unsafe_code)] // reason: implements the unsafe `BlockDevice::submit` contract over raw segments

mod adaptive;
mod failure;
pub mod lock;
mod parking;
mod pool;
mod sys;
mod uring;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use super::{BlockDevice, DeviceError, DeviceFeatures, DeviceInfo, DeviceOp, DeviceRequest, Segment, SubmitError, Ticket};
pub use adaptive::EngineCounts;
pub use failure::OsFailure;
use sys::Exec;

/// Most bytes per request in writeback (in-thread) mode.
pub const MAX_TRANSFER_IN_THREAD: u32 = 2 << 20;
/// Most bytes per request in queue (O_DIRECT) mode.
pub const MAX_TRANSFER_QUEUE: u32 = 1 << 20;
/// Most segments per request in writeback mode (`IOV_MAX`).
pub const MAX_SEGMENTS_IN_THREAD: u16 = 1024;
/// Most segments per request in queue mode (each queue slot preallocates this many iovecs).
pub const MAX_SEGMENTS_QUEUE: u16 = 256;
/// Largest queue depth accepted in queue mode.
pub const MAX_QUEUE_DEPTH: u16 = 4096;

/// Host cache use, as QEMU's `cache.direct`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Page cache; requests run synchronously inside `submit` (QEMU `cache=writeback`).
    #[default]
    Writeback,
    /// `O_DIRECT`; requests queue to io_uring or a thread pool (QEMU `cache=none`).
    None,
}

/// Image locking, as QEMU's `locking=` option of the file driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Locking {
    /// Take the locks; fail the open if the file system cannot lock.
    On,
    /// Take no locks.
    Off,
    /// Take the locks where the file system supports OFD locks, silently skip them elsewhere.
    #[default]
    Auto,
}

/// Which engine runs the requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// Writeback mode: in the caller's thread, shared with helper threads while several
    /// requests are in flight. Queue mode: io_uring if the kernel lets us set one up, else the
    /// thread pool.
    #[default]
    Auto,
    /// io_uring or fail the open.
    IoUring,
    /// The thread pool.
    Threads,
    /// Writeback mode only: every request in the caller's thread, no other thread ever.
    InThread,
}

/// What a [`HostFile`] ended up using.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveEngine {
    /// Writeback mode: requests run inside `submit`.
    InThread,
    /// Writeback mode: inside `submit` while requests come one at a time, shared with helper
    /// threads while several are in flight.
    Adaptive,
    /// Queue mode on io_uring.
    IoUring,
    /// Queue mode on the thread pool.
    Threads,
}

/// How to open a [`HostFile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFileOptions<'a> {
    /// Open read-only: writes, discards and write-zeroes are refused.
    pub read_only: bool,
    /// Page cache (in-thread) or O_DIRECT (queue).
    pub mode: CacheMode,
    /// QEMU image locks.
    pub locking: Locking,
    /// Share every permission with other users, QEMU's `force-share` (`-U`). Read-only only.
    pub force_share: bool,
    /// Queue-mode engine.
    pub engine: Engine,
    /// Requests held at once (default 64). In writeback mode they complete inside `submit`,
    /// so this only bounds results not yet polled.
    pub queue_depth: u16,
    /// Worker threads of the thread-pool engine (default 8).
    pub threads: u16,
    /// In [`CacheMode::None`], if the file system refuses `O_DIRECT`, open through the page
    /// cache (still queued) instead of failing.
    pub direct_fallback: bool,
    /// The serial the device reports (cut to [`super::MAX_SERIAL`] bytes).
    pub serial: Option<&'a str>,
    /// QEMU's `cache.no-flush` (`cache=unsafe`): the file does not report
    /// [`DeviceFeatures::FLUSH`], so the block layer's flushes never reach `fdatasync` (what
    /// `qemu-img convert` does to its output by default). Data still goes to the page cache.
    pub no_flush: bool,
    /// Open with `O_NOATIME` where the kernel allows it (the caller owns the file, or has
    /// `CAP_FOWNER`; otherwise the file opens as usual), as `git` opens its objects: reads then
    /// leave the file's access time alone. Without it every `pread` asks whether to update the
    /// access time (reading the clock and comparing the inode's times under the mount's
    /// `relatime` rule), about 8% of a 4 KiB read from the page cache, nearly always to decide
    /// not to. Default on; off, reads update the access time as the mount says. (Updating it
    /// once at open instead was tried and dropped: `futimens` also moves the change time,
    /// which backup tools read as "changed".)
    pub noatime: bool,
}

impl Default for HostFileOptions<'_> {
    fn default() -> Self {
        Self {
            read_only: false,
            mode: CacheMode::Writeback,
            locking: Locking::Auto,
            force_share: false,
            engine: Engine::Auto,
            queue_depth: 64,
            threads: 8,
            direct_fallback: false,
            serial: None,
            no_flush: false,
            noatime: true,
        }
    }
}

/// Why [`HostFile::open`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileError {
    /// No such file.
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The OS refused access (file permissions, a read-only file system or block device).
    PermissionDenied {
        /// The path given.
        path: PathBuf,
    },
    /// Another process holds the image in a conflicting way (QEMU's lock bytes).
    Locked {
        /// The path given.
        path: PathBuf,
        /// QEMU's name of the permission in conflict ("write", "resize", ...).
        perm: &'static str,
        /// `true`: the other process holds `perm`, which we do not share ("Failed to get
        /// shared ... lock"); `false`: it does not share `perm`, which we need.
        shared: bool,
    },
    /// [`Locking::On`] but the file system cannot take OFD locks.
    LockingUnsupported {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// [`CacheMode::None`] but the file system refuses `O_DIRECT` (e.g. an old tmpfs).
    DirectUnsupported {
        /// The path given.
        path: PathBuf,
    },
    /// Neither a regular file nor a block device.
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// The options contradict each other.
    InvalidOptions(&'static str),
    /// Any other OS error.
    Io {
        /// The path given.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { path } => write!(f, "Could not open '{}': No such file or directory", path.display()),
            Self::PermissionDenied { path } => write!(f, "Could not open '{}': Permission denied", path.display()),
            Self::Locked { path, perm, shared } => {
                write!(f, "Failed to get {}\"{perm}\" lock. Is another process using the image [{}]?", if *shared { "shared " } else { "" }, path.display())
            }
            Self::LockingUnsupported { path, source } => {
                write!(f, "Could not lock '{}': the file system has no OFD locks ({source}); use locking=off or auto", path.display())
            }
            Self::DirectUnsupported { path } => write!(
                f,
                "Could not open '{}' with O_DIRECT: the file system does not support it (use cache mode writeback, or allow the fallback)",
                path.display()
            ),
            Self::NotAFile { path } => write!(f, "'{}' is neither a regular file nor a block device", path.display()),
            Self::InvalidOptions(why) => write!(f, "invalid host file options: {why}"),
            Self::Io { path, what, source } => write!(f, "Could not {what} '{}': {source}", path.display()),
        }
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::LockingUnsupported { source, .. } | Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A host file or block device as a [`BlockDevice`]. See the module docs.
pub struct HostFile {
    info: DeviceInfo,
    /// Size now (starts at `info.capacity`; [`BlockDevice::grow`] raises it).
    capacity: AtomicU64,
    /// [`BlockDevice::grow`] extends the file to a multiple of this: the block size, and with
    /// O_DIRECT at least the file system's block and the page size (see `grow`).
    grow_align: u64,
    backend: Backend,
    direct: bool,
    locked: bool,
    // Dropped after `backend` (which waits for in-flight requests): keeps the file open.
    exec: Arc<Exec>,
}

enum Backend {
    InThread(InThread),
    Adaptive(adaptive::Adaptive),
    Uring(Box<uring::Uring>),
    Pool(pool::Pool),
}

/// A request's iovecs, owned by a queue slot and preallocated at open.
struct IovBuf(Vec<libc::iovec>);

// SAFETY: the raw pointers point into callers' memory, which the `BlockDevice::submit` contract
// keeps valid (and unaliased, for reads) until the request completes, whichever thread touches it.
unsafe impl Send for IovBuf {}

impl IovBuf {
    fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Replaces the contents with `segments` (at most the capacity: validated by the caller, so
    /// this never allocates).
    fn fill(&mut self, segments: &[Segment]) {
        self.0.clear();
        self.0.extend(segments.iter().map(|s| libc::iovec { iov_base: s.ptr.cast(), iov_len: s.len }));
    }
}

/// Requests with at most this many segments keep their iovecs in the slot itself.
const INLINE_SEGMENTS: usize = 2;

/// A request copied into a queue slot, to run on another thread (the thread pool's workers,
/// the adaptive engine's helpers) with [`Exec::execute`].
///
/// `repr(C)`, in this order, so that everything a request of up to [`INLINE_SEGMENTS`]
/// segments needs lies in its first 56 bytes: one cache line for the thread that runs it to
/// pull from the submitter's core (Rust's own order put `op` and `inline_len` on a second line).
#[repr(C)]
struct SlotReq {
    op: DeviceOp,
    /// How many of `inline` hold the request's iovecs (0: they are in `iov`).
    inline_len: u8,
    offset: u64,
    len: u64,
    /// The iovecs of small requests.
    inline: [libc::iovec; INLINE_SEGMENTS],
    iov: IovBuf,
}

// What a small request needs, before `iov`, fits one cache line.
const _: () = assert!(std::mem::offset_of!(SlotReq, iov) <= 64);

// SAFETY: as `IovBuf`'s: the iovecs point into callers' memory, which the submit contract keeps
// valid until the request completes, whichever thread runs it.
unsafe impl Send for SlotReq {}

impl SlotReq {
    /// An empty slot for requests of up to `max_segments` segments (allocated here, once).
    fn new(max_segments: usize) -> Self {
        let none = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        Self { op: DeviceOp::Flush, offset: 0, len: 0, inline: [none; INLINE_SEGMENTS], inline_len: 0, iov: IovBuf::with_capacity(max_segments) }
    }

    /// Copies `req` in (its segments validated against the slot's capacity by the caller).
    fn fill(&mut self, req: &DeviceRequest<'_>) {
        self.op = req.op;
        self.offset = req.offset;
        self.len = req.len;
        self.inline_len = 0;
        if (1..=INLINE_SEGMENTS).contains(&req.segments.len()) {
            for (v, s) in self.inline.iter_mut().zip(req.segments) {
                *v = libc::iovec { iov_base: s.ptr.cast(), iov_len: s.len };
            }
            self.inline_len = req.segments.len() as u8;
        } else {
            self.iov.fill(req.segments);
        }
    }

    /// Makes this a request of one segment, `iov`, the first of a run that
    /// [`SlotReq::extend_run`] grows.
    fn start_run(&mut self, op: DeviceOp, offset: u64, iov: libc::iovec) {
        self.op = op;
        self.offset = offset;
        self.len = iov.iov_len as u64;
        self.inline_len = 0;
        self.iov.0.clear();
        self.iov.0.push(iov);
    }

    /// Appends `iov`, the segment that follows this request's last byte; false (nothing
    /// changed) when the slot's iovecs are full.
    fn extend_run(&mut self, iov: libc::iovec) -> bool {
        if self.iov.0.len() == self.iov.0.capacity() {
            return false;
        }
        self.iov.0.push(iov);
        self.len += iov.iov_len as u64;
        true
    }

    /// The byte after the request's last.
    fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// Runs it.
    ///
    /// # Safety
    /// The request was submitted under the [`BlockDevice::submit`] contract and has not
    /// completed: its segments are valid (reads: unaliased).
    unsafe fn execute(&mut self, exec: &Exec) -> Result<(), DeviceError> {
        let iov = match self.inline_len {
            0 => &mut self.iov.0[..],
            n => &mut self.inline[..usize::from(n)],
        };
        // SAFETY: forwarded from the caller.
        unsafe { exec.execute(self.op, self.offset, self.len, iov) }
    }
}

/// Writeback mode: results of requests already executed, until polled.
struct InThread {
    table: Mutex<InThreadTable>,
}

struct InThreadTable {
    /// (generation, result held until polled).
    slots: Vec<(u16, Option<Result<(), DeviceError>>)>,
    free: Vec<u16>,
    iov: IovBuf,
}

fn lock_unpoisoned<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn make_ticket(index: usize, generation: u16) -> Ticket {
    Ticket((u32::from(generation) << 16) | (index as u32 & 0xffff))
}

fn split_ticket(ticket: Ticket) -> (usize, u16) {
    ((ticket.0 & 0xffff) as usize, (ticket.0 >> 16) as u16)
}

/// Results packed into an atomic byte (thread-pool slots).
fn encode_result(r: Result<(), DeviceError>) -> u8 {
    match r {
        Ok(()) => 0,
        Err(DeviceError::Io) => 1,
        Err(DeviceError::ReadOnly) => 2,
        Err(DeviceError::Invalid) => 3,
        Err(DeviceError::Unsupported) => 4,
        Err(DeviceError::NoSpace) => 5,
        Err(DeviceError::Timeout) => 6,
    }
}

fn decode_result(v: u8) -> Result<(), DeviceError> {
    match v {
        0 => Ok(()),
        2 => Err(DeviceError::ReadOnly),
        3 => Err(DeviceError::Invalid),
        4 => Err(DeviceError::Unsupported),
        5 => Err(DeviceError::NoSpace),
        6 => Err(DeviceError::Timeout),
        _ => Err(DeviceError::Io),
    }
}

fn open_error(path: &Path, what: &'static str, e: io::Error) -> FileError {
    let path = path.to_path_buf();
    match e.raw_os_error() {
        Some(libc::ENOENT) => FileError::NotFound { path },
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => FileError::PermissionDenied { path },
        _ => FileError::Io { path, what, source: e },
    }
}

impl HostFile {
    /// Opens `path` (a regular file or a block device) as a device. See the module docs for
    /// what each option does to [`DeviceInfo`].
    pub fn open(path: &Path, opts: &HostFileOptions<'_>) -> Result<HostFile, FileError> {
        if opts.force_share && !opts.read_only {
            return Err(FileError::InvalidOptions("force-share requires read-only"));
        }
        let queued = opts.mode == CacheMode::None || matches!(opts.engine, Engine::IoUring | Engine::Threads);
        if opts.mode == CacheMode::None && opts.engine == Engine::InThread {
            return Err(FileError::InvalidOptions("the in-thread engine is for writeback mode only"));
        }
        let depth = opts.queue_depth.max(1);
        if queued && depth > MAX_QUEUE_DEPTH {
            return Err(FileError::InvalidOptions("queue depth above 4096"));
        }
        // With O_NOATIME if asked (see `HostFileOptions::noatime`): the kernel refuses it
        // (EPERM) to a caller that does not own the file, which then opens it as usual.
        let open = |direct: bool| {
            let attempt = |noatime: bool| {
                let mut o = OpenOptions::new();
                o.read(true).write(!opts.read_only);
                o.custom_flags(if direct { libc::O_DIRECT } else { 0 } | if noatime { libc::O_NOATIME } else { 0 });
                o.open(path)
            };
            match attempt(opts.noatime) {
                Err(e) if opts.noatime && e.raw_os_error() == Some(libc::EPERM) => attempt(false),
                opened => opened,
            }
        };
        let want_direct = opts.mode == CacheMode::None;
        let (file, direct) = match open(want_direct) {
            Ok(f) => (f, want_direct),
            Err(e) if want_direct && e.raw_os_error() == Some(libc::EINVAL) => {
                if !opts.direct_fallback {
                    return Err(FileError::DirectUnsupported { path: path.to_path_buf() });
                }
                (open(false).map_err(|e| open_error(path, "open", e))?, false)
            }
            Err(e) => return Err(open_error(path, "open", e)),
        };
        let meta = file.metadata().map_err(|e| open_error(path, "stat", e))?;
        let is_blockdev = meta.file_type().is_block_device();
        if !is_blockdev && !meta.file_type().is_file() {
            return Err(FileError::NotAFile { path: path.to_path_buf() });
        }
        if is_blockdev && !opts.read_only && sys::blockdev_read_only(&file) {
            return Err(FileError::PermissionDenied { path: path.to_path_buf() });
        }

        let locked = Self::take_locks(&file, path, opts)?;

        let length = if is_blockdev { sys::blockdev_size(&file).map_err(|e| open_error(path, "get the size of", e))? } else { meta.len() };
        let (block_size, mem_alignment) = if direct {
            sys::probe_direct_alignment(&file, is_blockdev)
        } else if is_blockdev {
            (sys::blockdev_sector_size(&file).unwrap_or(512), 1)
        } else {
            (1, 1)
        };
        let capacity = length;
        let grow_align = if direct { direct_grow_align(&meta, block_size) } else { u64::from(block_size) };

        let exec = Exec::new(file, is_blockdev, !opts.read_only).map_err(|e| open_error(path, "allocate buffers for", e))?;
        let mut features = if opts.no_flush { DeviceFeatures::empty() } else { DeviceFeatures::FLUSH };
        if !opts.read_only {
            features |= DeviceFeatures::WRITE_ZEROES | DeviceFeatures::WRITE_ZEROES_UNMAP;
            if is_blockdev || exec.probe_punch(length) {
                features |= DeviceFeatures::DISCARD;
            }
        }
        let exec = Arc::new(exec);

        let mut info = DeviceInfo::new(capacity, block_size);
        info.read_only = opts.read_only;
        info.features = features;
        info.mem_alignment = mem_alignment;
        info.discard_alignment = block_size;
        let max_segments;
        let backend = if queued {
            info.max_transfer = MAX_TRANSFER_QUEUE.max(block_size);
            max_segments = MAX_SEGMENTS_QUEUE;
            info.queue_depth = depth;
            let ring = || uring::Uring::new(exec.clone(), depth, usize::from(max_segments));
            let pool = || {
                pool::Pool::new(exec.clone(), depth, usize::from(max_segments), opts.threads.max(1)).map_err(|e| FileError::Io {
                    path: path.to_path_buf(),
                    what: "start worker threads for",
                    source: e,
                })
            };
            match opts.engine {
                Engine::Threads => Backend::Pool(pool()?),
                Engine::IoUring => {
                    Backend::Uring(Box::new(ring().map_err(|e| FileError::Io { path: path.to_path_buf(), what: "set up io_uring for", source: e })?))
                }
                Engine::Auto | Engine::InThread => match ring() {
                    Ok(r) => Backend::Uring(Box::new(r)),
                    Err(_) => Backend::Pool(pool()?),
                },
            }
        } else {
            info.max_transfer = MAX_TRANSFER_IN_THREAD.max(block_size);
            max_segments = MAX_SEGMENTS_IN_THREAD;
            info.queue_depth = depth;
            if opts.engine == Engine::InThread {
                Backend::InThread(InThread {
                    table: Mutex::new(InThreadTable {
                        slots: vec![(0, None); usize::from(depth)],
                        free: (0..depth).rev().collect(),
                        iov: IovBuf::with_capacity(usize::from(max_segments)),
                    }),
                })
            } else {
                Backend::Adaptive(adaptive::Adaptive::new(exec.clone(), depth, usize::from(max_segments)))
            }
        };
        info.max_segments = max_segments;
        info.max_segment_size = info.max_transfer;
        if let Some(serial) = opts.serial {
            info = info.with_serial(serial);
        }
        Ok(HostFile { capacity: AtomicU64::new(info.capacity), grow_align, info, backend, direct, locked, exec })
    }

    /// QEMU's lock bytes for this open; `Ok(false)` when locking is off or unsupported (auto).
    fn take_locks(file: &File, path: &Path, opts: &HostFileOptions<'_>) -> Result<bool, FileError> {
        use lock::{DEFAULT_SHARED, PERM_ALL, PERM_CONSISTENT_READ, WRITER_PERM};
        if opts.locking == Locking::Off {
            return Ok(false);
        }
        let (perm, shared) = if opts.read_only {
            (PERM_CONSISTENT_READ, if opts.force_share { PERM_ALL } else { DEFAULT_SHARED })
        } else {
            (WRITER_PERM, DEFAULT_SHARED)
        };
        use std::os::fd::AsRawFd;
        match lock::apply(file.as_raw_fd(), perm, shared) {
            Ok(()) => Ok(true),
            Err(lock::LockError::Unsupported(_)) if opts.locking == Locking::Auto => Ok(false),
            Err(lock::LockError::Unsupported(e)) => Err(FileError::LockingUnsupported { path: path.to_path_buf(), source: io::Error::from_raw_os_error(e) }),
            Err(lock::LockError::Conflict { perm, shared }) => Err(FileError::Locked { path: path.to_path_buf(), perm, shared }),
            Err(lock::LockError::Os(e)) => Err(FileError::Io { path: path.to_path_buf(), what: "lock", source: io::Error::from_raw_os_error(e) }),
        }
    }

    /// Whether the file is open with `O_DIRECT`.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Whether QEMU's image locks are held.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// How requests execute.
    pub fn engine(&self) -> ActiveEngine {
        match self.backend {
            Backend::InThread(_) => ActiveEngine::InThread,
            Backend::Adaptive(_) => ActiveEngine::Adaptive,
            Backend::Uring(_) => ActiveEngine::IoUring,
            Backend::Pool(_) => ActiveEngine::Threads,
        }
    }

    /// Where the requests ran so far, for the adaptive engine ([`ActiveEngine::Adaptive`]).
    pub fn engine_counts(&self) -> Option<EngineCounts> {
        match &self.backend {
            Backend::Adaptive(a) => Some(a.counts()),
            _ => None,
        }
    }

    /// Requests submitted and not yet complete (the in-thread engine: always 0).
    pub fn in_flight(&self) -> usize {
        match &self.backend {
            Backend::InThread(_) => 0,
            Backend::Adaptive(a) => a.in_flight(),
            Backend::Uring(u) => u.in_flight(),
            Backend::Pool(p) => p.in_flight(),
        }
    }

    /// The last request the OS refused (operation, range, errno), if any: the detail behind a
    /// [`DeviceError`] this file returned.
    pub fn last_os_failure(&self) -> Option<OsFailure> {
        self.exec.failures.get()
    }

    /// The adaptive engine's mode: `Some(true)` while it shares requests with helper threads.
    #[cfg(test)]
    fn adaptive_shared(&self) -> Option<bool> {
        match &self.backend {
            Backend::Adaptive(a) => Some(a.is_shared()),
            _ => None,
        }
    }

    /// Blocks until no request handed to the kernel (or a worker) is still running.
    fn wait_idle(&self) {
        match &self.backend {
            Backend::InThread(_) => {}
            Backend::Adaptive(a) => a.wait_idle(),
            Backend::Uring(u) => u.wait_idle(),
            Backend::Pool(p) => p.wait_idle(),
        }
    }
}

/// What O_DIRECT growth rounds to: the request alignment, the page size and the file system's
/// block size (`st_blksize`, if it is a plausible power of two), whichever is largest, and at
/// least 4 KiB.
fn direct_grow_align(meta: &std::fs::Metadata, block_size: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: sysconf has no memory effects.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let fs_block = Some(meta.blksize()).filter(|b| b.is_power_of_two() && *b <= 1 << 20).unwrap_or(4096);
    u64::from(block_size).max(page).max(fs_block).max(4096)
}

impl InThread {
    /// Runs the request now and keeps its result for `poll`.
    ///
    /// # Safety
    /// As [`BlockDevice::submit`].
    unsafe fn submit(&self, exec: &Exec, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        let mut guard = lock_unpoisoned(&self.table);
        let t = &mut *guard;
        let index = usize::from(t.free.pop().ok_or(SubmitError::Busy)?);
        t.iov.fill(req.segments);
        // SAFETY: the submit contract keeps every segment valid (reads: unaliased) until `poll`
        // reports this ticket, which is after this call returns.
        let result = unsafe { exec.execute(req.op, req.offset, req.len, &mut t.iov.0) };
        let slot = &mut t.slots[index];
        slot.0 = slot.0.wrapping_add(1);
        slot.1 = Some(result);
        Ok(make_ticket(index, slot.0))
    }

    /// Runs the request now, with no slot (see [`BlockDevice::rw_now`]).
    ///
    /// # Safety
    /// As [`BlockDevice::rw_now`].
    unsafe fn rw_now(&self, exec: &Exec, req: &DeviceRequest<'_>) -> Result<(), DeviceError> {
        let mut t = lock_unpoisoned(&self.table);
        t.iov.fill(req.segments);
        // SAFETY: the caller keeps every segment valid (reads: unaliased) during this call.
        unsafe { exec.execute(req.op, req.offset, req.len, &mut t.iov.0) }
    }

    fn poll(&self, ticket: Ticket) -> Result<(), DeviceError> {
        let (index, generation) = split_ticket(ticket);
        let mut t = lock_unpoisoned(&self.table);
        let Some(slot) = t.slots.get_mut(index).filter(|s| s.0 == generation) else {
            return Err(DeviceError::Invalid);
        };
        let result = slot.1.take().ok_or(DeviceError::Invalid)?;
        t.free.push(index as u16);
        result
    }
}

impl BlockDevice for HostFile {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    unsafe fn submit(&self, req: &DeviceRequest<'_>) -> Result<Ticket, SubmitError> {
        self.info.check_within(req, self.capacity.load(Ordering::Acquire)).map_err(SubmitError::Invalid)?;
        match &self.backend {
            // SAFETY: forwarded from the caller.
            Backend::InThread(b) => unsafe { b.submit(&self.exec, req) },
            // SAFETY: forwarded from the caller.
            Backend::Adaptive(b) => unsafe { b.submit(req) },
            // SAFETY: forwarded from the caller.
            Backend::Uring(b) => unsafe { b.submit(req) },
            // SAFETY: forwarded from the caller.
            Backend::Pool(b) => unsafe { b.submit(req) },
        }
    }

    unsafe fn rw_now(&self, req: &DeviceRequest<'_>) -> Option<Result<(), DeviceError>> {
        // Whether it runs now first: a request that will be queued is checked by `submit`.
        if !self.runs_now() {
            return None;
        }
        if let Err(e) = self.info.check_within(req, self.capacity.load(Ordering::Acquire)) {
            return Some(Err(e));
        }
        match &self.backend {
            // SAFETY: forwarded from the caller.
            Backend::InThread(b) => Some(unsafe { b.rw_now(&self.exec, req) }),
            // SAFETY: forwarded from the caller.
            Backend::Adaptive(b) => unsafe { b.rw_now(req) },
            Backend::Uring(_) | Backend::Pool(_) => None,
        }
    }

    fn runs_now(&self) -> bool {
        match &self.backend {
            Backend::InThread(_) => true,
            Backend::Adaptive(a) => a.runs_now(),
            Backend::Uring(_) | Backend::Pool(_) => false,
        }
    }

    fn poll(&self, ticket: Ticket, cx: &mut Context<'_>) -> Poll<Result<(), DeviceError>> {
        let done = match &self.backend {
            Backend::InThread(b) => Some(b.poll(ticket)),
            Backend::Adaptive(b) => return b.poll(ticket, cx),
            Backend::Uring(b) => b.poll(ticket),
            Backend::Pool(b) => b.poll(ticket),
        };
        match done {
            Some(result) => Poll::Ready(result),
            None => {
                // Polled device: no interrupt will come, so ask to be polled again.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Acquire)
    }

    /// Extends the file (sparse) to `min_capacity` rounded up to the block size (with O_DIRECT:
    /// to the file system block and the page). Block devices and read-only files do not grow.
    ///
    /// With O_DIRECT a file that ends inside a file system block (as qemu-img leaves a fresh
    /// qcow2 file) is extended only once no request is in flight. Extending it makes the file
    /// system zero the rest of that block through the page cache (ext4:
    /// `ext4_block_truncate_page`); a direct write into the block still in flight then cannot
    /// drop the now dirty page when it completes, and the kernel records `EIO` for the next
    /// `fsync` ("Page cache invalidation failure on direct I/O" in the kernel log). Growing to
    /// whole blocks means this happens at most once per open.
    fn grow(&self, min_capacity: u64) -> Result<u64, DeviceError> {
        let now = self.capacity();
        if min_capacity <= now {
            return Ok(now);
        }
        if self.info.read_only {
            return Err(DeviceError::ReadOnly);
        }
        if self.exec.is_blockdev {
            return Err(DeviceError::NoSpace);
        }
        let new = min_capacity.checked_next_multiple_of(self.grow_align).ok_or(DeviceError::NoSpace)?;
        if self.direct && !now.is_multiple_of(self.grow_align) {
            self.wait_idle();
        }
        self.exec.file.set_len(new).map_err(|e| {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            self.exec.failures.record("grow", new, 0, errno);
            match errno {
                libc::ENOSPC | libc::EFBIG => DeviceError::NoSpace,
                _ => DeviceError::Io,
            }
        })?;
        self.capacity.store(new, Ordering::Release);
        Ok(new)
    }

    fn unplug(&self) {
        match &self.backend {
            Backend::InThread(_) => {}
            Backend::Adaptive(b) => b.unplug(),
            Backend::Uring(b) => b.unplug(),
            Backend::Pool(b) => b.unplug(),
        }
    }
}
