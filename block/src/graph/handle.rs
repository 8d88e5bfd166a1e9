//! [`GraphRef`]: a graph as its users hold it — the views the io layers take, the users'
//! attachments and the batch and release switches — without the graph's capacities in its
//! type, so a [`crate::Backend`] and everything that takes one is written once for all graphs.

use core::cell::{Cell, RefCell};

use super::{perm, Attachment, Child, Node, NodeId, Perm, ReleaseHeld, UserId, MAX_USERS};
use crate::driver::FormatState;
use crate::error::{Error, Result};
use crate::io::cache::CacheStats;
use crate::io::Io;
use crate::node::ThresholdExceeded;
use crate::path::Stack;

/// Who holds which node: a user's node and attachment, per user slot.
pub(crate) type Users = [Option<(NodeId, Attachment)>; MAX_USERS];

/// A shared handle on a graph (see the module docs); [`crate::Graph::handle`] makes one.
#[derive(Clone, Copy)]
pub struct GraphRef<'g, 'd> {
    stack: Stack<'g, 'd>,
    users: &'g RefCell<Users>,
    release: &'g Cell<u32>,
}

impl<'g, 'd> GraphRef<'g, 'd> {
    pub(crate) fn new(stack: Stack<'g, 'd>, users: &'g RefCell<Users>, release: &'g Cell<u32>) -> Self {
        Self { stack, users, release }
    }

    /// The view drivers and the lower io half work with.
    pub fn io(&self) -> Io<'g, 'd> {
        self.stack.io
    }

    /// The view the walk and the executors work with.
    pub fn stack(&self) -> Stack<'g, 'd> {
        self.stack
    }

    /// [`GraphRef::stack`] without the copy (a request's hot path).
    pub(crate) fn stack_ref(&self) -> &Stack<'g, 'd> {
        &self.stack
    }

    /// The node behind `id`.
    pub fn node(&self, id: NodeId) -> Result<&'g Node<'d>> {
        self.stack.io.node(id)
    }

    /// Every node, with its id.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &'g Node<'d>)> + use<'g, 'd> {
        self.stack.io.nodes()
    }

    /// Arms node `id`'s write threshold at `bytes` (0 switches it off), as QEMU's
    /// `block-set-write-threshold`; see [`crate::node::WriteThreshold`].
    pub fn set_write_threshold(&self, id: NodeId, bytes: u64) -> Result<()> {
        self.node(id)?.threshold.set(bytes);
        Ok(())
    }

    /// Takes the records of writes that passed a node's write threshold since the last call
    /// (one per node at most: a threshold switches itself off when passed).
    pub fn take_write_threshold_events(&self) -> impl Iterator<Item = (NodeId, &'g Node<'d>, ThresholdExceeded)> + use<'g, 'd> {
        self.nodes().filter_map(|(id, n)| n.threshold.take().map(|e| (id, n, e)))
    }

    /// The node named `name`.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.nodes().find_map(|(id, n)| (n.name == name).then_some(id))
    }

    /// Parents of `node`: (parent id, link).
    pub fn parents(&self, node: NodeId) -> impl Iterator<Item = (NodeId, Child)> + use<'g, 'd> {
        self.stack.io.parents(node)
    }

    /// The driver state of node `id` (`None` for a leaf).
    pub fn state(&self, id: NodeId) -> Result<Option<&'g FormatState>> {
        self.stack.state(id)
    }

    /// The metadata cache's counters.
    pub fn metadata_cache_stats(&self) -> CacheStats {
        self.stack.io.meta.stats()
    }

    /// Tracked-request slots in use (all nodes).
    pub fn tracked_in_use(&self) -> usize {
        self.stack.io.tracker.in_use()
    }

    /// Bounce buffers free now, and in all.
    pub fn bounce_buffers(&self) -> (usize, usize) {
        (self.stack.io.bounce.available(), self.stack.io.bounce.total())
    }

    /// Attaches a user with `attachment` to `node`, checking it against every other user and
    /// parent of the node.
    pub fn attach_user(&self, node: NodeId, attachment: Attachment) -> Result<UserId> {
        let n = self.node(node)?;
        if n.read_only && attachment.perm.intersects(Perm::WRITE | Perm::RESIZE) {
            return Err(Error::ReadOnly);
        }
        self.check_holders(node, attachment, None)?;
        let mut users = self.users.borrow_mut();
        let slot = users.iter().position(Option::is_none).ok_or(Error::NoSpace { what: "graph user slots" })?;
        users[slot] = Some((node, attachment));
        Ok(UserId(slot))
    }

    /// Releases a user's attachment.
    pub fn detach_user(&self, user: UserId) {
        if let Some(slot) = self.users.borrow_mut().get_mut(user.0) {
            *slot = None;
        }
    }

    /// True if a user holds `node`.
    pub(crate) fn has_user(&self, node: NodeId) -> bool {
        self.users.borrow().iter().flatten().any(|(n, _)| *n == node)
    }

    /// Checks `attachment` against all users and parents of `node` except `skip_parent`.
    pub(crate) fn check_holders(&self, node: NodeId, attachment: Attachment, skip_parent: Option<NodeId>) -> Result<()> {
        let users = self.users.borrow();
        let from_users = users.iter().flatten().filter(|(n, _)| *n == node).map(|(_, a)| *a);
        let from_parents = self.parents(node).filter(|(p, _)| Some(*p) != skip_parent).map(|(_, c)| c.attachment);
        for other in from_users.chain(from_parents) {
            perm::compatible(attachment, other).map_err(|what| Error::PermissionConflict { what })?;
        }
        Ok(())
    }

    /// Starts a submission batch: leaf requests are queued without notifying devices until the
    /// matching [`GraphRef::unplug`] (QEMU's `blk_io_plug`). Nests.
    pub fn plug(&self) {
        let plugged = self.stack.io.plugged;
        plugged.set(plugged.get() + 1);
    }

    /// Ends a submission batch; the outermost unplug notifies every leaf device once.
    pub fn unplug(&self) {
        let plugged = self.stack.io.plugged;
        let depth = plugged.get().saturating_sub(1);
        plugged.set(depth);
        if depth == 0 {
            for (_, node) in self.nodes() {
                if let Some(dev) = node.device() {
                    dev.unplug();
                }
            }
        }
    }

    /// Releases every request a node holds (a throttle, a latency) at once, and keeps releasing
    /// new ones until the returned guard is dropped: what a drain does so that it ends.
    pub fn release_held(&self) -> ReleaseHeld<'g> {
        self.release.set(self.release.get() + 1);
        ReleaseHeld(self.release)
    }
}
