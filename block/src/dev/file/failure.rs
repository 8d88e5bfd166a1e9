//! The last request a host file's OS refused, kept for error messages: a [`DeviceError`] says
//! only what kind of failure reached the block layer; [`OsFailure`] says which operation, where,
//! and the OS error number (`flush: Input/output error (os error 5)`).

use std::fmt;
use std::io;
use std::sync::Mutex;

use super::lock_unpoisoned;
use crate::dev::{DeviceError, DeviceOp};

/// How an OS error number reaches the block layer.
pub(super) fn map_errno(e: i32) -> DeviceError {
    match e {
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => DeviceError::NoSpace,
        libc::EROFS | libc::EBADF | libc::EPERM => DeviceError::ReadOnly,
        libc::EINVAL => DeviceError::Invalid,
        libc::EOPNOTSUPP | libc::ENOSYS | libc::ENOTTY => DeviceError::Unsupported,
        libc::ETIMEDOUT => DeviceError::Timeout,
        _ => DeviceError::Io,
    }
}

/// One request the OS refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OsFailure {
    /// What was asked: `read`, `write`, `flush`, `discard`, `write-zeroes` or `grow`.
    pub op: &'static str,
    /// Byte offset (for `grow`, the size asked for).
    pub offset: u64,
    /// Bytes (0 for `flush` and `grow`).
    pub len: u64,
    /// The OS error number.
    pub errno: i32,
}

impl fmt::Display for OsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = io::Error::from_raw_os_error(self.errno);
        match self.op {
            "flush" => write!(f, "flush: {e}"),
            "grow" => write!(f, "grow to {} bytes: {e}", self.offset),
            op => write!(f, "{op} at {}+{}: {e}", self.offset, self.len),
        }
    }
}

/// The name [`OsFailure::op`] gives `op`.
pub(super) fn op_name(op: DeviceOp) -> &'static str {
    match op {
        DeviceOp::Read => "read",
        DeviceOp::Write => "write",
        DeviceOp::Flush => "flush",
        DeviceOp::Discard => "discard",
        DeviceOp::WriteZeroes { .. } => "write-zeroes",
    }
}

/// The last [`OsFailure`] of one file (any engine, any thread).
#[derive(Default)]
pub(super) struct LastFailure(Mutex<Option<OsFailure>>);

impl LastFailure {
    /// Records a refused request.
    pub(super) fn record(&self, op: &'static str, offset: u64, len: u64, errno: i32) {
        *lock_unpoisoned(&self.0) = Some(OsFailure { op, offset, len, errno });
    }

    /// Records a refused request and returns what the block layer sees of it.
    pub(super) fn note(&self, op: &'static str, offset: u64, len: u64, errno: i32) -> DeviceError {
        self.record(op, offset, len, errno);
        map_errno(errno)
    }

    /// The last one recorded.
    pub(super) fn get(&self) -> Option<OsFailure> {
        *lock_unpoisoned(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    #[test]
    fn names_the_operation_range_and_errno() {
        let last = LastFailure::default();
        assert_eq!(last.get(), None);
        assert_eq!(last.note(op_name(DeviceOp::WriteZeroes { unmap: false }), 12345, 4096, libc::EINVAL), DeviceError::Invalid);
        let f = last.get().unwrap();
        assert_eq!(f.to_string(), format!("write-zeroes at 12345+4096: {}", io::Error::from_raw_os_error(libc::EINVAL)));
        assert_eq!(last.note("flush", 0, 0, libc::EIO), DeviceError::Io);
        assert_eq!(last.get().unwrap().to_string(), format!("flush: {}", io::Error::from_raw_os_error(libc::EIO)));
        last.record("grow", 1 << 20, 0, libc::EFBIG);
        assert!(last.get().unwrap().to_string().starts_with("grow to 1048576 bytes: "));
    }
}
