//! The write executor: drivers plan, this code moves the data, drivers commit
//! (`docs/ARCHITECTURE.md`, "Writes").
//!
//! A write at a node first follows translation-only nodes down (admitted at each); at a leaf
//! the bytes go straight down. At a driver node it takes the request the driver asks for
//! ([`FormatState::begin_write`]) and then asks for a plan part by part: an in-place part goes to
//! the child, a `null-co` part nowhere, and an allocation is executed here — the copy-on-write
//! sources read through the walk (the node's own view of the guest range: backing chain,
//! compressed or shared cluster), then head, data and tail written to the child as **one**
//! scatter-gather request when they are contiguous, which they are by the plan's construction —
//! and then handed back to the driver to commit. No driver calls up into this module.

use super::walk::{self, reads_zero};
use super::Stack;
use crate::driver::{Allocation, Cow, FormatState, WritePlan};
use crate::error::{Error, Result};
use crate::io::events::Event;
use crate::io::leaf::{self, Buf};
use crate::io::tracked::ReqKind;
use crate::io::child_io;
use crate::node::{NodeId, Role, MAX_DEPTH};

/// Follows translation-only nodes down from byte `offset` of `node` for `len` bytes, admitting
/// the request at each and checking each node's write threshold: returns the first node that is a leaf or maps for itself, and the
/// offset there. The range must lie inside every node on the way.
pub(crate) async fn descend(s: &Stack<'_, '_>, node: NodeId, offset: u64, len: u64, kind: ReqKind) -> Result<(NodeId, u64)> {
    let (mut cur, mut off) = (node, offset);
    // The common case first, without a step of the loop: the request starts where it lands.
    let here = s.node(cur)?;
    if here.pass.is_none() {
        return match off.checked_add(len) {
            Some(end) if end <= here.size() => {
                here.threshold.check(off, len);
                Ok((cur, off))
            }
            _ => Err(Error::OutOfRange { offset: off, len, size: here.size() }),
        };
    }
    for _ in 0..MAX_DEPTH {
        let here = s.node(cur)?;
        match off.checked_add(len) {
            Some(end) if end <= here.size() => {}
            _ => return Err(Error::OutOfRange { offset: off, len, size: here.size() }),
        }
        here.threshold.check(off, len);
        let Some(pass) = here.pass else { return Ok((cur, off)) };
        let state = s.driver(cur)?;
        if state.admits() {
            state.admit(s, cur, kind, off, len).await?;
        }
        cur = here.child(pass.role).ok_or(Error::BadGraph("translation names a missing child"))?;
        off += pass.offset;
    }
    Err(Error::BadGraph("graph deeper than MAX_DEPTH"))
}

/// Writes `buf` at byte `offset` of `node` (a verifying filter's second write aside:
/// [`super::request`]).
pub(crate) async fn write(s: &Stack<'_, '_>, node: NodeId, offset: u64, buf: &[u8]) -> Result<()> {
    let len = buf.len() as u64;
    let (node, offset) = descend(s, node, offset, len, ReqKind::Write).await?;
    let Some(state) = s.state(node)? else { return leaf::rw(s, node, offset, Buf::Write(buf)).await };
    if state.admits() {
        state.admit(s, node, ReqKind::Write, offset, len).await?;
    }
    let _request = state.begin_write(s, node, ReqKind::Write, offset, len).await?;
    write_planned(s, node, state, offset, buf).await
}

/// Writes `buf` at `offset` of driver node `node` plan by plan, under the request the caller
/// took with [`FormatState::begin_write`].
pub(crate) async fn write_planned(s: &Stack<'_, '_>, node: NodeId, state: &FormatState, offset: u64, buf: &[u8]) -> Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let rest = &buf[done..];
        let n = match state.plan_write(s, node, pos, rest.len() as u64).await? {
            WritePlan::Child { role, offset: at, len, grow_to } => {
                let n = (len as usize).min(rest.len());
                let child = child(s, node, role)?;
                child_io::grow(s, child, grow_to)?;
                child_io::write(s, child, at, &rest[..n]).await?;
                n
            }
            WritePlan::Sink { len } => (len as usize).min(rest.len()),
            WritePlan::Allocate(a, pending) => {
                let n = (a.len as usize).min(rest.len());
                execute(s, node, &a, &rest[..n]).await?;
                state.commit_write(s, node, pending).await?;
                n
            }
        };
        if n == 0 {
            return Err(Error::BadGraph("a driver planned an empty write"));
        }
        done += n;
    }
    Ok(())
}

/// The child of `node` in `role`.
fn child(s: &Stack<'_, '_>, node: NodeId, role: Role) -> Result<NodeId> {
    s.node(node)?.child(role).ok_or(Error::BadGraph("plan names a missing child"))
}

/// What one copy-on-write span needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Nothing to write: the host bytes read as zeros already.
    Nothing,
    /// Zeros.
    Zeros,
    /// The source's bytes.
    Bytes,
}

/// Executes allocation `a` of node `node`: copy-on-write sources read, then head, `data` and
/// tail written to the child — one request where the bounce pool lends a buffer per span.
async fn execute(s: &Stack<'_, '_>, node: NodeId, a: &Allocation, data: &[u8]) -> Result<()> {
    let child = child(s, node, a.role)?;
    child_io::grow(s, child, a.grow_to)?;
    let spans = [(a.head, fill_kind(s, node, a, a.head).await?), (a.tail, fill_kind(s, node, a, a.tail).await?)];
    let in_buffers = spans.iter().filter(|(c, f)| *f != Fill::Nothing && c.is_some_and(|c| fits(s, &c))).count();
    let lendable = s.bounce.total().saturating_sub(1).min(in_buffers);
    let mut bounce = if lendable > 0 { Some(s.bounce.take_for_copy(lendable).await?) } else { None };
    let (b0, b1) = bounce.as_mut().map_or((None, None), |b| b.pair());
    let mut lent = [b0, b1].into_iter();
    // Spans that cannot ride along (no buffer) are written on their own first; the data and
    // the spans in buffers go as one request.
    let mut edges: [Option<Edge<'_>>; 2] = [None, None];
    for (i, (span, fill)) in spans.iter().enumerate() {
        let Some(c) = span else { continue };
        let zeros = match fill {
            Fill::Nothing => continue,
            Fill::Zeros => true,
            Fill::Bytes => false,
        };
        match fits(s, c).then(|| lent.next().flatten()).flatten() {
            Some(buf) => {
                let used = c.len as usize;
                if zeros {
                    buf[..used].fill(0);
                } else {
                    load(s, node, c, &mut buf[..used]).await?;
                }
                edges[i] = Some(Edge { buf, used });
            }
            None => copy_alone(s, node, child, c, zeros).await?,
        }
    }
    let [head, tail] = edges;
    let cow = head.is_some() || tail.is_some();
    let start = a.host - head.as_ref().map_or(0, |h| h.used as u64);
    let align = s.node(child)?.limits.request_alignment as usize;
    let parts = assemble(head, data, tail, start, align);
    if cow {
        s.event(node, Event::CowWrite).await?;
    }
    s.event(node, Event::WriteAio).await?;
    child_io::write_vectored(s, child, start, parts.as_slice()).await
}

/// A copy-on-write span in a bounce buffer: `buf[..used]` holds it.
struct Edge<'b> {
    buf: &'b mut [u8],
    used: usize,
}

/// The parts of one write of `head`, `data` and `tail` from host offset `start`: the data's
/// unaligned edges are copied into the spans' buffers where they have room, so every part
/// starts and ends on an `align` boundary and the leaf can take them as one request without
/// read-modify-write; a small write becomes a single buffer.
fn assemble<'a>(head: Option<Edge<'a>>, data: &'a [u8], tail: Option<Edge<'a>>, start: u64, align: usize) -> heapless::Vec<&'a [u8], 3> {
    let mut parts = heapless::Vec::new();
    let (mut head, mut data, mut tail) = (head, data, tail);
    if let Some(h) = head.as_mut() {
        // Everything in the head's buffer if it fits, else up to the first aligned byte.
        let whole = data.len() + tail.as_ref().map_or(0, |t| t.used);
        let take = if h.used + whole <= h.buf.len() { data.len() } else { ((start as usize + h.used).next_multiple_of(align) - (start as usize + h.used)).min(data.len()) };
        if h.used + take <= h.buf.len() {
            h.buf[h.used..h.used + take].copy_from_slice(&data[..take]);
            h.used += take;
            data = &data[take..];
            if data.is_empty() {
                if let Some(t) = tail.take() {
                    if h.used + t.used <= h.buf.len() {
                        h.buf[h.used..h.used + t.used].copy_from_slice(&t.buf[..t.used]);
                        h.used += t.used;
                    } else {
                        tail = Some(t);
                    }
                }
            }
        }
    }
    if let Some(t) = tail.as_mut() {
        // The data's unaligned end, in front of the tail.
        let end = start as usize + head.as_ref().map_or(0, |h| h.used) + data.len();
        let take = (end % align).min(data.len());
        if take > 0 && t.used + take <= t.buf.len() {
            t.buf.copy_within(..t.used, take);
            t.buf[..take].copy_from_slice(&data[data.len() - take..]);
            t.used += take;
            data = &data[..data.len() - take];
        }
    }
    if let Some(h) = head {
        let _ = parts.push(h.buf.split_at(h.used).0);
    }
    if !data.is_empty() {
        let _ = parts.push(data);
    }
    if let Some(t) = tail {
        let _ = parts.push(t.buf.split_at(t.used).0);
    }
    parts
}

/// True if span `c` fits one bounce buffer.
fn fits(s: &Stack<'_, '_>, c: &Cow) -> bool {
    c.len <= s.bounce.buffer_size() as u64
}

/// What span `c` of allocation `a` needs written.
async fn fill_kind(s: &Stack<'_, '_>, node: NodeId, a: &Allocation, c: Option<Cow>) -> Result<Fill> {
    let Some(c) = c else { return Ok(Fill::Nothing) };
    let zeros = c.zeros || reads_zero(s, node, c.guest, c.guest + c.len).await?;
    Ok(match (zeros, a.fresh) {
        (true, true) => Fill::Nothing,
        (true, false) => Fill::Zeros,
        (false, _) => Fill::Bytes,
    })
}

/// Fills `buf` with what the node reads at span `c`'s guest range.
async fn load(s: &Stack<'_, '_>, node: NodeId, c: &Cow, buf: &mut [u8]) -> Result<()> {
    s.event(node, Event::CowRead).await?;
    walk::read(s, node, c.guest, buf).await
}

/// Writes span `c` on its own: zeros as a write-zeroes the device can offload (as QEMU does for
/// a zero copy-on-write), anything else copied through one bounce buffer in pieces.
async fn copy_alone(s: &Stack<'_, '_>, node: NodeId, child: NodeId, c: &Cow, zeros: bool) -> Result<()> {
    if zeros {
        s.event(node, Event::CowWrite).await?;
        return child_io::write_zeroes(s, child, c.host, c.len).await;
    }
    let mut bounce = s.bounce.take_for_copy(1).await?;
    let buf = bounce.get(0).ok_or(Error::NoSpace { what: "bounce buffers" })?;
    let mut at = 0u64;
    while at < c.len {
        let n = ((c.len - at) as usize).min(buf.len());
        let piece = Cow { guest: c.guest + at, host: c.host + at, len: n as u64, zeros: false };
        load(s, node, &piece, &mut buf[..n]).await?;
        s.event(node, Event::CowWrite).await?;
        child_io::write(s, child, piece.host, &buf[..n]).await?;
        at += n as u64;
    }
    Ok(())
}
