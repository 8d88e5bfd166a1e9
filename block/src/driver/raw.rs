//! The `raw` format: the file child's bytes as they are, optionally a window of them
//! (`offset`, `size`), as QEMU's `block/raw-format.c`.

use super::{Driver, DriverCaps, DriverDesc, DriverId, Mapping};
use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::{NodeId, Pass, Role};
use crate::options::OptionsView;

/// The descriptor.
pub static RAW: DriverDesc = DriverDesc {
    name: "raw",
    id: DriverId::Raw,
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

impl Driver for Raw {
    type Pending = core::convert::Infallible;

    async fn open(io: &Io<'_, '_>, file: Option<NodeId>, opts: &OptionsView<'_, '_>, _read_only: bool) -> Result<Self> {
        let file = file.ok_or(Error::BadOption { key: "file", why: "missing" })?;
        Self::window(opts, io.node(file)?.size())
    }

    fn size(&self) -> u64 {
        self.size
    }

    /// Everything is in the file child, shifted by the window's offset: reads, writes and
    /// metadata I/O pass through without the driver.
    fn pass(&self) -> Option<Pass> {
        Some(Pass { role: Role::File, offset: self.offset })
    }

    async fn map(&self, _io: &Io<'_, '_>, _node: NodeId, offset: u64, len: u64) -> Result<Mapping> {
        Ok(Mapping::Data { role: Role::File, offset: self.offset + offset, len, writable: true })
    }

    fn map_now(&self, offset: u64, len: u64) -> Option<Mapping> {
        Some(Mapping::Data { role: Role::File, offset: self.offset + offset, len, writable: true })
    }
}

impl Raw {
    /// Reads `offset` and `size` (defaults: 0 and the rest of the file) and checks the window
    /// lies inside the file.
    pub fn window(opts: &OptionsView<'_, '_>, file_size: u64) -> Result<Self> {
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
}
