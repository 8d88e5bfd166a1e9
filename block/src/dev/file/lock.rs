//! QEMU's image locks (`block/file-posix.c`: `raw_apply_lock_bytes`, `raw_check_lock_bytes`), so
//! Strata and QEMU processes see each other.
//!
//! QEMU takes shared open-file-description locks (`F_OFD_SETLK`, `F_RDLCK`) on single bytes of
//! the image: byte `100 + i` for each permission `i` it holds and byte `200 + i` for each
//! permission it does not share with other users. It then tests (`F_OFD_GETLK` with `F_WRLCK`)
//! byte `200 + i` for each permission it wants — someone refuses to share it — and byte `100 + i`
//! for each permission it does not share — someone holds it. The locks live as long as the open
//! file description, so closing the file releases them.

#![allow(unsafe_code)] // reason: fcntl(F_OFD_*) takes a pointer to a `struct flock`

use std::os::fd::{AsRawFd, RawFd};

use super::sys::{errno, Exec};

/// `BLK_PERM_CONSISTENT_READ`: the reader sees a self-consistent image.
pub const PERM_CONSISTENT_READ: u8 = 1 << 0;
/// `BLK_PERM_WRITE`: changes the visible contents.
pub const PERM_WRITE: u8 = 1 << 1;
/// `BLK_PERM_WRITE_UNCHANGED`: writes that keep the visible contents.
pub const PERM_WRITE_UNCHANGED: u8 = 1 << 2;
/// `BLK_PERM_RESIZE`: changes the size.
pub const PERM_RESIZE: u8 = 1 << 3;
/// `BLK_PERM_ALL`.
pub const PERM_ALL: u8 = 0x0f;

/// What a writable open holds (QEMU's defaults for a writer): reads, writes, resizes.
pub const WRITER_PERM: u8 = PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE;
/// What a writable (or plain read-only) open shares with others: reading and writes that keep
/// the contents.
pub const DEFAULT_SHARED: u8 = PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED;

/// First byte of the "holds permission" locks (`RAW_LOCK_PERM_BASE`).
const PERM_BASE: i64 = 100;
/// First byte of the "does not share permission" locks (`RAW_LOCK_SHARED_BASE`).
const SHARED_BASE: i64 = 200;

/// QEMU's name of permission bit `i` (`bdrv_perm_names`).
pub fn perm_name(i: u32) -> &'static str {
    match i {
        0 => "consistent read",
        1 => "write",
        2 => "write unchanged",
        3 => "resize",
        _ => "unknown",
    }
}

/// Why the locks could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    /// The kernel or file system has no OFD locks (`errno` given).
    Unsupported(i32),
    /// Another process conflicts. `shared`: it holds `perm` which we do not share (QEMU's
    /// "Failed to get shared \"write\" lock"); otherwise it does not share `perm`, which we want
    /// ("Failed to get \"write\" lock").
    Conflict {
        /// QEMU's name of the permission.
        perm: &'static str,
        /// Which of the two messages applies.
        shared: bool,
    },
    /// Locking failed otherwise (`errno` given).
    Os(i32),
}

fn flock(kind: libc::c_int, byte: i64) -> libc::flock {
    // SAFETY: `flock` is plain data; all-zero is a valid value, fixed up below.
    let mut fl: libc::flock = unsafe { core::mem::zeroed() };
    fl.l_type = kind as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = byte as _;
    fl.l_len = 1;
    fl
}

/// Takes a shared lock on one byte (`qemu_lock_fd`).
fn lock_byte(fd: RawFd, byte: i64) -> Result<(), i32> {
    let mut fl = flock(libc::F_RDLCK, byte);
    loop {
        // SAFETY: F_OFD_SETLK reads the `flock` the pointer points at.
        let r = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &mut fl as *mut libc::flock) };
        if r == 0 {
            return Ok(());
        }
        match errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        // The last user of the file is gone (every engine has finished its requests): release
        // the image locks explicitly before the descriptor closes.
        release(self.file.as_raw_fd());
    }
}

/// Drops every lock this open file description holds, ahead of closing it.
///
/// Closing alone is not enough in a process that starts other programs: between `fork` and
/// `exec` a child shares this open file description (the descriptor is close-on-exec, but not
/// yet closed), so the locks would outlive the close by that window, and a `qemu-img` started
/// right after the close could find the image still locked. Errors are ignored (there is
/// nothing left to do about them when closing).
pub fn release(fd: RawFd) {
    let mut fl = flock(libc::F_UNLCK, 0);
    fl.l_len = 0; // to the end of the file, however far it grows
    loop {
        // SAFETY: F_OFD_SETLK reads the `flock` the pointer points at.
        let r = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &mut fl as *mut libc::flock) };
        if r == 0 || errno() != libc::EINTR {
            return;
        }
    }
}

/// Whether another open file description holds a lock on `byte` that an exclusive lock would
/// conflict with (`qemu_lock_fd_test(fd, byte, 1, true)`).
pub(super) fn byte_taken(fd: RawFd, byte: i64) -> Result<bool, i32> {
    let mut fl = flock(libc::F_WRLCK, byte);
    loop {
        // SAFETY: F_OFD_GETLK reads and rewrites the `flock` the pointer points at.
        let r = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl as *mut libc::flock) };
        if r == 0 {
            return Ok(i32::from(fl.l_type) != libc::F_UNLCK);
        }
        match errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

fn is_unsupported(e: i32) -> bool {
    matches!(e, libc::EINVAL | libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS)
}

/// Takes the lock bytes for holding `perm` while sharing `shared`, then checks for conflicts,
/// exactly as QEMU's permission update does (`raw_handle_perm_lock`, `RAW_PL_PREPARE`). On a
/// conflict the bytes already taken stay locked until the file is closed, which the caller does.
pub fn apply(fd: RawFd, perm: u8, shared: u8) -> Result<(), LockError> {
    let os = |e: i32| if is_unsupported(e) { LockError::Unsupported(e) } else { LockError::Os(e) };
    for i in 0..4 {
        let bit = 1u8 << i;
        if perm & bit != 0 {
            lock_byte(fd, PERM_BASE + i64::from(i)).map_err(os)?;
        }
    }
    for i in 0..4 {
        let bit = 1u8 << i;
        if shared & bit == 0 {
            lock_byte(fd, SHARED_BASE + i64::from(i)).map_err(os)?;
        }
    }
    for i in 0..4u32 {
        let bit = 1u8 << i;
        if perm & bit != 0 && byte_taken(fd, SHARED_BASE + i64::from(i)).map_err(os)? {
            return Err(LockError::Conflict { perm: perm_name(i), shared: false });
        }
    }
    for i in 0..4u32 {
        let bit = 1u8 << i;
        if shared & bit == 0 && byte_taken(fd, PERM_BASE + i64::from(i)).map_err(os)? {
            return Err(LockError::Conflict { perm: perm_name(i), shared: true });
        }
    }
    Ok(())
}
