//! The block layer's error type: one small enum, every variant documented, carrying enough
//! context to act on. Nothing read from a device, an image or a caller panics; it ends up here.

use core::fmt;

use crate::dev::DeviceError;
use crate::options::{OptionsErrorKind, ValueError};

/// A block-layer error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A leaf device failed the request.
    Device(DeviceError),
    /// The request reaches past the end of the node.
    OutOfRange {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// The node's size.
        size: u64,
    },
    /// A write-type request on a read-only node or backend.
    ReadOnly,
    /// A write would put another format's header into the first sector of a raw image whose
    /// format was probed (QEMU's `EPERM` from `raw_co_pwritev`): the next probe would open it
    /// as that format. Naming the format (`driver=raw`) lifts the restriction.
    ProbedRawHeader,
    /// Attaching a user or child would break another's permissions (a second writer, say).
    PermissionConflict {
        /// What could not be granted or shared.
        what: &'static str,
    },
    /// A fixed capacity ran out where waiting is not possible (graph nodes at open time, say).
    NoSpace {
        /// Which capacity.
        what: &'static str,
    },
    /// No driver of that name is in the driver table.
    UnknownDriver,
    /// No device or node has that name.
    NotFound,
    /// The options do not parse or do not fit the driver.
    BadOptions {
        /// What went wrong in the grammar (or [`OptionsErrorKind::BadValue`]).
        kind: OptionsErrorKind,
        /// Byte offset in the options text, where known.
        offset: usize,
    },
    /// An option is missing or has a value the driver cannot use.
    BadOption {
        /// The option.
        key: &'static str,
        /// Why.
        why: &'static str,
    },
    /// The operation or feature is not supported here.
    Unsupported(&'static str),
    /// A stale or unknown node id.
    BadNode,
    /// A format-on-format file child, a chain deeper than the documented bound, or a loop.
    BadGraph(&'static str),
    /// The image's header cannot be used: bad magic, unknown version, a field out of range, a
    /// table misplaced (unaligned, overlapping the header or another table, past the end of the
    /// file) or a size that contradicts the header or the file. Found at open; nothing was read
    /// through the image.
    BadImage {
        /// Which check failed.
        what: &'static str,
    },
    /// Metadata met while reading contradicts the format: an L1/L2 or refcount entry unaligned,
    /// with reserved bits set, past the end of the file or pointing into metadata; a compressed
    /// cluster that starts past the end of the file or does not decode; a contradictory
    /// subcluster bitmap. The request fails; other ranges of the image stay readable.
    Corrupt {
        /// Which check failed.
        what: &'static str,
        /// Offset in the image file of the offending entry or structure.
        offset: u64,
    },
    /// A backing or data-file name was refused: too long, not UTF-8, with a protocol prefix
    /// (`json:`, `nbd:`), absolute or escaping the allowed directory tree, or unknown to the
    /// device catalog.
    BadName {
        /// Why.
        what: &'static str,
    },
    /// An error a `blkdebug` rule injected, with the errno it names (QEMU's default `EIO`, 5;
    /// `ENOSPC`, 28; ...).
    Injected {
        /// The errno.
        errno: u16,
    },
    /// `blkverify`: the image under test and the reference read differently.
    Mismatch {
        /// Where the read started.
        offset: u64,
        /// Its length.
        len: u64,
        /// The first byte that differs.
        at: u64,
    },
}

impl From<DeviceError> for Error {
    fn from(e: DeviceError) -> Self {
        Error::Device(e)
    }
}

impl From<crate::options::OptionsError<'_>> for Error {
    fn from(e: crate::options::OptionsError<'_>) -> Self {
        Error::BadOptions { kind: e.kind, offset: e.offset }
    }
}

impl Error {
    /// A [`Error::BadOptions`] for a value that could not be interpreted.
    pub fn bad_value(e: ValueError) -> Self {
        Error::BadOptions { kind: OptionsErrorKind::BadValue(e), offset: 0 }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Device(e) => write!(f, "device: {e}"),
            Error::OutOfRange { offset, len, size } => {
                write!(f, "request of {len} bytes at offset {offset} is beyond the end ({size} bytes)")
            }
            Error::ReadOnly => f.write_str("read-only"),
            Error::ProbedRawHeader => f.write_str(
                "refusing to write an image header into block 0 of a raw image whose format was probed (name the format: driver=raw)",
            ),
            Error::PermissionConflict { what } => write!(f, "permission conflict: {what}"),
            Error::NoSpace { what } => write!(f, "out of {what}"),
            Error::UnknownDriver => f.write_str("unknown driver"),
            Error::NotFound => f.write_str("no such device or node"),
            Error::BadOptions { kind, offset } => write!(f, "bad options at byte {offset}: {kind:?}"),
            Error::BadOption { key, why } => write!(f, "option \"{key}\": {why}"),
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::BadNode => f.write_str("stale or unknown node id"),
            Error::BadGraph(what) => write!(f, "invalid graph: {what}"),
            Error::BadImage { what } => write!(f, "invalid image: {what}"),
            Error::Injected { errno } => write!(f, "injected error (errno {errno})"),
            Error::Mismatch { offset, len, at } => write!(f, "blkverify: read offset={offset} bytes={len} contents mismatch at offset {at}"),
            Error::Corrupt { what, offset } => write!(f, "corrupt image: {what} (at file offset {offset:#x})"),
            Error::BadName { what } => write!(f, "refused file name: {what}"),
        }
    }
}

/// Result with the block layer's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;
