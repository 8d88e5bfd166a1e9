//! The node graph (QEMU's `BlockDriverState` graph) in fixed storage: it owns the nodes and
//! their drivers' states, the shared pools, and the users.
//!
//! Nodes live in `N` slots addressed by generation-checked [`NodeId`]s. A node is a leaf device
//! or a driver node with children in roles (file, backing, data-file). Users
//! ([`crate::backend::Backend`]) and parents attach with permissions, checked on every attach: a
//! second writer is refused. Building a graph (`add_leaf`, `open`) needs `&mut Graph`; I/O needs
//! only `&Graph`, so many requests share it. The layers below see it through views that do not
//! carry `N` and `T`: [`Io`] (drivers and the lower io half) and [`Stack`] (the walk).

mod handle;
pub mod open;

use core::cell::{Cell, RefCell};

pub use crate::node::{perm, Attachment, Child, Node, NodeId, NodeKind, Pass, Perm, Role, MAX_DEPTH};
pub use handle::GraphRef;
pub use open::{check_name, NameRequest, Resolver};

use crate::clock::Clock;
use crate::dev::BlockDevice;
use crate::driver::FormatState;
use crate::error::{Error, Result};
use crate::io::bounce::BouncePool;
use crate::io::cache::{CacheSlot, CacheStats, Inflater, MetaCache};
use crate::io::events::EventHook;
use crate::io::throttle::{ThrottleGroup, MAX_GROUPS};
use crate::io::tracked::{Entry, TrackerOf};
use crate::io::Io;
use crate::node::BlockLimits;
use crate::path::{Skip, Stack};

/// Most users (backends) attached at once.
pub const MAX_USERS: usize = 8;

/// A user's handle on its attachment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserId(usize);

/// A graph of at most `N` nodes with `T` tracked-request slots shared by all nodes.
pub struct Graph<'d, const N: usize = 16, const T: usize = 64> {
    nodes: [Option<Node<'d>>; N],
    /// Driver state of each driver node, by slot.
    states: [Option<FormatState>; N],
    generations: [u16; N],
    users: RefCell<handle::Users>,
    tracker: TrackerOf<[Option<Entry>; T]>,
    /// Tracked requests at driver nodes that allocate (qcow2 written): a separate table, taken
    /// before a leaf slot and never while holding one, so the two cannot deadlock.
    format_tracker: TrackerOf<[Option<Entry>; T]>,
    bounce: BouncePool<'d>,
    meta: MetaCache<'d>,
    plugged: Cell<u32>,
    release: Cell<u32>,
    /// See [`Io`]'s `shape`.
    shape: Cell<u64>,
    /// The walk's memory of empty layers, by node slot.
    skips: [Cell<Option<Skip>>; N],
    events: Option<&'d dyn EventHook>,
    clock: Option<&'d dyn Clock>,
    throttle_groups: [Option<ThrottleGroup>; MAX_GROUPS],
    debug: crate::io::debug::DebugPool,
    /// Most images below the top one an open follows (see [`Graph::set_backing_chain`]).
    backing_chain: usize,
}

impl<'d, const N: usize, const T: usize> Graph<'d, N, T> {
    /// An empty graph whose bounce buffers (for unaligned requests, write-zeroes fallback and
    /// memory-alignment copies) are carved from `bounce_memory` in `buffer_size` pieces, each
    /// aligned to `buffer_size`'s largest power-of-two factor up to 4 KiB.
    pub fn new(bounce_memory: &'d mut [u8], buffer_size: usize) -> Self {
        Self {
            nodes: [const { None }; N],
            states: [const { None }; N],
            generations: [0; N],
            users: RefCell::new([None; MAX_USERS]),
            tracker: TrackerOf::new(),
            format_tracker: TrackerOf::new(),
            bounce: BouncePool::new(bounce_memory, buffer_size),
            meta: MetaCache::empty(),
            plugged: Cell::new(0),
            release: Cell::new(0),
            shape: Cell::new(0),
            skips: [const { Cell::new(None) }; N],
            events: None,
            clock: None,
            throttle_groups: [const { None }; MAX_GROUPS],
            debug: crate::io::debug::DebugPool::new(),
            backing_chain: Self::DEFAULT_BACKING_CHAIN,
        }
    }

    /// The default backing-chain capacity: as deep as the node slots allow, since every image
    /// of a chain takes at least two nodes (its format node and its file), the top included:
    /// `(N - 2) / 2` images below the top.
    pub const DEFAULT_BACKING_CHAIN: usize = N.saturating_sub(2) / 2;

    /// Sets the backing-chain capacity: the most images below the top one that an open follows.
    /// A longer chain is refused with [`Error::BadGraph`] naming this capacity, as a loop (a
    /// file met twice in one chain) is refused whatever the capacity. Nothing else is sized by
    /// it: the chain's nodes take the graph's node slots (about two per image, three with a data
    /// file, so a chain deeper than `(N - 2) / 2` may run out of slots first,
    /// [`Error::NoSpace`]), and walks down the chain are bounded by the node count. QEMU has no
    /// such bound.
    pub fn set_backing_chain(&mut self, images: usize) {
        self.backing_chain = images;
    }

    /// The backing-chain capacity (see [`Graph::set_backing_chain`]).
    pub fn backing_chain(&self) -> usize {
        self.backing_chain
    }

    /// The view drivers and the lower io half work with.
    pub fn io(&self) -> Io<'_, 'd> {
        Io {
            nodes: &self.nodes,
            generations: &self.generations,
            tracker: &self.tracker,
            format_tracker: &self.format_tracker,
            bounce: &self.bounce,
            meta: &self.meta,
            events: self.events,
            plugged: &self.plugged,
            clock: self.clock,
            release: &self.release,
            shape: &self.shape,
            throttle_groups: &self.throttle_groups,
            debug: &self.debug,
        }
    }

    /// The view the walk and the executors work with.
    pub fn stack(&self) -> Stack<'_, 'd> {
        Stack { io: self.io(), states: &self.states, skips: &self.skips }
    }

    /// A handle on the graph that does not carry its capacities (what backends hold).
    pub fn handle(&self) -> GraphRef<'_, 'd> {
        GraphRef::new(self.stack(), &self.users, &self.release)
    }

    /// Gives the graph a clock: nodes that wait for time (`latency-ns`, throttling) need one.
    pub fn set_clock(&mut self, clock: &'d dyn Clock) {
        self.clock = Some(clock);
    }

    /// Adds a throttle group (QEMU's `throttle-group` object) that `throttle` nodes opened
    /// afterwards may name; a second group of the same name, or more than [`MAX_GROUPS`], is
    /// refused.
    pub fn add_throttle_group(&mut self, group: ThrottleGroup) -> Result<()> {
        if self.io().throttle_group(group.name()).is_some() {
            return Err(Error::BadOption { key: "id", why: "a throttle group of that name exists" });
        }
        let slot = self.throttle_groups.iter_mut().find(|g| g.is_none()).ok_or(Error::NoSpace { what: "throttle groups" })?;
        *slot = Some(group);
        Ok(())
    }

    /// Releases every request a node holds (a throttle, a latency) at once, and keeps releasing
    /// new ones until the returned guard is dropped: what a drain does so that it ends.
    pub fn release_held(&self) -> ReleaseHeld<'_> {
        self.handle().release_held()
    }

    /// The driver state of node `id` (`None` for a leaf).
    pub fn state(&self, id: NodeId) -> Result<Option<&FormatState>> {
        self.node(id)?;
        Ok(self.states.get(usize::from(id.index)).and_then(Option::as_ref))
    }

    /// Gives the graph its metadata cache: qcow2 L1, L2 and refcount tables of every node are
    /// read through these slots, 4 KiB each (the byte budget is `slots.len() * 4 KiB`). Call
    /// before opening qcow2 images; without slots their open fails with [`Error::NoSpace`].
    pub fn set_metadata_cache(&mut self, slots: &'d [CacheSlot]) {
        self.meta.set_slots(slots);
    }

    /// Gives the graph decoders for compressed clusters (about 60 KiB each); a read of a
    /// compressed cluster takes one for its duration and waits while all are busy.
    pub fn set_decompressors(&mut self, inflaters: &'d [Inflater]) {
        self.meta.set_inflaters(inflaters);
    }

    /// Gives the graph decoders for zstd-compressed clusters ([`crate::io::zstd`]: about
    /// 137 KiB each plus its output window); a read of such a cluster takes one for its
    /// duration and waits while all are busy.
    pub fn set_zstd_decoders(&mut self, decoders: &'d [crate::io::zstd::ZstdDecoder<'d>]) {
        self.meta.set_zstd(decoders);
    }

    /// Installs a fault-injection hook: format drivers report their metadata events to it and
    /// fail where it says so (see [`crate::io::events`]).
    pub fn set_event_hook(&mut self, hook: &'d dyn EventHook) {
        self.events = Some(hook);
    }

    /// The metadata cache's counters.
    pub fn metadata_cache_stats(&self) -> CacheStats {
        self.handle().metadata_cache_stats()
    }

    /// The node behind `id`.
    pub fn node(&self, id: NodeId) -> Result<&Node<'d>> {
        self.io().node(id)
    }

    /// The node named `name`.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.handle().find(name)
    }

    /// Every node, with its id.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node<'d>)> {
        self.io().nodes()
    }

    /// Adds a leaf device as a node named `name` (or `#nINDEX` if `name` is longer than a node
    /// name may be, such as a long host path).
    pub fn add_leaf(&mut self, name: &str, device: &'d dyn BlockDevice) -> Result<NodeId> {
        let info = device.info();
        let name = match node_name(name) {
            Ok(n) => n,
            Err(_) => self.auto_name()?,
        };
        let node = Node {
            name,
            driver: "device",
            kind: NodeKind::Leaf(device),
            children: heapless::Vec::new(),
            read_only: info.read_only,
            probed: false,
            size: Cell::new(info.capacity),
            limits: BlockLimits::from_device(info),
            pass: None,
            flush: Default::default(),
            threshold: Default::default(),
            gate: Default::default(),
        };
        self.insert(node, None)
    }

    /// Attaches a user with `attachment` to `node`, checking it against every other user and
    /// parent of the node.
    pub fn attach_user(&self, node: NodeId, attachment: Attachment) -> Result<UserId> {
        self.handle().attach_user(node, attachment)
    }

    /// Releases a user's attachment.
    pub fn detach_user(&self, user: UserId) {
        self.handle().detach_user(user);
    }

    /// Closes `node` and every node below it that nothing else uses. Fails if users or other
    /// parents still hold it.
    pub fn close(&mut self, node: NodeId) -> Result<()> {
        self.node(node)?;
        if self.handle().has_user(node) || self.parents(node).next().is_some() {
            return Err(Error::PermissionConflict { what: "node still in use" });
        }
        // Walk down without recursion: close, then continue with children nobody else holds.
        // The backing child is pushed first, so a node's file and data-file subtrees (a few
        // translation nodes and a leaf) are closed before its backing chain goes on: the
        // pending stack stays as short as one image's stack, however deep the chain.
        let mut pending: heapless::Vec<NodeId, MAX_DEPTH> = heapless::Vec::new();
        let _ = pending.push(node);
        while let Some(id) = pending.pop() {
            let index = usize::from(id.index);
            let Some(closed) = self.nodes.get_mut(index).and_then(Option::take) else { continue };
            self.io().shape_changed();
            self.states[index] = None;
            self.generations[index] = self.generations[index].wrapping_add(1);
            let backing = closed.children.iter().filter(|c| c.role == Role::Backing);
            for child in backing.chain(closed.children.iter().filter(|c| c.role != Role::Backing)) {
                let unused = self.parents(child.node).next().is_none() && !self.handle().has_user(child.node);
                if unused {
                    pending.push(child.node).map_err(|_| Error::BadGraph("graph too deep to close"))?;
                }
            }
        }
        Ok(())
    }

    /// Starts a submission batch (see [`GraphRef::plug`]).
    pub fn plug(&self) {
        self.handle().plug();
    }

    /// Ends a submission batch (see [`GraphRef::unplug`]).
    pub fn unplug(&self) {
        self.handle().unplug();
    }

    /// Tracked-request slots in use (all nodes).
    pub fn tracked_in_use(&self) -> usize {
        self.handle().tracked_in_use()
    }

    /// Bounce buffers free now, and in all.
    pub fn bounce_buffers(&self) -> (usize, usize) {
        self.handle().bounce_buffers()
    }

    /// Parents of `node`: (parent id, link).
    pub fn parents(&self, node: NodeId) -> impl Iterator<Item = (NodeId, Child)> + use<'_, 'd, N, T> {
        self.io().parents(node)
    }

    /// Checks `attachment` against all users and parents of `node` except `skip_parent`.
    pub(crate) fn check_holders(&self, node: NodeId, attachment: Attachment, skip_parent: Option<NodeId>) -> Result<()> {
        self.handle().check_holders(node, attachment, skip_parent)
    }

    pub(crate) fn insert(&mut self, node: Node<'d>, state: Option<FormatState>) -> Result<NodeId> {
        if self.find(&node.name).is_some() {
            return Err(Error::BadOption { key: "node-name", why: "a node of that name exists" });
        }
        let index = self.nodes.iter().position(Option::is_none).ok_or(Error::NoSpace { what: "graph node slots" })?;
        self.nodes[index] = Some(node);
        self.states[index] = state;
        self.io().shape_changed();
        Ok(NodeId { index: index as u16, generation: self.generations[index] })
    }

    /// Takes `id` out of the graph without looking at its children (undoing a failed open).
    pub(crate) fn remove(&mut self, id: NodeId) {
        if self.node(id).is_ok() {
            let index = usize::from(id.index);
            self.nodes[index] = None;
            self.states[index] = None;
            self.generations[index] = self.generations[index].wrapping_add(1);
            self.io().shape_changed();
        }
    }
}

/// Keeps held requests released while alive (see [`Graph::release_held`]).
pub struct ReleaseHeld<'g>(pub(super) &'g Cell<u32>);

impl Drop for ReleaseHeld<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

pub(crate) fn node_name(name: &str) -> Result<heapless::String<{ crate::node::MAX_NODE_NAME }>> {
    let mut s = heapless::String::new();
    s.push_str(name).map_err(|_| Error::BadOption { key: "node-name", why: "longer than 32 bytes" })?;
    Ok(s)
}
