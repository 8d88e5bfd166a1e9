//! The read side of the data path: drivers map, this code moves data (`docs/ARCHITECTURE.md`,
//! "The data path").
//!
//! A request at a node is resolved extent by extent: starting at the node, each driver is asked
//! where the range lives ([`Mapping`]); `Data` continues at a child at a translated offset,
//! `Unallocated` continues at the backing child at the same offset, `Zero` ends in zeros. The
//! walk is a loop bounded by the graph's node count (a backing chain is as deep as the graph
//! has nodes for), never a recursion, and ends at a leaf where
//! [`leaf::rw`] moves the bytes.

use super::skip;
use super::Stack;
use crate::driver::{FormatState, Kept, Mapping};
use crate::error::{Error, Result};
use crate::io::leaf::{self, Buf};
use crate::io::tracked::{ReadHold, ReqKind};
use crate::io::child_io;
use crate::io::verify::Verifier;
use crate::node::{Gate, Node, NodeId, NodeKind, Role};

/// Where one extent of a request lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// On this leaf at this offset.
    Leaf(NodeId, u64),
    /// Reads as zeros: a layer says so (a zero cluster).
    Zero,
    /// Reads as zeros: no layer of the chain has it (or it lies past a shorter backing file).
    Hole,
    /// Data no storage keeps (`null-co`): a read leaves the buffer as it is.
    Sink,
    /// Inside a compressed cluster of format node `node`: decoded by its driver.
    Compressed {
        /// The format node.
        node: NodeId,
        /// Compressed data in its file child.
        host: u64,
        /// Its length.
        csize: u64,
        /// Offset inside the decoded cluster.
        skip: u64,
    },
}

/// A resolved extent: where, how long, and how many backing links were followed to get there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    pub(crate) target: Target,
    pub(crate) len: u64,
    pub(crate) depth: u16,
    /// The last node that is not translation-only to map the extent as data in this layer.
    pub(crate) mapped_by: Option<NodeId>,
    /// The first `blkverify` node passed below the walk's start ([`Gate::Verify`]): data read
    /// from the extent is compared with its reference.
    pub(crate) verify: Option<Verifier>,
    /// For a zero or hole target: host space the layer that answered keeps there
    /// ([`crate::driver::Kept`]), for block status.
    pub(crate) kept: Option<KeptAt>,
}

/// Host space a layer keeps for an extent that reads as zeros or through to its backing file
/// (QEMU's `ZERO_ALLOC` and `UNALLOCATED_ALLOC` clusters): where `qemu-img map` says it lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeptAt {
    /// The node holding it (the format node's file or data-file child).
    pub node: NodeId,
    /// Offset there of the extent's first byte.
    pub offset: u64,
}

/// The ranges a request was admitted for at nodes that hold requests, so a request the walk
/// resolves in several extents is admitted once at each node it passes whole (a `throttle`
/// above a format counts one request, not one per extent), and once per extent below the node
/// where it splits (those are sub-requests, as in QEMU).
#[derive(Default)]
pub(crate) struct Admitted(heapless::Vec<(NodeId, u64, u64), 4>);

impl Admitted {
    fn covers(&self, node: NodeId, offset: u64, len: u64) -> bool {
        self.0.iter().any(|&(n, from, to)| n == node && from <= offset && offset + len <= to)
    }

    fn note(&mut self, node: NodeId, offset: u64, len: u64) {
        // When full, later extents are admitted again: more holding, never less.
        let _ = self.0.push((node, offset, offset + len));
    }
}

/// Where a walk down the graph stands: the node it is at, the offset and length there, and
/// what it has passed. [`locate`] and [`locate_now`] drive it; it holds the rules both follow.
struct Walk {
    cur: NodeId,
    off: u64,
    n: u64,
    depth: u16,
    /// True if `cur` was reached through a backing link (and `depth` counts that link).
    via_backing: bool,
    /// The last node that is not translation-only to map the extent as data.
    mapped_by: Option<NodeId>,
    /// See [`Located::verify`].
    verify: Option<Verifier>,
    /// What the node that sent the walk down its backing link keeps for the range: if the
    /// backing node ends before it, the range reads as zeros at that node's depth, where QEMU
    /// reports it.
    kept_above: Option<KeptAt>,
}

/// What [`Walk::arrive`] found at the current node.
enum Arrival<'g, 'd> {
    /// The extent is resolved.
    Done(Located),
    /// A run of empty layers was passed: arrive again.
    Skipped,
    /// The node's driver must map the range.
    Map(&'g Node<'d>, &'g FormatState),
}

impl Walk {
    fn new(node: NodeId, offset: u64, len: u64) -> Self {
        Self { cur: node, off: offset, n: len, depth: 0, via_backing: false, mapped_by: None, verify: None, kept_above: None }
    }

    fn done(&self, target: Target, len: u64, depth: u16, mapped_by: Option<NodeId>) -> Located {
        Located { target, len, depth, mapped_by, verify: self.verify, kept: None }
    }

    /// Where `kept`, reported by the current node `here`, lies.
    fn kept_at(here: &Node<'_>, kept: Option<Kept>) -> Option<KeptAt> {
        kept.and_then(|k| Some(KeptAt { node: here.child(k.role)?, offset: k.offset }))
    }

    /// Handles the current node as far as no driver needs asking: the node's end, a leaf, a run
    /// of empty layers.
    fn arrive<'g, 'd>(&mut self, s: &Stack<'g, 'd>) -> Result<Arrival<'g, 'd>> {
        let here = s.node(self.cur)?;
        if self.off >= here.size() {
            // Below a larger overlay: past this node's end reads as zeros. As `qemu-img map`
            // (whose block status calls the overlay's range zero when its backing file is
            // shorter), the depth is the overlay's, not the short layer's.
            let (depth, kept) = if self.via_backing { (self.depth.saturating_sub(1), self.kept_above) } else { (self.depth, None) };
            return Ok(Arrival::Done(Located { kept, ..self.done(Target::Hole, self.n, depth, None) }));
        }
        self.n = self.n.min(here.size() - self.off);
        if let NodeKind::Leaf(_) = here.kind {
            return Ok(Arrival::Done(self.done(Target::Leaf(self.cur, self.off), self.n, self.depth, self.mapped_by)));
        }
        // A run of empty layers is passed at once, not layer by layer (see `skip`).
        if let Some((below, layers)) = skip::through_empty(s, self.cur, self.off, self.n) {
            self.cur = below;
            self.depth = self.depth.saturating_add(u16::from(layers));
            self.via_backing = true;
            // An empty layer keeps nothing.
            self.kept_above = None;
            return Ok(Arrival::Skipped);
        }
        Ok(Arrival::Map(here, s.driver_of_checked(self.cur)?))
    }

    /// Follows the mapping of the range by `here`, the current node: to a child, to the
    /// backing child, or to the end.
    fn follow(&mut self, here: &Node<'_>, mapping: Mapping) -> Result<Option<Located>> {
        match mapping {
            Mapping::Data { role, offset, len, .. } => {
                if here.pass.is_none() {
                    self.mapped_by = Some(self.cur);
                }
                if here.gate == Gate::Verify && self.verify.is_none() {
                    let reference = here.child(Role::Reference).ok_or(Error::BadGraph("blkverify without its reference"))?;
                    self.verify = Some(Verifier { reference, offset: self.off });
                }
                self.cur = here.child(role).ok_or(Error::BadGraph("mapping names a missing child"))?;
                self.off = offset;
                self.n = self.n.min(len);
                self.via_backing = false;
                self.kept_above = None;
            }
            Mapping::Zero { len, kept } => {
                let kept = Self::kept_at(here, kept);
                return Ok(Some(Located { kept, ..self.done(Target::Zero, self.n.min(len), self.depth, None) }));
            }
            Mapping::Sink { len } => return Ok(Some(self.done(Target::Sink, self.n.min(len), self.depth, Some(self.cur)))),
            Mapping::Unallocated { len, kept } => {
                self.n = self.n.min(len);
                let kept = Self::kept_at(here, kept);
                match here.child(Role::Backing) {
                    Some(backing) => {
                        self.cur = backing;
                        self.depth = self.depth.saturating_add(1);
                        self.via_backing = true;
                        self.kept_above = kept;
                    }
                    None => return Ok(Some(Located { kept, ..self.done(Target::Hole, self.n, self.depth, None) })),
                }
            }
            Mapping::Compressed { host_offset, csize, skip, len } => {
                let target = Target::Compressed { node: self.cur, host: host_offset, csize, skip };
                return Ok(Some(self.done(target, self.n.min(len), self.depth, Some(self.cur))));
            }
        }
        if self.n == 0 {
            return Err(Error::BadGraph("a driver mapped an empty extent"));
        }
        Ok(None)
    }
}

const CYCLE: Error = Error::BadGraph("walk longer than the graph has nodes (a cycle)");

/// Resolves the longest extent starting at `offset` (at most `len` bytes) of `node`, with the
/// backing depth. A request (`admit` names its kind and what it was admitted for already) is
/// admitted at every driver node it passes; a metadata query (block status) is not.
pub(crate) async fn locate(s: &Stack<'_, '_>, node: NodeId, offset: u64, len: u64, mut admit: Option<(ReqKind, &mut Admitted)>) -> Result<Located> {
    let mut w = Walk::new(node, offset, len);
    for _ in 0..s.io.walk_bound() {
        let (here, state) = match w.arrive(s)? {
            Arrival::Done(l) => return Ok(l),
            Arrival::Skipped => continue,
            Arrival::Map(here, state) => (here, state),
        };
        if let Some((kind, admitted)) = admit.as_mut().filter(|_| state.admits()) {
            if !admitted.covers(w.cur, w.off, w.n) {
                state.admit(s, w.cur, *kind, w.off, w.n).await?;
                admitted.note(w.cur, w.off, w.n);
            }
        }
        let mapping = match state.map_cached(s, w.cur, w.off, w.n) {
            Some(m) => m,
            None => state.map(s, w.cur, w.off, w.n).await?,
        };
        if let Some(l) = w.follow(here, mapping)? {
            return Ok(l);
        }
    }
    Err(CYCLE)
}

/// [`locate`] done at once, with no await: every driver on the way answers from memory
/// ([`crate::driver::Driver::map_cached`]) and none holds requests. `None` if one cannot, or on
/// anything unusual (then [`locate`] walks again and reports it).
fn locate_now(s: &Stack<'_, '_>, node: NodeId, offset: u64, len: u64) -> Option<Located> {
    let mut w = Walk::new(node, offset, len);
    for _ in 0..s.io.walk_bound() {
        let (here, state) = match w.arrive(s).ok()? {
            Arrival::Done(l) => return Some(l),
            Arrival::Skipped => continue,
            Arrival::Map(here, state) => (here, state),
        };
        if state.admits() {
            return None;
        }
        let mapping = state.map_cached(s, w.cur, w.off, w.n)?;
        if let Some(l) = w.follow(here, mapping).ok()? {
            return Some(l);
        }
    }
    None
}

/// Reads `buf` from byte `offset` of `node` as a request of its own (a filter's copying or
/// comparing aside: [`super::request`]): at a node that allocates and frees while written, the read is tracked there, so no cluster it reads is
/// freed (and reused) before it is done. Internal reads (copy-on-write sources) use [`read`].
pub(crate) async fn read_request(s: &Stack<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
    let _tracked = track_read(s, node, offset, buf.len() as u64).await?;
    read_tracked(s, node, offset, buf).await
}

/// What a read of `len` bytes at `offset` of `node` holds there while it runs, if the node
/// tracks reads ([`read_request`]), once no serialising request it overlaps is in flight;
/// `None` at a node that does not track them.
pub(crate) async fn track_read<'t>(s: &Stack<'t, '_>, node: NodeId, offset: u64, len: u64) -> Result<Option<ReadHold<'t>>> {
    if !s.state(node)?.is_some_and(|state| state.tracks_reads()) {
        return Ok(None);
    }
    Ok(Some(s.format_tracker.begin_read(node, offset, len).await))
}

/// [`read_request`] for a caller that holds the read's [`track_read`] itself
/// ([`crate::path::route`]).
pub(crate) async fn read_tracked(s: &Stack<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
    read_as(s, node, offset, buf, Some(ReqKind::Read)).await
}

/// Reads `buf` from byte `offset` of `node` for the io layer itself (a copy-on-write source, a
/// probe): not admitted at waiting nodes, not tracked at the node.
pub(crate) async fn read(s: &Stack<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<()> {
    read_as(s, node, offset, buf, None).await
}

/// [`read_request`] done at once, with no await, when every extent can be: warm metadata
/// ([`locate_now`]) and devices that read in the caller's thread ([`leaf::read_now`]). `None`
/// if one cannot; the caller then reads the whole buffer the general way (a read changes
/// nothing, so what was read here is simply read again).
pub(crate) fn read_request_now(s: &Stack<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8]) -> Option<Result<()>> {
    // The tracked read `read_request` takes at a format node waits only for serialising
    // requests; with none in flight, and nothing able to start while this runs, it needs none.
    if s.format_tracker.serialising() != 0 {
        return None;
    }
    let mut done = 0usize;
    while done < buf.len() {
        let l = locate_now(s, node, offset + done as u64, (buf.len() - done) as u64)?;
        if l.verify.is_some() {
            return None;
        }
        if let Err(e) = extent_now(s, l.target, &mut buf[done..done + l.len as usize])? {
            return Some(Err(e));
        }
        done += l.len as usize;
    }
    Some(Ok(()))
}

async fn read_as(s: &Stack<'_, '_>, node: NodeId, offset: u64, buf: &mut [u8], admit: Option<ReqKind>) -> Result<()> {
    let mut done = 0usize;
    let mut admitted = Admitted::default();
    while done < buf.len() {
        let rest = (buf.len() - done) as u64;
        let at = offset + done as u64;
        // Warm metadata and a device that reads in the caller's thread: no await at all.
        let l = match locate_now(s, node, at, rest) {
            Some(l) => l,
            None => locate(s, node, at, rest, admit.map(|k| (k, &mut admitted))).await?,
        };
        let part = &mut buf[done..done + l.len as usize];
        match extent_now(s, l.target, part) {
            Some(result) => result?,
            None => read_extent(s, l.target, part).await?,
        }
        if let (Some(v), Target::Leaf(..)) = (l.verify, l.target) {
            child_io::compare_with_reference(s, v, part).await?;
        }
        done += l.len as usize;
    }
    Ok(())
}

/// Reads one resolved extent into `part` at once — zeros, nothing, or a leaf read done in the
/// caller's thread — or `None` if it needs an await (a compressed cluster, a device that
/// queues); then nothing was read.
fn extent_now(s: &Stack<'_, '_>, target: Target, part: &mut [u8]) -> Option<Result<()>> {
    match target {
        Target::Leaf(leaf, at) => leaf::read_now(s, leaf, at, part),
        Target::Zero | Target::Hole => {
            part.fill(0);
            Some(Ok(()))
        }
        Target::Sink => Some(Ok(())),
        Target::Compressed { .. } => None,
    }
}

/// Reads one resolved extent into `part`.
async fn read_extent(s: &Stack<'_, '_>, target: Target, part: &mut [u8]) -> Result<()> {
    match target {
        Target::Leaf(leaf, at) => leaf::rw(s, leaf, at, Buf::Read(part)).await,
        Target::Zero | Target::Hole => {
            part.fill(0);
            Ok(())
        }
        Target::Sink => Ok(()),
        Target::Compressed { node: fmt, host, csize, skip } => s.driver(fmt)?.read_compressed(s, fmt, host, csize, skip, part).await,
    }
}

/// What one extent of a node is, as `qemu-img map` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// Data on a leaf at an offset (reached through the chain).
    Data {
        /// The leaf.
        leaf: NodeId,
        /// Offset on it.
        offset: u64,
        /// The format node that mapped it (a qcow2 node), or `None` if only translation nodes
        /// (raw) lie between the layer and the leaf.
        mapped_by: Option<NodeId>,
    },
    /// A compressed cluster (data, no plain offset).
    Compressed,
    /// A layer says zeros.
    Zero,
    /// No layer has it: zeros.
    Hole,
    /// Data no storage keeps (`null-co` without `read-zeroes`).
    Sink,
}

/// One extent of a node: its kind, length, and the backing depth where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// What it is.
    pub kind: ExtentKind,
    /// Length in bytes (at least 1).
    pub len: u64,
    /// Backing links followed (0: the node itself).
    pub depth: u16,
    /// For [`ExtentKind::Zero`] and [`ExtentKind::Hole`]: host space the layer that answered
    /// keeps there anyway, contiguous for `len` bytes (QEMU's block status gives its offset).
    pub kept: Option<KeptAt>,
}

/// The extent starting at `offset` of `node`, at most `len` bytes (QEMU's block status, for
/// `img map`). Reads metadata only.
pub async fn block_status(s: &Stack<'_, '_>, node: NodeId, offset: u64, len: u64) -> Result<Extent> {
    let l = locate(s, node, offset, len, None).await?;
    let kind = match l.target {
        Target::Leaf(leaf, offset) => ExtentKind::Data { leaf, offset, mapped_by: l.mapped_by },
        Target::Zero => ExtentKind::Zero,
        Target::Hole => ExtentKind::Hole,
        Target::Sink => ExtentKind::Sink,
        Target::Compressed { .. } => ExtentKind::Compressed,
    };
    Ok(Extent { kind, len: l.len, depth: l.depth, kept: l.kept })
}

/// True if guest `[from, to)` of `node` reads as zeros by its metadata (zero clusters, nothing
/// allocated down the chain), looking at a bounded number of extents.
pub(crate) async fn reads_zero(s: &Stack<'_, '_>, node: NodeId, from: u64, to: u64) -> Result<bool> {
    let mut at = from;
    for _ in 0..16 {
        if at >= to {
            return Ok(true);
        }
        let e = block_status(s, node, at, to - at).await?;
        if !matches!(e.kind, ExtentKind::Zero | ExtentKind::Hole) {
            return Ok(false);
        }
        at += e.len;
    }
    Ok(at >= to)
}
