//! The `raw` format: the file child's bytes as they are, optionally a window of them
//! (`offset`, `size`), as QEMU's `block/raw-format.c`.

use super::{DriverCaps, DriverDesc, Mapping};
use crate::error::{Error, Result};
use crate::graph::Role;
use crate::options::OptionsView;

/// The descriptor.
pub static RAW: DriverDesc = DriverDesc {
    name: "raw",
    caps: DriverCaps::FORMAT.union(DriverCaps::WRITE).union(DriverCaps::TRANSLATION_ONLY),
    probe: Some(probe),
    options: &["offset", "size"],
};

/// Raw claims anything, with the lowest score.
fn probe(_head: &[u8]) -> u32 {
    1
}

/// A window `[offset, offset + size)` of the file child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raw {
    offset: u64,
    size: u64,
}

impl Raw {
    /// Reads `offset` and `size` (defaults: 0 and the rest of the file) and checks the window
    /// lies inside the file.
    pub fn open(opts: &OptionsView<'_, '_>, file_size: u64) -> Result<Self> {
        let offset = match opts.get("offset") {
            Some(v) => v.parse_size().map_err(Error::bad_value)?,
            None => 0,
        };
        if offset > file_size {
            return Err(Error::BadOption { key: "offset", why: "beyond the end of the file" });
        }
        let size = match opts.get("size") {
            Some(v) => v.parse_size().map_err(Error::bad_value)?,
            None => file_size - offset,
        };
        if size > file_size - offset {
            return Err(Error::BadOption { key: "size", why: "the window reaches beyond the end of the file" });
        }
        // As QEMU: a window of whole sectors, so nothing rounds up past its end.
        if opts.get("size").is_some() && !size.is_multiple_of(512) {
            return Err(Error::BadOption { key: "size", why: "not a multiple of 512" });
        }
        Ok(Self { offset, size })
    }

    /// The window's size: the node's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Everything is data in the file child, shifted by the window's offset.
    pub fn map(&self, offset: u64, len: u64) -> Mapping {
        Mapping::Data { role: Role::File, offset: self.offset + offset, len, writable: true }
    }
}
