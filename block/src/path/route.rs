//! The shortest way for a backend's reads: what the graph's shape allows is worked out once
//! per shape ([`crate::io::Io::shape_changed`]), so a warm read pays only for its own mapping
//! and its device request. Two things are kept:
//! - the graph's leaves, to ask whether all of them run requests in the caller's thread now
//!   ([`crate::dev::BlockDevice::runs_now`]): if one does not (virtio; a host file whose
//!   helper threads serve a queue), a read tried at once would fail at its leaf and be
//!   resolved twice, so it waits for its device instead ([`ReadRoute::read_queued`]);
//! - a **route** when the root is a format or translation node right over the leaf holding
//!   its data, with nothing on the way that holds, copies or compares reads (a qcow2 or raw
//!   image in a file): a read the root maps from memory to one run of its own data goes from
//!   that mapping straight to the leaf. Under a run of empty overlays (a fresh snapshot chain)
//!   a read done at once starts at the first layer below them, as the walk would.
//!
//! The walk's other rules (backing links, zeros, splits, filters) have nothing to add to such a
//! read. Anything else — a mapping not in memory, a range in a backing file, zeros, data past
//! the leaf's end — goes to the walk ([`request::read_now`], [`request::read`]), which does it
//! in full.

use core::cell::{Cell, RefCell};

use super::{request, skip, walk, Stack};
use crate::dev::BlockDevice;
use crate::driver::Mapping;
use crate::error::Result;
use crate::io::leaf::{self, Buf};
use crate::node::{Gate, NodeId};

/// Leaves remembered per shape; a graph with more keeps only the answer found when its shape
/// was last seen.
const NOW_LEAVES: usize = 8;

/// What a backend remembers of its graph's shape for reads done at once.
#[derive(Default)]
pub(crate) struct ReadRoute<'d> {
    /// The shape the rest was found under.
    shape: Cell<Option<u64>>,
    leaves: RefCell<heapless::Vec<&'d dyn BlockDevice, NOW_LEAVES>>,
    /// For a graph of more than [`NOW_LEAVES`] leaves: whether all ran now when it was looked at.
    many: Cell<Option<bool>>,
    /// The root, if reads of it may take the route (see the module doc).
    route: Cell<Option<NodeId>>,
    /// The root is an empty layer: reads may fall through it to a routable layer below.
    root_empty: Cell<bool>,
}

impl<'d> ReadRoute<'d> {
    /// Reads `buf` at `offset` of `root` at once if it can be done so; `None` if it needs an
    /// await (then nothing was read that counts: the caller reads the whole buffer again).
    pub(crate) fn read_now(&self, s: &Stack<'_, 'd>, root: NodeId, offset: u64, buf: &mut [u8]) -> Option<Result<()>> {
        if self.shape.get() != Some(s.io.shape.get()) {
            self.learn(s, root);
        }
        let all_now = match self.many.get() {
            Some(all) => all,
            None => self.leaves.borrow().iter().all(|d| d.runs_now()),
        };
        if !all_now {
            return None;
        }
        if let Some(result) = self.route_start(s, root, offset, buf.len() as u64).and_then(|node| route(s, node, offset, buf)) {
            return Some(result);
        }
        request::read_now(s, root, offset, buf)
    }

    /// Where a read at once of `len` bytes at `offset` of `root` starts its route, if it has
    /// one: the root, or the first layer below it that is not empty when the range falls
    /// through a run of empty overlays ([`skip`], as the walk passes them), if that layer is
    /// routable too.
    fn route_start(&self, s: &Stack<'_, 'd>, root: NodeId, offset: u64, len: u64) -> Option<NodeId> {
        if !self.root_empty.get() {
            return self.route.get();
        }
        match skip::through_empty(s, root, offset, len) {
            Some((below, _)) => routable(s, below).then_some(below),
            None => self.route.get(),
        }
    }

    /// Reads `buf` at `offset` of `root` when [`ReadRoute::read_now`] could not do it at once: through
    /// the route if the root has one and maps the range from memory (so a device that queues,
    /// as a host file does while helper threads serve it, costs a mapping and the device
    /// request, not a walk), else by the walk ([`request::read`]; for a routable root, tracked
    /// once here).
    pub(crate) async fn read_queued(&self, s: &Stack<'_, 'd>, root: NodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let routed = self.shape.get() == Some(s.io.shape.get()) && self.route.get() == Some(root);
        if routed {
            // As the walk does: tracked at a format that frees clusters while written.
            let _tracked = walk::track_read(s, root, offset, buf.len() as u64).await?;
            if let Some((leaf, at)) = own_data(s, root, offset, buf.len() as u64) {
                // Data past the leaf's end reads as zeros: the walk's business.
                let inside = |n: &crate::node::Node<'_>| n.device().is_some() && at.checked_add(buf.len() as u64).is_some_and(|end| end <= n.size());
                if s.node(leaf).is_ok_and(inside) {
                    return leaf::rw(s, leaf, at, Buf::Read(buf)).await;
                }
            }
            // The root neither copies nor compares what it reads (`routable`): the walk is all
            // `request::read` would do, and the read is tracked already.
            return walk::read_tracked(s, root, offset, buf).await;
        }
        request::read(s, root, offset, buf).await
    }

    /// Finds the leaves and the route under the graph's current shape.
    fn learn(&self, s: &Stack<'_, 'd>, root: NodeId) {
        let mut leaves = self.leaves.borrow_mut();
        leaves.clear();
        let mut all = true;
        let mut many = false;
        for dev in s.io.nodes().filter_map(|(_, n)| n.device()) {
            all &= dev.runs_now();
            many |= leaves.push(dev).is_err();
        }
        self.many.set(many.then_some(all));
        self.route.set(routable(s, root).then_some(root));
        self.root_empty.set(skip::through_empty(s, root, 0, 0).is_some());
        self.shape.set(Some(s.io.shape.get()));
    }
}

/// True if reads of `node` may take the route: a driver node that holds no requests, copies
/// and compares nothing, and passes reads on unchanged.
fn routable(s: &Stack<'_, '_>, node: NodeId) -> bool {
    let (Ok(here), Ok(Some(state))) = (s.node(node), s.state(node)) else { return false };
    here.gate == Gate::Open && !state.admits() && state.copy_on_read().is_none() && state.verify_against().is_none()
}

/// The route's read: `node` maps the whole range from memory to data of one child, and that
/// child is a leaf that reads it at once. `None` otherwise, with nothing read.
fn route(s: &Stack<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8]) -> Option<Result<()>> {
    // A format that tracks reads (qcow2) needs none while no serialising request is in flight,
    // and none can start while this runs (see `walk::read_request_now`).
    if s.format_tracker.serialising() != 0 && s.driver(node).ok()?.tracks_reads() {
        return None;
    }
    let (leaf, at) = own_data(s, node, offset, buf.len() as u64)?;
    leaf::read_now(s, leaf, at, buf)
}

/// Where `node` keeps `len` bytes at `offset` by its mapping in memory, if as one run of data
/// in one child: the child and the offset there.
#[inline]
fn own_data(s: &Stack<'_, '_>, node: NodeId, offset: u64, len: u64) -> Option<(NodeId, u64)> {
    let here = s.node(node).ok()?;
    match s.driver_of_checked(node).ok()?.map_cached(s, node, offset, len)? {
        Mapping::Data { role, offset: at, len: mapped, .. } if mapped >= len => Some((here.child(role)?, at)),
        _ => None,
    }
}
