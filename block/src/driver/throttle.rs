//! The `throttle` filter (QEMU's `block/throttle.c`): passes every byte to its `file` child
//! unchanged, after holding each read, write, write-zeroes and discard in the throttle group
//! it names (`throttle-group=G`, a group the graph was given with
//! [`crate::Graph::add_throttle_group`]). Flushes are not throttled; a drain lets held requests
//! go at once (they are still charged, as QEMU charges them).
//!
//! Requests that enter the node are held by the walk ([`Driver::admit`]); below a format
//! (QEMU's `file.driver=throttle`) the format's own I/O on its file — metadata reads and
//! writes, data it writes through the child — is held too ([`Gate::Throttle`], consulted by
//! [`crate::io::child_io`]), as QEMU's formats do all their I/O through their `file` child. A
//! format's metadata I/O below a format does not pass through a filter above it.

use super::{filter, Driver, DriverDesc, DriverId, Mapping};
use crate::error::{Error, Result};
use crate::io::throttle::Direction;
use crate::io::tracked::ReqKind;
use crate::io::Io;
use crate::node::{Gate, NodeId, Pass};
use crate::options::OptionsView;

/// The descriptor.
pub static THROTTLE: DriverDesc = DriverDesc {
    name: "throttle",
    id: DriverId::Throttle,
    caps: filter::CAPS,
    probe: None,
    options: &["throttle-group"],
};

/// An open throttle node: its size, and its place in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttle {
    size: u64,
    group: usize,
    member: usize,
}

impl Driver for Throttle {
    type Pending = core::convert::Infallible;

    const ADMITS: bool = true;

    async fn open(io: &Io<'_, '_>, file: Option<NodeId>, opts: &OptionsView<'_, '_>, _read_only: bool) -> Result<Self> {
        let file = file.ok_or(Error::BadOption { key: "file", why: "missing" })?;
        let name = opts.get("throttle-group").ok_or(Error::BadOption { key: "throttle-group", why: "required" })?;
        let mut buf = [0u8; crate::io::throttle::group::MAX_NAME];
        let name = name.unescape_into(&mut buf).map_err(|_| Error::BadOption { key: "throttle-group", why: "no throttle group of that name" })?;
        let (group, g) = io.throttle_group(name).ok_or(Error::BadOption { key: "throttle-group", why: "no throttle group of that name" })?;
        if io.clock.is_none() {
            return Err(Error::BadOption { key: "throttle-group", why: "throttling needs a clock (Graph::set_clock)" });
        }
        let member = g.join()?;
        Ok(Self { size: io.node(file)?.size(), group, member })
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn pass(&self) -> Option<Pass> {
        Some(filter::PASS)
    }

    fn gate(&self) -> Gate {
        Gate::Throttle { group: self.group, member: self.member }
    }

    async fn admit(&self, io: &Io<'_, '_>, _node: NodeId, kind: ReqKind, _offset: u64, len: u64) -> Result<()> {
        let dir = match kind {
            ReqKind::Read => Direction::Read,
            ReqKind::Write | ReqKind::Discard => Direction::Write,
            ReqKind::Truncate => return Ok(()),
        };
        io.throttle_group_at(self.group)?.admit(io, self.member, dir, len).await
    }

    async fn map(&self, _io: &Io<'_, '_>, _node: NodeId, offset: u64, len: u64) -> Result<Mapping> {
        Ok(filter::map(offset, len))
    }

    fn map_now(&self, offset: u64, len: u64) -> Option<Mapping> {
        Some(filter::map(offset, len))
    }

    async fn close(&self, io: &Io<'_, '_>, _node: NodeId) -> Result<()> {
        io.throttle_group_at(self.group)?.leave(self.member);
        Ok(())
    }
}
