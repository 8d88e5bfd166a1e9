//! The rule engine of the `blkdebug` filter (QEMU's `block/blkdebug.c`): per blkdebug node a
//! fixed table of rules and suspended requests, kept by the graph (nodes' driver states are
//! out of the io layer's reach) and found from the node's `image` child.
//!
//! Semantics as QEMU's:
//! - A node's state starts at 1. At an event, the node's rules for that event run (newest
//!   first, as QEMU's list keeps them), skipping rules whose `state` is set and is not the
//!   current state: `set-state` picks the state the node has after the event, `inject-error`
//!   rules make the *active* set (the first such rule of an event empties it), a breakpoint
//!   suspends the request at the event (the rule goes; `resume` lets the request go on).
//! - A request that reaches the node (read, write, write-zeroes, discard, flush) fails with the
//!   first active rule whose `iotype` covers it and whose `sector` (if given) lies in it; a
//!   `once` rule is removed when it fires. Without `immediately`, the failure is returned after
//!   one turn of the executor (QEMU's `aio_co_schedule` and yield), with it at once.
//! - The error carries the rule's `errno` ([`Error::Injected`]; QEMU's default `EIO`, 5).
//!
//! Capacities: [`MAX_DEBUG_NODES`] blkdebug nodes per graph, [`MAX_RULES`] rules (error,
//! state and breakpoint rules together) and [`MAX_SUSPENDED`] suspended requests per node,
//! tags of at most [`MAX_TAG`] bytes: more is refused with [`Error::NoSpace`]. Without a
//! blkdebug node an event or a request pays one comparison.

use core::cell::{Cell, RefCell};
use core::future::poll_fn;
use core::task::Poll;

use crate::error::{Error, Result};
use crate::io::events::Event;
use crate::io::Io;
use crate::node::{NodeId, Role, MAX_DEPTH};

/// The blkdebug driver's name (`driver=blkdebug`), by which the io layer knows its nodes.
pub const DRIVER_NAME: &str = "blkdebug";

/// Most blkdebug nodes in one graph.
pub const MAX_DEBUG_NODES: usize = 4;

/// Most rules per blkdebug node (inject-error, set-state and breakpoints together).
pub const MAX_RULES: usize = 32;

/// Most requests suspended at breakpoints per blkdebug node.
pub const MAX_SUSPENDED: usize = 8;

/// Longest breakpoint tag, in bytes.
pub const MAX_TAG: usize = 32;

/// A breakpoint tag.
pub type Tag = heapless::String<MAX_TAG>;

/// The kind of a request reaching a blkdebug node (QEMU's `BlkdebugIOType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoType {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `write-zeroes`.
    WriteZeroes,
    /// `discard`.
    Discard,
    /// `flush`.
    Flush,
    /// `block-status`.
    BlockStatus,
}

impl IoType {
    const ALL: [IoType; 6] = [
        IoType::Read,
        IoType::Write,
        IoType::WriteZeroes,
        IoType::Discard,
        IoType::Flush,
        IoType::BlockStatus,
    ];

    /// QEMU's name (`inject-error.N.iotype=`).
    pub fn name(self) -> &'static str {
        match self {
            IoType::Read => "read",
            IoType::Write => "write",
            IoType::WriteZeroes => "write-zeroes",
            IoType::Discard => "discard",
            IoType::Flush => "flush",
            IoType::BlockStatus => "block-status",
        }
    }

    /// The type named `name`.
    pub fn by_name(name: &str) -> Option<IoType> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The type's bit in a rule's mask.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// QEMU's default mask: every type but block-status.
    pub const DEFAULT_MASK: u8 = 0b01_1111;
}

/// What a rule does when its event happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Arms an error for the next matching request (`inject-error`).
    Inject {
        /// The errno the request fails with.
        errno: u16,
        /// Only a request covering this byte (`sector` × 512) fails.
        offset: Option<u64>,
        /// Removed once it failed a request.
        once: bool,
        /// Fails without a turn of the executor first.
        immediately: bool,
        /// [`IoType::bit`]s of the requests it fails.
        iotypes: u8,
    },
    /// Sets the node's state after the event (`set-state`).
    SetState {
        /// The new state.
        new_state: u32,
    },
    /// Suspends the request at the event (a breakpoint, qemu-io's `break`).
    Suspend {
        /// The breakpoint's tag.
        tag: Tag,
    },
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The event that triggers it.
    pub event: Event,
    /// Only in this state (0: any).
    pub state: u32,
    /// What it does.
    pub action: Action,
    /// For inject rules: armed by the latest event that armed any.
    active: bool,
}

impl Rule {
    /// A rule for `event`, in `state` (0: any).
    pub fn new(event: Event, state: u32, action: Action) -> Self {
        Self {
            event,
            state,
            action,
            active: false,
        }
    }
}

/// A request suspended at a breakpoint.
#[derive(Clone, Debug)]
struct Suspended {
    tag: Tag,
    ticket: u32,
}

/// The rules and state of one blkdebug node.
#[derive(Debug)]
struct Slot {
    /// The node's `image` child: the key the slot is found by.
    image: NodeId,
    state: u32,
    /// Oldest first; QEMU's lists are newest first, so they are walked backwards.
    rules: heapless::Vec<Rule, MAX_RULES>,
    /// Oldest first.
    suspended: heapless::Vec<Suspended, MAX_SUSPENDED>,
}

/// The blkdebug nodes of a graph (owned by it; see the module docs).
pub struct DebugPool {
    slots: [RefCell<Option<Slot>>; MAX_DEBUG_NODES],
    live: Cell<u8>,
    next_ticket: Cell<u32>,
    /// Tags of requests suspended since the caller last looked ([`Io::take_suspended_notice`]).
    notices: RefCell<heapless::Deque<Tag, MAX_SUSPENDED>>,
}

impl Default for DebugPool {
    fn default() -> Self {
        Self::new()
    }
}

impl DebugPool {
    /// No blkdebug nodes.
    pub const fn new() -> Self {
        Self {
            slots: [const { RefCell::new(None) }; MAX_DEBUG_NODES],
            live: Cell::new(0),
            next_ticket: Cell::new(1),
            notices: RefCell::new(heapless::Deque::new()),
        }
    }

    fn slot_of(&self, image: NodeId) -> Option<&RefCell<Option<Slot>>> {
        self.slots
            .iter()
            .find(|s| s.borrow().as_ref().is_some_and(|s| s.image == image))
    }
}

/// A blkdebug node's errors as `Result<(), errno>` (qemu-io prints `strerror`).
pub type Errno = core::result::Result<(), i32>;

/// `ENOENT`.
pub const ENOENT: i32 = 2;
/// `ENOSPC`.
pub const ENOSPC: i32 = 28;
/// `ENOTSUP`.
pub const ENOTSUP: i32 = 95;

impl<'g> Io<'g, '_> {
    /// True if the graph has a blkdebug node.
    #[inline]
    pub(crate) fn has_debug(&self) -> bool {
        self.debug.live.get() > 0
    }

    /// Makes the rule table of a blkdebug node over `image` (called by the driver's open, last,
    /// so a failed open leaves none behind). Slots of nodes gone from the graph are reused.
    pub(crate) fn debug_install(&self, image: NodeId, rules: &[Rule]) -> Result<()> {
        for s in &self.debug.slots {
            let stale = s
                .borrow()
                .as_ref()
                .is_some_and(|s| self.node(s.image).is_err());
            if stale {
                self.debug_remove(s);
            }
        }
        if self.debug.slot_of(image).is_some() {
            return Err(Error::BadGraph("two blkdebug nodes over one image"));
        }
        let free = self
            .debug
            .slots
            .iter()
            .find(|s| s.borrow().is_none())
            .ok_or(Error::NoSpace {
                what: "blkdebug nodes (MAX_DEBUG_NODES)",
            })?;
        let mut table = heapless::Vec::new();
        for r in rules {
            table.push(r.clone()).map_err(|_| Error::NoSpace {
                what: "blkdebug rules (MAX_RULES)",
            })?;
        }
        *free.borrow_mut() = Some(Slot {
            image,
            state: 1,
            rules: table,
            suspended: heapless::Vec::new(),
        });
        self.debug.live.set(self.debug.live.get() + 1);
        Ok(())
    }

    /// Drops the rule table of the blkdebug node over `image` (its close).
    pub(crate) fn debug_uninstall(&self, image: NodeId) {
        if let Some(s) = self.debug.slot_of(image) {
            self.debug_remove(s);
        }
    }

    fn debug_remove(&self, s: &RefCell<Option<Slot>>) {
        if s.borrow_mut().take().is_some() {
            self.debug.live.set(self.debug.live.get().saturating_sub(1));
        }
    }

    /// The `image` child of `node` if `node` is a blkdebug node.
    fn debug_image(&self, node: NodeId) -> Option<NodeId> {
        let n = self.node(node).ok()?;
        if n.driver != DRIVER_NAME {
            return None;
        }
        n.child(Role::File)
    }

    /// Event `event` at format node `node`: the rules of the blkdebug node that is its file
    /// child run (QEMU's `BLKDBG_EVENT(bs->file, …)`); a breakpoint holds the caller here
    /// until resumed.
    pub(crate) async fn debug_event(&self, node: NodeId, event: Event) -> Result<()> {
        let Some(image) = self
            .node(node)
            .ok()
            .and_then(|n| n.child(Role::File))
            .and_then(|f| self.debug_image(f))
        else {
            return Ok(());
        };
        let Some(cell) = self.debug.slot_of(image) else {
            return Ok(());
        };
        let mut tickets: heapless::Vec<u32, MAX_SUSPENDED> = heapless::Vec::new();
        {
            let mut guard = cell.borrow_mut();
            let Some(slot) = guard.as_mut() else {
                return Ok(());
            };
            let mut new_state = slot.state;
            let mut injected = false;
            let mut i = slot.rules.len();
            while i > 0 {
                i -= 1;
                let rule = &slot.rules[i];
                if rule.event != event || (rule.state != 0 && rule.state != slot.state) {
                    continue;
                }
                match &rule.action {
                    Action::Inject { .. } => {
                        if !injected {
                            slot.rules.iter_mut().for_each(|r| r.active = false);
                            injected = true;
                        }
                        slot.rules[i].active = true;
                    }
                    Action::SetState { new_state: s } => new_state = *s,
                    Action::Suspend { tag } => {
                        let tag = tag.clone();
                        let ticket = self.debug.next_ticket.get();
                        self.debug.next_ticket.set(ticket.wrapping_add(1));
                        if slot
                            .suspended
                            .push(Suspended {
                                tag: tag.clone(),
                                ticket,
                            })
                            .is_err()
                            || tickets.push(ticket).is_err()
                        {
                            return Err(Error::NoSpace {
                                what: "blkdebug suspended requests (MAX_SUSPENDED)",
                            });
                        }
                        slot.rules.remove(i);
                        let mut notices = self.debug.notices.borrow_mut();
                        if notices.is_full() {
                            notices.pop_front();
                        }
                        let _ = notices.push_back(tag);
                    }
                }
            }
            slot.state = new_state;
        }
        for t in tickets {
            crate::io::wait_until(|| {
                cell.borrow()
                    .as_ref()
                    .is_none_or(|s| !s.suspended.iter().any(|r| r.ticket == t))
            })
            .await;
        }
        Ok(())
    }

    /// A request of `kind` over `[offset, offset + len)` reaching blkdebug node `node`: the
    /// error an active rule injects, if any.
    pub(crate) async fn debug_check(
        &self,
        node: NodeId,
        kind: IoType,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        let Some(image) = self.debug_image(node) else {
            return Ok(());
        };
        let Some(cell) = self.debug.slot_of(image) else {
            return Ok(());
        };
        let hit = {
            let mut guard = cell.borrow_mut();
            let Some(slot) = guard.as_mut() else {
                return Ok(());
            };
            let found = slot.rules.iter().position(|r| match r.action {
                Action::Inject {
                    offset: at,
                    iotypes,
                    ..
                } if r.active => {
                    let covers = at.is_none_or(|at| len > 0 && at >= offset && at - offset < len);
                    covers && iotypes & kind.bit() != 0
                }
                _ => false,
            });
            match found.map(|i| (i, &slot.rules[i].action)) {
                Some((
                    i,
                    &Action::Inject {
                        errno,
                        once,
                        immediately,
                        ..
                    },
                )) if errno != 0 => {
                    if once {
                        slot.rules.remove(i);
                    }
                    Some((errno, immediately))
                }
                _ => None,
            }
        };
        let Some((errno, immediately)) = hit else {
            return Ok(());
        };
        if !immediately {
            let mut turned = false;
            poll_fn(|cx| {
                if turned {
                    Poll::Ready(())
                } else {
                    turned = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await;
        }
        Err(Error::Injected { errno })
    }

    /// [`Io::debug_check`] at every blkdebug node from `node` down its translation-only nodes
    /// (a format's I/O on its file child, which goes straight to the leaf).
    pub(crate) async fn debug_check_path(
        &self,
        node: NodeId,
        kind: IoType,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        let (mut cur, mut off) = (node, offset);
        for _ in 0..MAX_DEPTH {
            let Ok(n) = self.node(cur) else { return Ok(()) };
            if n.driver == DRIVER_NAME {
                self.debug_check(cur, kind, off, len).await?;
            }
            match n.pass.and_then(|p| n.child(p.role).map(|c| (c, p.offset))) {
                Some((child, add)) => {
                    cur = child;
                    off = off.saturating_add(add);
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// The first blkdebug node from `root` down its file children (QEMU's
    /// `bdrv_debug_breakpoint` walks `bdrv_primary_bs`), by its image.
    fn debug_target(&self, root: NodeId) -> Option<NodeId> {
        let mut cur = root;
        for _ in 0..MAX_DEPTH {
            if let Some(image) = self.debug_image(cur) {
                return Some(image);
            }
            cur = self.node(cur).ok()?.child(Role::File)?;
        }
        None
    }

    fn with_target<R>(
        &self,
        root: NodeId,
        f: impl FnOnce(&mut Slot) -> core::result::Result<R, i32>,
    ) -> core::result::Result<R, i32> {
        let image = self.debug_target(root).ok_or(ENOTSUP)?;
        let cell = self.debug.slot_of(image).ok_or(ENOTSUP)?;
        let mut guard = cell.borrow_mut();
        f(guard.as_mut().ok_or(ENOTSUP)?)
    }

    /// qemu-io's `break EVENT TAG`: the next request meeting `event` at the first blkdebug node
    /// below `root` is suspended there. Errors are errnos as QEMU returns them (`ENOTSUP`: no
    /// blkdebug node; `ENOENT`: no such event; `ENOSPC`: the rule table is full).
    pub fn debug_breakpoint(&self, root: NodeId, event: &str, tag: &str) -> Errno {
        let event = Event::by_name(event).ok_or(ENOENT)?;
        let tag = Tag::try_from(tag).map_err(|_| ENOSPC)?;
        self.with_target(root, |slot| {
            slot.rules
                .push(Rule::new(event, 0, Action::Suspend { tag }))
                .map_err(|_| ENOSPC)
        })
    }

    /// qemu-io's `remove_break TAG`: removes the breakpoints tagged `tag` and resumes every
    /// request suspended under it (`ENOENT` if there was neither).
    pub fn debug_remove_breakpoint(&self, root: NodeId, tag: &str) -> Errno {
        self.with_target(root, |slot| {
            let before = slot.rules.len() + slot.suspended.len();
            slot.rules
                .retain(|r| !matches!(&r.action, Action::Suspend { tag: t } if t == tag));
            slot.suspended.retain(|r| r.tag != tag);
            if slot.rules.len() + slot.suspended.len() == before {
                return Err(ENOENT);
            }
            Ok(())
        })
    }

    /// qemu-io's `resume TAG`: the newest request suspended under `tag` goes on (`ENOENT` if
    /// none is).
    pub fn debug_resume(&self, root: NodeId, tag: &str) -> Errno {
        self.with_target(root, |slot| {
            let i = slot
                .suspended
                .iter()
                .rposition(|r| r.tag == tag)
                .ok_or(ENOENT)?;
            slot.suspended.remove(i);
            Ok(())
        })
    }

    /// True if a request is suspended under `tag` (qemu-io's `wait_break` polls this).
    pub fn debug_is_suspended(&self, root: NodeId, tag: &str) -> bool {
        self.with_target(root, |slot| Ok(slot.suspended.iter().any(|r| r.tag == tag)))
            .unwrap_or(false)
    }

    /// Resumes every suspended request of every blkdebug node (a session ending); returns how
    /// many there were.
    pub fn debug_resume_all(&self) -> usize {
        let mut n = 0;
        for s in &self.debug.slots {
            if let Some(slot) = s.borrow_mut().as_mut() {
                n += slot.suspended.len();
                slot.suspended.clear();
            }
        }
        n
    }

    /// The tag of the oldest request suspended since the last call (QEMU prints
    /// `blkdebug: Suspended request 'TAG'` then).
    pub fn take_suspended_notice(&self) -> Option<Tag> {
        self.debug.notices.borrow_mut().pop_front()
    }
}
