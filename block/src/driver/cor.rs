//! The `copy-on-read` filter (QEMU's `block/copy-on-read.c`): passes every byte to its `file`
//! child, and a read the child serves from its backing chain is also written into the child
//! (whole clusters, so the write needs no copy-on-write), so the next read finds it there.
//! QEMU's `bottom=NODE` limits the layers that count: data found below `bottom` is read but not
//! copied. The copying itself is in [`crate::path::cor`] (the walk moves data; a driver
//! cannot): this node only says where its child is and how deep to copy from.

use super::{filter, Driver, DriverDesc, DriverId, Mapping};
use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::{NodeId, Pass, Role, MAX_DEPTH};
use crate::options::OptionsView;

/// The descriptor.
pub static COPY_ON_READ: DriverDesc = DriverDesc {
    name: "copy-on-read",
    id: DriverId::CopyOnRead,
    caps: filter::CAPS,
    probe: None,
    options: &["bottom"],
};

/// An open copy-on-read node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOnRead {
    size: u64,
    /// Backing links below the child down to the deepest layer copied from (the `bottom` node;
    /// the whole chain without one).
    depth: u16,
}

impl Driver for CopyOnRead {
    type Pending = core::convert::Infallible;

    async fn open(io: &Io<'_, '_>, file: Option<NodeId>, opts: &OptionsView<'_, '_>, read_only: bool) -> Result<Self> {
        let file = file.ok_or(Error::BadOption { key: "file", why: "missing" })?;
        if read_only {
            return Err(Error::BadOption { key: "read-only", why: "copy-on-read writes what it reads: it needs a writable child" });
        }
        let depth = match opts.get("bottom") {
            None => u16::MAX,
            Some(v) => {
                let name = v.as_str().ok_or(Error::BadOption { key: "bottom", why: "names contain no commas" })?;
                bottom_depth(io, file, name)?
            }
        };
        Ok(Self { size: io.node(file)?.size(), depth })
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn copy_on_read(&self) -> Option<u16> {
        Some(self.depth)
    }

    fn pass(&self) -> Option<Pass> {
        Some(filter::PASS)
    }

    async fn map(&self, _io: &Io<'_, '_>, _node: NodeId, offset: u64, len: u64) -> Result<Mapping> {
        Ok(filter::map(offset, len))
    }

    fn map_now(&self, offset: u64, len: u64) -> Option<Mapping> {
        Some(filter::map(offset, len))
    }
}

/// Backing links from `top` down to the node named `name` (QEMU: `bottom` must be in the
/// child's backing chain, below the child). A backing image opened from its name has no
/// `node-name` of its own, so its file's name (as the image above stores it) names it too.
fn bottom_depth(io: &Io<'_, '_>, top: NodeId, name: &str) -> Result<u16> {
    let not_found = Error::BadOption { key: "bottom", why: "not a node of the child's backing chain" };
    let mut cur = top;
    let mut depth = 0u16;
    for _ in 0..MAX_DEPTH * 64 {
        let node = io.node(cur)?;
        // The backing image's node, or its file by the name the image above stores for it.
        let file_named = || node.child(Role::File).and_then(|f| io.node(f).ok()).is_some_and(|f| f.name == name);
        if depth > 0 && (node.name == name || file_named()) {
            return Ok(depth);
        }
        cur = match (node.child(Role::Backing), node.pass) {
            (Some(b), _) => {
                depth = depth.checked_add(1).ok_or(not_found)?;
                b
            }
            // Filters between formats: down to what they pass to.
            (None, Some(pass)) => node.child(pass.role).ok_or(not_found)?,
            (None, None) => return Err(not_found),
        };
    }
    Err(not_found)
}
