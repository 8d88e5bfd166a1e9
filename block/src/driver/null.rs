//! `null-co` and `null-aio` (QEMU's `block/null.c`): a node of `size` bytes (default 1 GiB)
//! that stores nothing. Writes are dropped; reads return zeros with `read-zeroes=on` and leave
//! the caller's buffer as it was otherwise (as QEMU does); every request is held `latency-ns`
//! nanoseconds by the graph's clock first. The two names differ in QEMU only in how the
//! emulator completes requests (coroutine or AIO callback); here they are one driver.

use super::{Driver, DriverCaps, DriverDesc, DriverId, Mapping, RangeStep, WritePlan};
use crate::error::{Error, Result};
use crate::io::tracked::ReqKind;
use crate::io::wait::hold_until;
use crate::io::{Io, RangeOp};
use crate::node::NodeId;
use crate::options::OptionsView;

const CAPS: DriverCaps = DriverCaps::PROTOCOL.union(DriverCaps::WRITE);
const OPTIONS: &[&str] = &["size", "read-zeroes", "latency-ns"];

/// `null-co`.
pub static NULL_CO: DriverDesc = DriverDesc { name: "null-co", id: DriverId::NullCo, caps: CAPS, probe: None, options: OPTIONS };

/// `null-aio`.
pub static NULL_AIO: DriverDesc = DriverDesc { name: "null-aio", id: DriverId::NullAio, caps: CAPS, probe: None, options: OPTIONS };

/// QEMU's default size: 1 GiB.
const DEFAULT_SIZE: u64 = 1 << 30;

/// An open null node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Null {
    size: u64,
    read_zeroes: bool,
    latency_ns: u64,
}

impl Driver for Null {
    type Pending = core::convert::Infallible;

    const ADMITS: bool = true;

    async fn open(io: &Io<'_, '_>, _file: Option<NodeId>, opts: &OptionsView<'_, '_>, _read_only: bool) -> Result<Self> {
        let size = match opts.get("size") {
            Some(v) => v.parse_size().map_err(Error::bad_value)?,
            None => DEFAULT_SIZE,
        };
        let read_zeroes = match opts.get("read-zeroes") {
            Some(v) => v.parse_bool().map_err(Error::bad_value)?,
            None => false,
        };
        let latency_ns = match opts.get("latency-ns") {
            Some(v) => v.parse_u64().map_err(Error::bad_value)?,
            None => 0,
        };
        if latency_ns > 0 && io.clock.is_none() {
            return Err(Error::BadOption { key: "latency-ns", why: "needs a clock (Graph::set_clock)" });
        }
        Ok(Self { size, read_zeroes, latency_ns })
    }

    fn size(&self) -> u64 {
        self.size
    }

    async fn admit(&self, io: &Io<'_, '_>, _node: NodeId, _kind: ReqKind, _offset: u64, _len: u64) -> Result<()> {
        if self.latency_ns > 0 {
            let clock = io.clock.ok_or(Error::Unsupported("latency without a clock"))?;
            hold_until(io, clock.now_ns().saturating_add(self.latency_ns)).await?;
        }
        Ok(())
    }

    async fn map(&self, _io: &Io<'_, '_>, _node: NodeId, _offset: u64, len: u64) -> Result<Mapping> {
        Ok(if self.read_zeroes { Mapping::Zero { len, kept: None } } else { Mapping::Sink { len } })
    }

    async fn plan_write(&self, _io: &Io<'_, '_>, _node: NodeId, _offset: u64, len: u64) -> Result<WritePlan<Self::Pending>> {
        Ok(WritePlan::Sink { len })
    }

    async fn plan_range(&self, _io: &Io<'_, '_>, _node: NodeId, offset: u64, end: u64, _op: RangeOp) -> Result<RangeStep> {
        Ok(RangeStep::Done { len: end - offset })
    }
}
