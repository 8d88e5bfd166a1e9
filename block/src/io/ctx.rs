//! [`Io`]: what drivers and the lower io half see of a graph — its nodes (without driver
//! state), the shared pools (tracked requests, bounce buffers, the metadata cache), the clock and
//! the fault-injection hook — as plain references, so nothing below the graph carries the
//! graph's capacities as type parameters.
//!
//! The graph makes one with [`crate::Graph::io`]; it costs a few pointer copies.

use core::cell::Cell;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::io::bounce::BouncePool;
use crate::io::cache::MetaCache;
use crate::io::events::{Event, EventHook};
use crate::io::throttle::ThrottleGroup;
use crate::io::tracked::Tracker;
use crate::node::{Child, Node, NodeId};

/// A view of a graph for I/O: borrowed for `'g`, devices borrowed for `'d`.
#[derive(Clone, Copy)]
pub struct Io<'g, 'd> {
    pub(crate) nodes: &'g [Option<Node<'d>>],
    pub(crate) generations: &'g [u16],
    /// Tracked requests at leaves.
    pub(crate) tracker: &'g Tracker,
    /// Tracked requests at format nodes that allocate: a separate table, taken before a leaf
    /// slot and never while holding one, so the two cannot deadlock.
    pub(crate) format_tracker: &'g Tracker,
    /// Bounce buffers.
    pub(crate) bounce: &'g BouncePool<'d>,
    /// The metadata slice cache and decoders.
    pub(crate) meta: &'g MetaCache<'d>,
    pub(crate) events: Option<&'d dyn EventHook>,
    /// The rule tables of the graph's `blkdebug` nodes.
    pub(crate) debug: &'g crate::io::debug::DebugPool,
    pub(crate) plugged: &'g Cell<u32>,
    /// The platform's clock, if it gave one.
    pub(crate) clock: Option<&'d dyn Clock>,
    /// Above zero while a drain releases held requests ([`crate::io::wait::hold`]).
    pub(crate) release: &'g Cell<u32>,
    /// Bumped whenever what the walk may remember about the graph's shape changes: nodes or
    /// links added or removed, a format node resized, an empty layer written for the first time.
    pub(crate) shape: &'g Cell<u64>,
    /// The throttle groups `throttle` nodes join.
    pub(crate) throttle_groups: &'g [Option<ThrottleGroup>],
}

impl<'g, 'd> Io<'g, 'd> {
    /// Says that the graph's shape changed (see [`Io::shape`]): what the walk remembered is
    /// forgotten.
    pub(crate) fn shape_changed(&self) {
        self.shape.set(self.shape.get().wrapping_add(1));
    }

    /// Most steps any walk down the graph can take: one per node slot, since a walk never
    /// visits a node twice in a graph without cycles (opening refuses cycles). Walks that follow
    /// backing links are bounded by this, not by a constant, so a chain is as deep as the graph
    /// has nodes for (and as [`crate::Graph::set_backing_chain`] allows).
    pub(crate) fn walk_bound(&self) -> usize {
        self.nodes.len().saturating_add(1)
    }

    /// The node behind `id`.
    pub fn node(&self, id: NodeId) -> Result<&'g Node<'d>> {
        let index = usize::from(id.index);
        match (self.nodes.get(index), self.generations.get(index)) {
            (Some(Some(node)), Some(&g)) if g == id.generation => Ok(node),
            _ => Err(Error::BadNode),
        }
    }

    /// Every node, with its id.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &'g Node<'d>)> + use<'g, 'd> {
        let generations = self.generations;
        self.nodes
            .iter()
            .enumerate()
            .filter_map(move |(i, n)| n.as_ref().map(|node| (NodeId { index: i as u16, generation: generations[i] }, node)))
    }

    /// Parents of `node`: (parent id, link).
    pub fn parents(&self, node: NodeId) -> impl Iterator<Item = (NodeId, Child)> + use<'g, 'd> {
        self.nodes().flat_map(move |(id, n)| n.children.iter().filter(move |c| c.node == node).map(move |c| (id, *c)))
    }

    /// The throttle group named `name`, by index.
    pub fn throttle_group(&self, name: &str) -> Option<(usize, &'g ThrottleGroup)> {
        self.throttle_groups.iter().enumerate().find_map(|(i, g)| g.as_ref().filter(|g| g.name() == name).map(|g| (i, g)))
    }

    /// Throttle group number `index`.
    pub(crate) fn throttle_group_at(&self, index: usize) -> Result<&'g ThrottleGroup> {
        self.throttle_groups.get(index).and_then(Option::as_ref).ok_or(Error::BadGraph("throttle group gone"))
    }

    /// True if a fault-injection hook is installed or the graph has a `blkdebug` node.
    pub(crate) fn has_event_hook(&self) -> bool {
        self.events.is_some() || self.has_debug()
    }

    /// Reports `event` at format node `node` to the hook, if any, and to the `blkdebug` node
    /// that is its file child, if it has one (which may hold the caller at a breakpoint).
    pub(crate) async fn event(&self, node: NodeId, event: Event) -> Result<()> {
        if let Some(hook) = self.events {
            hook.event(node, event)?;
        }
        if self.has_debug() {
            self.debug_event(node, event).await?;
        }
        Ok(())
    }

    /// True while a submission batch is open ([`crate::Graph::plug`]).
    pub(crate) fn plugged(&self) -> bool {
        self.plugged.get() > 0
    }
}
