//! The `blkdebug` filter (QEMU's `block/blkdebug.c`): passes every byte to its child, named
//! `image` as in QEMU (`driver=qcow2,file.driver=blkdebug,file.image.driver=file,
//! file.image.filename=X`), and fails or suspends requests where its rules say.
//!
//! Options as QEMU's: `inject-error.N.{event,errno,sector,once,immediately,state,iotype}`,
//! `set-state.N.{event,state,new_state}`, and the limits `align`, `max-transfer`,
//! `opt-write-zero`, `max-write-zero`, `opt-discard`, `max-discard` (checked as QEMU checks
//! them, then the node's [`BlockLimits`]; `max-write-zero` and `max-discard` cut
//! write-zeroes and discards). `config=FILE` (QEMU's rule file) is read by the host, which has
//! files, and given here as inline rules (`qemu-runner`'s `img::blkdebug_config`); the block
//! layer refuses it. The rules live in the graph's rule tables
//! ([`crate::io::debug`], which has the semantics and the capacities); events reach the node
//! when the format above it raises them, requests when they pass it (the walk's admission for
//! reads through the node, [`crate::io::child_io`] for the format's own I/O on it).

use super::{filter, Driver, DriverDesc, DriverId, Mapping};
use crate::error::{Error, Result};
use crate::io::debug::{self, Action, IoType, Rule, MAX_RULES};
use crate::io::events::{self, Event};
use crate::io::tracked::ReqKind;
use crate::io::Io;
use crate::node::{BlockLimits, NodeId, Pass};
use crate::options::{OptionsView, Value};

/// The descriptor.
pub static BLKDEBUG: DriverDesc = DriverDesc {
    name: debug::DRIVER_NAME,
    id: DriverId::Blkdebug,
    caps: filter::CAPS,
    probe: None,
    options: &[
        "image",
        "inject-error",
        "set-state",
        "align",
        "max-transfer",
        "opt-write-zero",
        "max-write-zero",
        "opt-discard",
        "max-discard",
    ],
};

/// The child key of a blkdebug node's options (QEMU's `image`).
pub const CHILD_KEY: &str = "image";

/// Largest value QEMU takes for a limit (`INT_MAX`, exclusive).
const INT_MAX: u64 = i32::MAX as u64;

/// The limits options, in bytes (0: not given).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Limits {
    align: u64,
    max_transfer: u64,
    opt_write_zero: u64,
    max_write_zero: u64,
    opt_discard: u64,
    max_discard: u64,
}

/// An open blkdebug node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blkdebug {
    size: u64,
    image: NodeId,
    limits: Limits,
}

fn bad(key: &'static str, why: &'static str) -> Error {
    Error::BadOption { key, why }
}

fn size_of(opts: &OptionsView<'_, '_>, key: &'static str) -> Result<u64> {
    match opts.get(key) {
        Some(v) => v.parse_size().map_err(|_| bad(key, "not a size")),
        None => Ok(0),
    }
}

/// QEMU's checks of the limits options (`blkdebug_open`'s "Cannot meet constraints with …").
fn parse_limits(opts: &OptionsView<'_, '_>) -> Result<Limits> {
    let l = Limits {
        align: size_of(opts, "align")?,
        max_transfer: size_of(opts, "max-transfer")?,
        opt_write_zero: size_of(opts, "opt-write-zero")?,
        max_write_zero: size_of(opts, "max-write-zero")?,
        opt_discard: size_of(opts, "opt-discard")?,
        max_discard: size_of(opts, "max-discard")?,
    };
    let fits = |v: u64, unit: u64| v == 0 || (v < INT_MAX && v.is_multiple_of(unit.max(1)));
    if l.align != 0 && (l.align >= INT_MAX || !l.align.is_power_of_two()) {
        return Err(bad("align", "Cannot meet constraints with align"));
    }
    if !fits(l.max_transfer, l.align) {
        return Err(bad(
            "max-transfer",
            "Cannot meet constraints with max-transfer",
        ));
    }
    if !fits(l.opt_write_zero, l.align) {
        return Err(bad(
            "opt-write-zero",
            "Cannot meet constraints with opt-write-zero",
        ));
    }
    if !fits(l.max_write_zero, l.opt_write_zero.max(l.align)) {
        return Err(bad(
            "max-write-zero",
            "Cannot meet constraints with max-write-zero",
        ));
    }
    if !fits(l.opt_discard, l.align) {
        return Err(bad(
            "opt-discard",
            "Cannot meet constraints with opt-discard",
        ));
    }
    if !fits(l.max_discard, l.opt_discard.max(l.align)) {
        return Err(bad(
            "max-discard",
            "Cannot meet constraints with max-discard",
        ));
    }
    Ok(l)
}

fn number(v: Option<Value<'_>>, key: &'static str, default: u64) -> Result<u64> {
    match v {
        Some(v) => v.parse_u64().map_err(|_| bad(key, "not a number")),
        None => Ok(default),
    }
}

fn flag(v: Option<Value<'_>>, key: &'static str) -> Result<bool> {
    match v {
        Some(v) => v.parse_bool().map_err(|_| bad(key, "not on or off")),
        None => Ok(false),
    }
}

/// `Some(event)` for an event Strata raises, `None` for one of QEMU's it never raises.
fn event_of(rule: &OptionsView<'_, '_>) -> Result<Option<Event>> {
    let v = rule
        .get("event")
        .ok_or(bad("event", "Missing event name for rule"))?;
    let name = v.as_str().ok_or(bad("event", "Invalid parameter"))?;
    match Event::by_name(name) {
        Some(e) => Ok(Some(e)),
        None if events::QEMU_ONLY.contains(&name) => Ok(None),
        None => Err(bad("event", "Invalid parameter")),
    }
}

/// The indices `N` of `list.N.*`, in numeric order.
fn indices(list: &OptionsView<'_, '_>) -> Result<heapless::Vec<u32, MAX_RULES>> {
    let mut out: heapless::Vec<u32, MAX_RULES> = heapless::Vec::new();
    for (key, _) in list.iter() {
        let head = key.split('.').next().unwrap_or(key);
        let n: u32 = head.parse().map_err(|_| {
            bad(
                "inject-error",
                "rules are numbered: inject-error.N.KEY, set-state.N.KEY",
            )
        })?;
        if !out.contains(&n) {
            out.push(n).map_err(|_| Error::NoSpace {
                what: "blkdebug rules (MAX_RULES)",
            })?;
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn push(rules: &mut heapless::Vec<Rule, MAX_RULES>, rule: Rule) -> Result<()> {
    rules.push(rule).map_err(|_| Error::NoSpace {
        what: "blkdebug rules (MAX_RULES)",
    })
}

/// The rules of `inject-error.N.*` then `set-state.N.*` (QEMU's order).
fn parse_rules(opts: &OptionsView<'_, '_>) -> Result<heapless::Vec<Rule, MAX_RULES>> {
    let mut rules = heapless::Vec::new();
    if let Some(list) = opts.child("inject-error") {
        for n in indices(&list)? {
            let mut buf = [0u8; 10];
            let rule = list
                .child(fmt_u32(n, &mut buf))
                .ok_or(bad("inject-error", "rule without keys"))?;
            rule.check_only(&[
                "event",
                "errno",
                "sector",
                "once",
                "immediately",
                "state",
                "iotype",
            ])?;
            let event = event_of(&rule)?;
            let errno = number(rule.get("errno"), "errno", 5)?;
            let errno = u16::try_from(errno).map_err(|_| bad("errno", "out of range"))?;
            let sector = match rule.get("sector") {
                Some(v) => Some(
                    v.parse_u64()
                        .map_err(|_| bad("sector", "not a number"))?
                        .checked_mul(512)
                        .ok_or(bad("sector", "out of range"))?,
                ),
                None => None,
            };
            let iotypes = match rule.get("iotype") {
                Some(v) => IoType::by_name(v.as_str().unwrap_or(""))
                    .ok_or(bad("iotype", "Invalid parameter"))?
                    .bit(),
                None => IoType::DEFAULT_MASK,
            };
            let state = u32::try_from(number(rule.get("state"), "state", 0)?)
                .map_err(|_| bad("state", "out of range"))?;
            let action = Action::Inject {
                errno,
                offset: sector,
                once: flag(rule.get("once"), "once")?,
                immediately: flag(rule.get("immediately"), "immediately")?,
                iotypes,
            };
            if let Some(event) = event {
                push(&mut rules, Rule::new(event, state, action))?;
            }
        }
    }
    if let Some(list) = opts.child("set-state") {
        for n in indices(&list)? {
            let mut buf = [0u8; 10];
            let rule = list
                .child(fmt_u32(n, &mut buf))
                .ok_or(bad("set-state", "rule without keys"))?;
            rule.check_only(&["event", "state", "new_state"])?;
            let event = event_of(&rule)?;
            let state = u32::try_from(number(rule.get("state"), "state", 0)?)
                .map_err(|_| bad("state", "out of range"))?;
            let new_state = u32::try_from(number(rule.get("new_state"), "new_state", 0)?)
                .map_err(|_| bad("new_state", "out of range"))?;
            if let Some(event) = event {
                push(
                    &mut rules,
                    Rule::new(event, state, Action::SetState { new_state }),
                )?;
            }
        }
    }
    Ok(rules)
}

/// `n` in decimal, in `buf`.
fn fmt_u32(mut n: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    core::str::from_utf8(&buf[i..]).unwrap_or("0")
}

fn io_type(kind: ReqKind) -> Option<IoType> {
    match kind {
        ReqKind::Read => Some(IoType::Read),
        ReqKind::Write => Some(IoType::Write),
        ReqKind::Discard => Some(IoType::Discard),
        ReqKind::Truncate => None,
    }
}

fn clamp(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Driver for Blkdebug {
    type Pending = core::convert::Infallible;

    const ADMITS: bool = true;

    async fn open(
        io: &Io<'_, '_>,
        file: Option<NodeId>,
        opts: &OptionsView<'_, '_>,
        _read_only: bool,
    ) -> Result<Self> {
        let image = file.ok_or(bad("image", "missing"))?;
        if opts.get("config").is_some() {
            return Err(Error::Unsupported(
                "blkdebug config files (give the rules inline)",
            ));
        }
        let limits = parse_limits(opts)?;
        let rules = parse_rules(opts)?;
        io.debug_install(image, &rules)?;
        Ok(Self {
            size: io.node(image)?.size(),
            image,
            limits,
        })
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn pass(&self) -> Option<Pass> {
        Some(filter::PASS)
    }

    fn limits(&self, inherited: BlockLimits) -> BlockLimits {
        let l = self.limits;
        let mut out = inherited;
        if l.align != 0 {
            out.request_alignment = clamp(l.align);
        }
        if l.max_transfer != 0 {
            out.max_transfer = clamp(l.max_transfer);
        }
        if l.opt_write_zero != 0 {
            out.write_zeroes_alignment = clamp(l.opt_write_zero);
        }
        if l.opt_discard != 0 {
            out.discard_alignment = clamp(l.opt_discard);
        }
        if l.max_write_zero != 0 {
            out.max_write_zeroes = clamp(l.max_write_zero);
        }
        if l.max_discard != 0 {
            out.max_discard = clamp(l.max_discard);
        }
        out
    }

    async fn admit(
        &self,
        io: &Io<'_, '_>,
        node: NodeId,
        kind: ReqKind,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        match io_type(kind) {
            Some(t) => io.debug_check(node, t, offset, len).await,
            None => Ok(()),
        }
    }

    async fn map(&self, _io: &Io<'_, '_>, _node: NodeId, offset: u64, len: u64) -> Result<Mapping> {
        Ok(filter::map(offset, len))
    }

    fn map_now(&self, offset: u64, len: u64) -> Option<Mapping> {
        Some(filter::map(offset, len))
    }

    async fn close(&self, io: &Io<'_, '_>, _node: NodeId) -> Result<()> {
        io.debug_uninstall(self.image);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::fmt_u32;

    #[test]
    fn decimal() {
        let mut b = [0u8; 10];
        assert_eq!(fmt_u32(0, &mut b), "0");
        assert_eq!(fmt_u32(17, &mut b), "17");
        assert_eq!(fmt_u32(u32::MAX, &mut b), "4294967295");
    }
}
