//! The `blkverify` filter (QEMU's `block/blkverify.c`): the image under test (child `test`)
//! and a reference copy (child `raw`, QEMU's name) side by side. Reads go to both and are
//! compared — a difference fails the read with [`crate::Error::Mismatch`] naming the first
//! differing byte (QEMU prints the same words and exits) — and writes, write-zeroes and
//! discards go to both. The node passes to `test` for everything else (block status, sizes);
//! the reads and writes to both are in [`crate::path::verify`]. The graph's open makes the
//! `raw` subtree and links it in role [`Role::Reference`].
//!
//! Below a format (`driver=qcow2,file.driver=blkverify,file.test.…,file.raw.…`, `raw` a byte
//! copy of the image file) the node's gate ([`Gate::Verify`]) does the same to the format's own
//! I/O — metadata reads compared, writes repeated on the reference — and to the data reads the
//! walk resolves through it ([`crate::io::verify`]).

use super::{filter, Driver, DriverDesc, DriverId, Mapping};
use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::{Gate, NodeId, Pass, Role};
use crate::options::OptionsView;

/// The options key of the image under test (the node's file child).
pub const CHILD_KEY: &str = "test";
/// The options key of the reference.
pub const REFERENCE_KEY: &str = "raw";

/// The descriptor.
pub static BLKVERIFY: DriverDesc = DriverDesc {
    name: "blkverify",
    id: DriverId::Blkverify,
    caps: filter::CAPS,
    probe: None,
    options: &[REFERENCE_KEY, CHILD_KEY],
};

/// An open blkverify node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blkverify {
    size: u64,
}

impl Driver for Blkverify {
    type Pending = core::convert::Infallible;

    async fn open(io: &Io<'_, '_>, file: Option<NodeId>, _opts: &OptionsView<'_, '_>, _read_only: bool) -> Result<Self> {
        let file = file.ok_or(Error::BadOption { key: "test", why: "missing" })?;
        Ok(Self { size: io.node(file)?.size() })
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn verify_against(&self) -> Option<Role> {
        Some(Role::Reference)
    }

    fn gate(&self) -> Gate {
        Gate::Verify
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
