//! Opening nodes from Strata's options grammar (QEMU `-blockdev` style).
//!
//! `driver=raw,offset=1M,file=disk0` opens a raw node over the node or device named `disk0`;
//! `file.driver=raw,file.file=disk0` nests. A bare name (`disk0`) means `file=disk0` with the
//! driver probed. Nested `file` children are collected first and opened bottom-up in a loop —
//! no recursion. Names resolve to existing nodes first, then through the caller's resolver
//! (the kernel's device catalog, or host files), never anything else.

use crate::dev::BlockDevice;
use crate::driver::{self, DriverCaps, FormatState, PROBE_BYTES};
use crate::error::{Error, Result};
use crate::graph::{Attachment, Child, Graph, Node, NodeId, NodeKind, Role, MAX_DEPTH};
use crate::io::limits::BlockLimits;
use crate::io::walk;
use crate::options::{Options, OptionsView};

/// Most options in one open.
pub const MAX_OPEN_OPTIONS: usize = 32;

/// Keys every format node accepts.
const COMMON_KEYS: &[&str] = &["driver", "node-name", "read-only", "file"];

impl<'d, const N: usize, const T: usize> Graph<'d, N, T> {
    /// Opens the node described by `text`; `resolve` turns a name into a device when no node has
    /// that name.
    pub async fn open(&mut self, text: &str, resolve: &mut dyn FnMut(&str) -> Option<&'d dyn BlockDevice>) -> Result<NodeId> {
        let opts: Options<'_, MAX_OPEN_OPTIONS> = Options::parse(text, Some("file"))?;
        let mut chain: heapless::Vec<OptionsView<'_, '_>, MAX_DEPTH> = heapless::Vec::new();
        let mut view = opts.root();
        loop {
            chain.push(view).map_err(|_| Error::BadGraph("options nest deeper than MAX_DEPTH"))?;
            match view.child("file") {
                Some(child) => view = child,
                None => break,
            }
        }
        let name = view.get("file").ok_or(Error::BadOption { key: "file", why: "missing" })?;
        let name = name.as_str().ok_or(Error::BadOption { key: "file", why: "names contain no commas" })?;
        // Nodes this open made, so that a failure can take them out again.
        let mut created: heapless::Vec<NodeId, { MAX_DEPTH + 1 }> = heapless::Vec::new();
        let mut below = match self.find(name) {
            Some(id) => id,
            None => {
                let device = resolve(name).ok_or(Error::NotFound)?;
                let id = self.add_leaf(name, device)?;
                let _ = created.push(id);
                id
            }
        };
        for view in chain.iter().rev() {
            match self.open_format(view, below).await {
                Ok(id) => {
                    let _ = created.push(id);
                    below = id;
                }
                Err(e) => {
                    // A failed open leaves the graph as it was: no half-built chain keeps its
                    // permissions on the file below. Newest first, so nothing removed is a child
                    // of a node that stays.
                    while let Some(id) = created.pop() {
                        self.remove(id);
                    }
                    return Err(e);
                }
            }
        }
        Ok(below)
    }

    /// Opens one format node described by `view` on top of `file`.
    async fn open_format(&mut self, view: &OptionsView<'_, '_>, file: NodeId) -> Result<NodeId> {
        let desc = match view.get("driver") {
            Some(name) => driver::by_name(name.as_str().unwrap_or(""))?,
            None => {
                let size = self.node(file)?.size;
                let mut head = [0u8; PROBE_BYTES];
                let n = (size as usize).min(PROBE_BYTES);
                walk::read(self, file, 0, &mut head[..n]).await?;
                driver::probe(&head[..n])
            }
        };
        if !desc.caps.contains(DriverCaps::FORMAT) {
            return Err(Error::UnknownDriver);
        }
        let mut allowed: heapless::Vec<&str, 16> = heapless::Vec::new();
        for key in COMMON_KEYS.iter().chain(desc.options) {
            let _ = allowed.push(key);
        }
        view.check_only(&allowed)?;
        let file_node = self.node(file)?;
        if !desc.caps.contains(DriverCaps::TRANSLATION_ONLY) {
            if let NodeKind::Format(_) = file_node.kind {
                if !file_node.driver.caps.contains(DriverCaps::TRANSLATION_ONLY) {
                    return Err(Error::BadGraph("a format's file child must be a device or a translation-only node"));
                }
            }
        }
        let asked_ro = match view.get("read-only") {
            Some(v) => v.parse_bool().map_err(Error::bad_value)?,
            None => false,
        };
        let read_only = asked_ro || file_node.read_only || !desc.caps.contains(DriverCaps::WRITE);
        let attachment = if read_only { Attachment::READER } else { Attachment::FORMAT_FILE };
        self.check_holders(file, attachment, None)?;
        let (state, size) = FormatState::open(desc, view, file_node.size)?;
        let limits = BlockLimits::inherit(&file_node.limits);
        let name = match view.get("node-name") {
            Some(v) => super::node_name(v.as_str().ok_or(Error::BadOption { key: "node-name", why: "names contain no commas" })?)?,
            None => self.auto_name()?,
        };
        let mut children = heapless::Vec::new();
        let _ = children.push(Child { role: Role::File, node: file, attachment });
        self.insert(Node {
            name,
            driver: desc,
            kind: NodeKind::Format(state),
            children,
            read_only,
            size,
            limits,
            flush: Default::default(),
        })
    }

    /// `#nINDEX` for the first free index.
    pub(super) fn auto_name(&self) -> Result<heapless::String<{ super::node::MAX_NODE_NAME }>> {
        let index = self.nodes.iter().position(Option::is_none).ok_or(Error::NoSpace { what: "graph node slots" })?;
        let mut s = heapless::String::new();
        let _ = core::fmt::write(&mut s, format_args!("#n{index}"));
        Ok(s)
    }
}
