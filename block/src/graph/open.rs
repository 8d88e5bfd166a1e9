//! Opening nodes from Strata's options grammar (QEMU `-blockdev` style), with whole backing
//! chains and data files.
//!
//! `driver=raw,offset=1M,file=disk0` opens a raw node over the node or device named `disk0`;
//! `file.driver=raw,file.file=disk0` nests. A bare name (`disk0`) means `file=disk0` with the
//! driver probed. Nested `file` children are collected first and opened bottom-up in a loop —
//! no recursion.
//!
//! A format that names more files (qcow2: a data file, a backing file) gets them next, again in
//! a loop: the top image's data file and backing file, then the backing image's, and so on, at
//! most [`Graph::backing_chain`] images below the top (a capacity the embedder sets); a file met
//! twice in one chain is a loop and an error. The loop check walks the chain opened so far in
//! the graph itself, so no list sized by the chain's depth is kept beside it. A backing image's format is its parent's `backing_fmt` if named, else probed.
//! Options of the top node override what its header says: `backing=null` (no backing),
//! `backing=NAME`, `data-file=NAME`.
//!
//! Names go through the caller's [`Resolver`] — the kernel's device catalog, or host files
//! relative to the referring image ([`NameRequest::referrer`] says which leaf holds it) — never
//! anything else. Before that, names from images are checked here: not empty, at most 1023
//! bytes, UTF-8, no NUL, no protocol prefix (`json:`, `nbd:`: a `:` before any `/`).

use crate::dev::BlockDevice;
use crate::driver::{self, DriverCaps, DriverDesc, FormatState, Links, PROBE_BYTES};
use crate::error::{Error, Result};
use crate::graph::{Attachment, Child, Graph, Node, NodeId, NodeKind, Role, MAX_DEPTH};
use crate::io::child_io;
use crate::node::BlockLimits;
use crate::options::{Options, OptionsView};
use crate::path::walk;

/// Most options in one open (about 48 bytes each while the open runs). 128: a blkdebug node
/// with a full rule table (`MAX_RULES` rules of up to four keys) fits in one.
pub const MAX_OPEN_OPTIONS: usize = 128;

/// Longest backing or data-file name.
pub const MAX_NAME: usize = 1023;

/// Keys every format node accepts.
const COMMON_KEYS: &[&str] = &["driver", "node-name", "read-only", "file", "write-threshold"];

/// What ends a chain of options: a protocol driver's node, or a host file by name.
#[derive(Clone, Copy)]
enum Protocol {
    /// `driver=null-co,…`: a node without a file child.
    Driver(&'static DriverDesc),
    /// `driver=file,filename=NAME` (QEMU's file protocol): the leaf `NAME` resolves to.
    File,
}

/// A name the opener needs turned into a device.
#[derive(Clone, Copy)]
pub struct NameRequest<'a, 'd> {
    /// The name as written (in the options, or in an image header).
    pub name: &'a str,
    /// What it is for: [`Role::File`] for the name the user gave, [`Role::Backing`] or
    /// [`Role::DataFile`] for names read from an image.
    pub role: Role,
    /// For names read from an image: the leaf device that image lives on (host resolvers take
    /// relative names relative to it).
    pub referrer: Option<&'d dyn BlockDevice>,
}

/// Turns names into devices: the kernel's device catalog, host files, a test's table.
pub trait Resolver<'d> {
    /// The device for `req`, or why not ([`Error::NotFound`], [`Error::BadName`], ...).
    fn resolve(&mut self, req: &NameRequest<'_, 'd>) -> Result<&'d dyn BlockDevice>;

    /// False to open images without their backing files (QEMU's `BDRV_O_NO_BACKING`, as
    /// `qemu-img info` does): unallocated ranges then read as zeros.
    fn follow_backing(&mut self) -> bool {
        true
    }

    /// For a backing or data-file name whose file is a window of the device [`Resolver::resolve`]
    /// gave (many files packed into one disk): the window, `(offset, size)` in bytes. The file
    /// is then opened as a `raw` node with that `offset` and `size` over the device. `None` (the
    /// default): the whole device.
    fn window(&mut self, req: &NameRequest<'_, 'd>) -> Option<(u64, u64)> {
        let _ = req;
        None
    }
}

/// A resolver from a closure over names only (no referrer): `None` is [`Error::NotFound`].
struct ByName<'r, 'd>(&'r mut dyn FnMut(&str) -> Option<&'d dyn BlockDevice>);

impl<'d> Resolver<'d> for ByName<'_, 'd> {
    fn resolve(&mut self, req: &NameRequest<'_, 'd>) -> Result<&'d dyn BlockDevice> {
        (self.0)(req.name).ok_or(Error::NotFound)
    }
}

/// Checks a backing or data-file name read from an image (see the module docs).
pub fn check_name(name: &str) -> Result<()> {
    let refuse = |what| Err(Error::BadName { what });
    if name.is_empty() {
        return refuse("empty file name");
    }
    if name.len() > MAX_NAME {
        return refuse("file name longer than 1023 bytes");
    }
    if name.contains('\0') {
        return refuse("file name contains NUL");
    }
    let head = name.split('/').next().unwrap_or(name);
    if head.contains(':') {
        return refuse("protocol prefix (json:, nbd:, ...) refused");
    }
    Ok(())
}

/// The key under which `view` names its file child: `file`, or the driver's own (`image` for
/// `blkdebug`).
fn child_key(view: &OptionsView<'_, '_>) -> &'static str {
    view.get("driver").and_then(|d| d.as_str()).and_then(|d| driver::by_name(d).ok()).map_or("file", |d| d.child_key())
}

/// `view` and the file children below it, top first (each view's child under its driver's
/// child key).
fn views_down<'o, 'a>(top: OptionsView<'o, 'a>) -> Result<heapless::Vec<OptionsView<'o, 'a>, MAX_DEPTH>> {
    let mut chain = heapless::Vec::new();
    let mut view = top;
    loop {
        chain.push(view).map_err(|_| Error::BadGraph("options nest deeper than MAX_DEPTH"))?;
        match view.child(child_key(&view)) {
            Some(child) => view = child,
            None => return Ok(chain),
        }
    }
}

/// True if `view` opens a `blkverify` node.
#[cfg(feature = "blkverify")]
fn is_blkverify(view: &OptionsView<'_, '_>) -> bool {
    view.get("driver").is_some_and(|d| d.eq_str(driver::blkverify::BLKVERIFY.name))
}

/// Built without the `blkverify` feature: no view opens one (`driver=blkverify` is unknown).
#[cfg(not(feature = "blkverify"))]
fn is_blkverify(_view: &OptionsView<'_, '_>) -> bool {
    false
}

/// The options key of blkverify's reference child.
#[cfg(feature = "blkverify")]
const BLKVERIFY_REFERENCE: &str = driver::blkverify::REFERENCE_KEY;
#[cfg(not(feature = "blkverify"))]
const BLKVERIFY_REFERENCE: &str = "raw";

fn same_device(a: &dyn BlockDevice, b: &dyn BlockDevice) -> bool {
    core::ptr::addr_eq(a as *const dyn BlockDevice, b as *const dyn BlockDevice)
}

/// Nodes made by one open, so that a failure can take them out again: at most the graph's `N`.
type Created<const N: usize> = heapless::Vec<NodeId, N>;

/// The error of an open whose backing chain is deeper than the graph's capacity.
pub const CHAIN_TOO_DEEP: Error = Error::BadGraph("backing chain longer than the graph's backing-chain capacity (Graph::set_backing_chain)");

impl<'d, const N: usize, const T: usize> Graph<'d, N, T> {
    /// Opens the node described by `text`; `resolve` turns a name into a device when no node has
    /// that name (names read from images are passed as they are).
    pub async fn open(&mut self, text: &str, resolve: &mut dyn FnMut(&str) -> Option<&'d dyn BlockDevice>) -> Result<NodeId> {
        self.open_with(text, &mut ByName(resolve)).await
    }

    /// Opens the node described by `text`, with its backing chain and data files, resolving
    /// names through `resolver`. A failure leaves the graph as it was.
    pub async fn open_with(&mut self, text: &str, resolver: &mut dyn Resolver<'d>) -> Result<NodeId> {
        let opts: Options<'_, MAX_OPEN_OPTIONS> = Options::parse(text, Some("file"))?;
        let chain = views_down(opts.root())?;
        let mut created = Created::<N>::new();
        let result = async {
            // A blkverify node's reference (`raw`) is a second subtree: opened first, on its own,
            // and linked to the node when the main chain opens it.
            let reference = match chain.iter().filter(|v| is_blkverify(v)).count() {
                0 => None,
                1 => {
                    let at = chain.iter().find(|v| is_blkverify(v)).and_then(|v| v.child(BLKVERIFY_REFERENCE));
                    let sub = views_down(at.ok_or(Error::BadOption { key: "raw", why: "missing (blkverify's reference)" })?)?;
                    if sub.iter().any(is_blkverify) {
                        return Err(Error::Unsupported("blkverify inside blkverify"));
                    }
                    Some(self.open_inner(&sub, resolver, &mut created, None).await?)
                }
                _ => return Err(Error::Unsupported("more than one blkverify node in one open")),
            };
            self.open_inner(&chain, resolver, &mut created, reference).await
        }
        .await;
        if result.is_err() {
            // A failed open leaves the graph as it was: no half-built chain keeps its
            // permissions on the files below. Newest first.
            while let Some(id) = created.pop() {
                self.remove(id);
            }
        }
        result
    }

    /// Opens one chain of views (each the child of the one before): its leaf or protocol node,
    /// then the formats and filters upwards, each format's links right after it. `reference`:
    /// the already opened subtree the chain's blkverify node compares with.
    async fn open_inner(&mut self, chain: &[OptionsView<'_, '_>], resolver: &mut dyn Resolver<'d>, created: &mut Created<N>, reference: Option<NodeId>) -> Result<NodeId> {
        let (innermost, formats) = chain.split_last().ok_or(Error::BadOption { key: "file", why: "missing" })?;
        let protocol = match innermost.get("driver") {
            // QEMU's file protocol: the leaf the resolver opens, as `file=NAME` names it.
            Some(name) if name.eq_str("file") && innermost.get(child_key(innermost)).is_none() => {
                innermost.check_only(&["driver", "filename", "node-name", "read-only", "write-threshold"])?;
                Some(Protocol::File)
            }
            Some(name) if innermost.get(child_key(innermost)).is_none() => Some(Protocol::Driver(driver::by_name(name.as_str().unwrap_or(""))?)),
            _ => None,
        };
        let mut below = match protocol {
            // A node that ends the graph itself (`driver=null-co,size=…`).
            Some(Protocol::Driver(desc)) => {
                let id = self.open_node(innermost, None, desc, false).await?;
                created.push(id).map_err(|_| Error::BadGraph("open made too many nodes"))?;
                id
            }
            Some(Protocol::File) | None => {
                let key = if protocol.is_some() { "filename" } else { child_key(innermost) };
                let name = innermost.get(key).ok_or(Error::BadOption { key, why: "missing" })?;
                let name = name.as_str().ok_or(Error::BadOption { key, why: "names contain no commas" })?;
                // A file-protocol leaf may carry its own node name; otherwise it is its file's.
                let node_name = match (protocol, innermost.get("node-name")) {
                    (Some(Protocol::File), Some(v)) => v.as_str().ok_or(Error::BadOption { key: "node-name", why: "names contain no commas" })?,
                    _ => name,
                };
                match self.find(node_name) {
                    Some(id) => id,
                    None => {
                        let device = resolver.resolve(&NameRequest { name, role: Role::File, referrer: None })?;
                        let id = self.add_leaf(node_name, device)?;
                        created.push(id).map_err(|_| Error::BadGraph("open made too many nodes"))?;
                        id
                    }
                }
            }
        };
        if matches!(protocol, Some(Protocol::File)) {
            self.node(below)?.threshold.set(write_threshold(innermost)?);
        }
        let formats = if protocol.is_some() { formats } else { chain };
        // Each format's backing chain and data file open right after it, before the filters
        // above it (a `throttle` or `copy-on-read` over a qcow2 image): nodes that only pass
        // bytes through name no files, and a filter may look down the chain it sits on.
        for view in formats.iter().rev() {
            let id = self.open_format(view, below, None).await?;
            created.push(id).map_err(|_| Error::BadGraph("open made too many nodes"))?;
            self.open_links(id, Some(*view), resolver, created).await?;
            if let (Some(reference), true) = (reference, is_blkverify(view)) {
                let attachment = if self.node(id)?.read_only { Attachment::READER } else { Attachment::FORMAT_FILE };
                self.attach_child(id, Role::Reference, reference, attachment)?;
            }
            below = id;
        }
        Ok(below)
    }

    /// Opens the data files and the backing chain of `top` (see the module docs).
    async fn open_links(
        &mut self,
        top: NodeId,
        top_view: Option<OptionsView<'_, '_>>,
        resolver: &mut dyn Resolver<'d>,
        created: &mut Created<N>,
    ) -> Result<()> {
        let mut cur = top;
        let mut view = top_view;
        let mut buf = [0u8; MAX_NAME];
        let capacity = self.backing_chain;
        for depth in 0..=capacity {
            let node = self.node(cur)?;
            let Some(state) = self.state(cur)? else { return Ok(()) };
            let links = state.links();
            let mut fmt = [0u8; 16];
            let fmt_len = links.backing_format.map_or(0, |f| {
                let n = f.len().min(fmt.len());
                fmt[..n].copy_from_slice(&f.as_bytes()[..n]);
                n
            });
            let (backing_ref, data_file_ref, needs_data_file) = (links.backing, links.data_file, links.needs_data_file);
            let overridden = view.is_some_and(|v| v.get("backing").is_some() || v.get("data-file").is_some());
            if links == Links::default() && !overridden {
                return Ok(()); // names nothing (raw, null-co)
            }
            let file = node.child(Role::File).ok_or(Error::BadGraph("driver node without a file child"))?;
            let referrer = self.leaf_device(file)?;
            let read_only = node.read_only;

            if needs_data_file {
                let given = view.and_then(|v| v.get("data-file")).map(|v| v.as_str().ok_or(Error::BadOption { key: "data-file", why: "names contain no commas" }));
                let name = match (given, data_file_ref) {
                    (Some(n), _) => n?,
                    (None, Some(r)) => self.read_name(file, r.offset, r.len, &mut buf).await?,
                    (None, None) => return Err(Error::BadImage { what: "external data file needed but not named" }),
                };
                check_name(name)?;
                let req = NameRequest { name, role: Role::DataFile, referrer: Some(referrer) };
                let dev = resolver.resolve(&req)?;
                let window = resolver.window(&req);
                if self.chain_holds(top, dev, window.map_or(0, |w| w.0))? {
                    return Err(Error::BadGraph("a data file is an image of the same chain"));
                }
                let leaf = self.file_for(name, dev, window, created).await?;
                let attachment = if read_only { Attachment::READER } else { Attachment::FORMAT_FILE };
                self.attach_child(cur, Role::DataFile, leaf, attachment)?;
            }

            let given = view.and_then(|v| v.get("backing")).map(|v| v.as_str().ok_or(Error::BadOption { key: "backing", why: "names contain no commas" }));
            let name = match (given, backing_ref) {
                (Some(n), _) => {
                    let n = n?;
                    if n == "null" || n.is_empty() {
                        return Ok(());
                    }
                    n
                }
                (None, Some(r)) => self.read_name(file, r.offset, r.len, &mut buf).await?,
                (None, None) => return Ok(()),
            };
            if !resolver.follow_backing() {
                return Ok(());
            }
            if depth == capacity {
                return Err(CHAIN_TOO_DEEP);
            }
            check_name(name)?;
            let req = NameRequest { name, role: Role::Backing, referrer: Some(referrer) };
            let dev = resolver.resolve(&req)?;
            let window = resolver.window(&req);
            if self.chain_holds(top, dev, window.map_or(0, |w| w.0))? {
                return Err(Error::BadGraph("backing chain loop: a file is its own backing file"));
            }
            let leaf = self.file_for(name, dev, window, created).await?;
            let forced = match core::str::from_utf8(&fmt[..fmt_len]) {
                Ok("") => None,
                Ok(f) => Some(driver::by_name(f)?),
                Err(_) => return Err(Error::BadName { what: "backing format name is not UTF-8" }),
            };
            let empty: Options<'_, 1> = Options::default();
            let backing = self.open_format(&empty.root(), leaf, forced).await?;
            created.push(backing).map_err(|_| Error::BadGraph("open made too many nodes"))?;
            self.attach_child(cur, Role::Backing, backing, Attachment::READER)?;
            cur = backing;
            view = None;
        }
        Ok(())
    }

    /// True if bytes from `offset` of `dev` are the file of an image of the chain from `top`
    /// down, as far as it is opened (the loop check of [`Graph::open_links`]): a walk over the
    /// graph's backing links, bounded by its node count. A file is told apart by its device and
    /// where on it the file starts (files packed into one disk are windows of it).
    fn chain_holds(&self, top: NodeId, dev: &dyn BlockDevice, offset: u64) -> Result<bool> {
        let mut cur = top;
        for _ in 0..=N {
            let node = self.node(cur)?;
            if let Some(file) = node.child(Role::File) {
                let (d, at) = self.leaf_place(file)?;
                if same_device(d, dev) && at == offset {
                    return Ok(true);
                }
            }
            match node.child(Role::Backing) {
                Some(backing) => cur = backing,
                None => return Ok(false),
            }
        }
        Err(Error::BadGraph("backing chain longer than the graph has nodes (a cycle)"))
    }

    /// Reads a name of `len` bytes at `offset` of `file` into `buf`.
    async fn read_name<'b>(&self, file: NodeId, offset: u64, len: u16, buf: &'b mut [u8; MAX_NAME]) -> Result<&'b str> {
        let n = usize::from(len);
        if n > MAX_NAME {
            return Err(Error::BadName { what: "file name longer than 1023 bytes" });
        }
        child_io::read(&self.io(), file, offset, &mut buf[..n]).await.map_err(|e| match e {
            Error::OutOfRange { .. } => Error::BadImage { what: "truncated: a file name lies past the end of the file" },
            e => e,
        })?;
        core::str::from_utf8(&buf[..n]).map_err(|_| Error::BadName { what: "file name is not UTF-8" })
    }

    /// True if `node` is a leaf or translation-only nodes over one.
    fn passes_to_leaf(&self, node: NodeId) -> Result<bool> {
        let mut cur = node;
        for _ in 0..MAX_DEPTH {
            let n = self.node(cur)?;
            match (n.kind, n.pass) {
                (NodeKind::Leaf(_), _) => return Ok(true),
                (NodeKind::Driver, None) => return Ok(false),
                (NodeKind::Driver, Some(p)) => cur = n.child(p.role).ok_or(Error::BadGraph("translation names a missing child"))?,
            }
        }
        Err(Error::BadGraph("graph deeper than MAX_DEPTH"))
    }

    /// The leaf device under `node`, through translation-only nodes.
    fn leaf_device(&self, node: NodeId) -> Result<&'d dyn BlockDevice> {
        let mut cur = node;
        for _ in 0..MAX_DEPTH {
            let n = self.node(cur)?;
            match &n.kind {
                NodeKind::Leaf(dev) => return Ok(*dev),
                NodeKind::Driver => cur = n.child(Role::File).ok_or(Error::BadGraph("driver node without a file child"))?,
            }
        }
        Err(Error::BadGraph("graph deeper than MAX_DEPTH"))
    }

    /// The leaf device under `node` and where on it `node`'s byte 0 lies, through
    /// translation-only nodes (raw windows).
    fn leaf_place(&self, node: NodeId) -> Result<(&'d dyn BlockDevice, u64)> {
        let (mut cur, mut at) = (node, 0u64);
        for _ in 0..MAX_DEPTH {
            let n = self.node(cur)?;
            match (&n.kind, n.pass) {
                (NodeKind::Leaf(dev), _) => return Ok((*dev, at)),
                (NodeKind::Driver, Some(p)) => {
                    at = at.saturating_add(p.offset);
                    cur = n.child(p.role).ok_or(Error::BadGraph("translation names a missing child"))?;
                }
                (NodeKind::Driver, None) => cur = n.child(Role::File).ok_or(Error::BadGraph("driver node without a file child"))?,
            }
        }
        Err(Error::BadGraph("graph deeper than MAX_DEPTH"))
    }

    /// The node a backing or data file named `name` is opened over: the leaf of `dev`, or with a
    /// `window` a read-only `raw` node with that offset and size over it (see
    /// [`Resolver::window`]).
    async fn file_for(&mut self, name: &str, dev: &'d dyn BlockDevice, window: Option<(u64, u64)>, created: &mut Created<N>) -> Result<NodeId> {
        let leaf = self.leaf_for(name, dev, created)?;
        let Some((offset, size)) = window else { return Ok(leaf) };
        let mut text: heapless::String<64> = heapless::String::new();
        core::fmt::write(&mut text, format_args!("offset={offset},size={size},read-only=on")).map_err(|_| Error::BadGraph("window options too long"))?;
        let opts: Options<'_, 4> = Options::parse(&text, None)?;
        let id = self.open_node(&opts.root(), Some(leaf), driver::by_name("raw")?, false).await?;
        created.push(id).map_err(|_| Error::BadGraph("open made too many nodes"))?;
        Ok(id)
    }

    /// The leaf node of `dev` if the graph has one, else a new leaf named `name` (or `#nINDEX`
    /// if that name is taken or too long).
    fn leaf_for(&mut self, name: &str, dev: &'d dyn BlockDevice, created: &mut Created<N>) -> Result<NodeId> {
        let existing = self.nodes().find_map(|(id, n)| match n.kind {
            NodeKind::Leaf(d) if same_device(d, dev) => Some(id),
            _ => None,
        });
        if let Some(id) = existing {
            return Ok(id);
        }
        let id = if self.find(name).is_some() {
            let auto = self.auto_name()?;
            self.add_leaf(&auto, dev)?
        } else {
            self.add_leaf(name, dev)?
        };
        created.push(id).map_err(|_| Error::BadGraph("open made too many nodes"))?;
        Ok(id)
    }

    /// Links `child` under `parent` in `role`, checking permissions.
    fn attach_child(&mut self, parent: NodeId, role: Role, child: NodeId, attachment: Attachment) -> Result<()> {
        self.check_holders(child, attachment, None)?;
        let index = usize::from(parent.index);
        self.node(parent)?;
        let node = self.nodes.get_mut(index).and_then(Option::as_mut).ok_or(Error::BadNode)?;
        if node.children.iter().any(|c| c.role == role) {
            return Err(Error::BadGraph("node already has a child in that role"));
        }
        node.children.push(Child { role, node: child, attachment }).map_err(|_| Error::NoSpace { what: "node children" })?;
        self.io().shape_changed();
        Ok(())
    }

    /// Opens one format node described by `view` on top of `file`; the driver is `forced`, or
    /// `driver=`, or probed.
    async fn open_format(&mut self, view: &OptionsView<'_, '_>, file: NodeId, forced: Option<&'static DriverDesc>) -> Result<NodeId> {
        let (desc, probed) = match (forced, view.get("driver")) {
            (Some(d), _) => (d, false),
            (None, Some(name)) => (driver::by_name(name.as_str().unwrap_or(""))?, false),
            (None, None) => {
                let size = self.node(file)?.size();
                let mut head = [0u8; PROBE_BYTES];
                let n = (size as usize).min(PROBE_BYTES);
                walk::read(&self.stack(), file, 0, &mut head[..n]).await?;
                (driver::probe(&head[..n]), true)
            }
        };
        if !desc.caps.contains(DriverCaps::FORMAT) {
            return Err(Error::UnknownDriver);
        }
        self.open_node(view, Some(file), desc, probed).await
    }

    /// Opens a node of driver `desc` described by `view`, over `file` (none for a protocol
    /// driver).
    async fn open_node(&mut self, view: &OptionsView<'_, '_>, file: Option<NodeId>, desc: &'static DriverDesc, probed: bool) -> Result<NodeId> {
        let mut allowed: heapless::Vec<&str, 16> = heapless::Vec::new();
        for key in COMMON_KEYS.iter().chain(desc.options) {
            let _ = allowed.push(key);
        }
        view.check_only(&allowed)?;
        let asked_ro = match view.get("read-only") {
            Some(v) => v.parse_bool().map_err(Error::bad_value)?,
            None => false,
        };
        let mut read_only = asked_ro || !desc.caps.contains(DriverCaps::WRITE);
        let mut children = heapless::Vec::new();
        let mut limits = BlockLimits::unlimited();
        if let Some(file) = file {
            let file_node = self.node(file)?;
            // A format's metadata I/O passes only through translation-only nodes down to a
            // leaf (no recursion into another format).
            if !desc.caps.contains(DriverCaps::TRANSLATION_ONLY) && !self.passes_to_leaf(file)? {
                return Err(Error::BadGraph("a format's file child must be a device or translation-only nodes over one"));
            }
            read_only |= file_node.read_only;
            limits = BlockLimits::inherit(&file_node.limits);
            let attachment = if read_only { Attachment::READER } else { Attachment::FORMAT_FILE };
            self.check_holders(file, attachment, None)?;
            let _ = children.push(Child { role: Role::File, node: file, attachment });
        } else if !desc.caps.contains(DriverCaps::PROTOCOL) {
            return Err(Error::BadOption { key: "file", why: "missing" });
        }
        if !read_only && !cfg!(feature = "write") {
            return Err(driver::NO_WRITE);
        }
        let threshold = write_threshold(view)?;
        let state = FormatState::open(desc, &self.io(), file, view, read_only).await?;
        let limits = state.limits(limits);
        if let Some(file) = file {
            // A filter's own limits (blkdebug's `align`, `max-transfer`, …) hold for every
            // request below it: the nodes down to the leaf, where requests are cut, take them.
            self.tighten_below(file, &limits)?;
        }
        let name = match view.get("node-name") {
            Some(v) => super::node_name(v.as_str().ok_or(Error::BadOption { key: "node-name", why: "names contain no commas" })?)?,
            None => self.auto_name()?,
        };
        let node = Node {
            name,
            driver: desc.name,
            kind: NodeKind::Driver,
            children,
            read_only,
            probed,
            size: core::cell::Cell::new(state.size()),
            limits,
            pass: state.pass(),
            flush: Default::default(),
            threshold: Default::default(),
            gate: state.gate(),
        };
        node.threshold.set(threshold);
        self.insert(node, Some(state))
    }

    /// Makes the limits of `node` and the translation nodes and leaf below it at least as strict
    /// as `limits` (alignments the larger, transfers the smaller). Nothing changes when `limits`
    /// were inherited from `node` unchanged.
    fn tighten_below(&mut self, node: NodeId, limits: &BlockLimits) -> Result<()> {
        let mut cur = node;
        for _ in 0..MAX_DEPTH {
            let index = usize::from(cur.index);
            self.node(cur)?;
            let n = self.nodes.get_mut(index).and_then(Option::as_mut).ok_or(Error::BadNode)?;
            let l = &mut n.limits;
            if *l == *limits {
                return Ok(());
            }
            l.request_alignment = l.request_alignment.max(limits.request_alignment);
            l.discard_alignment = l.discard_alignment.max(limits.discard_alignment);
            l.write_zeroes_alignment = l.write_zeroes_alignment.max(limits.write_zeroes_alignment);
            l.max_write_zeroes = l.max_write_zeroes.min(limits.max_write_zeroes);
            l.max_discard = l.max_discard.min(limits.max_discard);
            let align = l.request_alignment;
            l.max_transfer = (l.max_transfer.min(limits.max_transfer) / align * align).max(align);
            l.max_segment_size = l.max_segment_size.max(align);
            match (n.kind, n.pass) {
                (NodeKind::Driver, Some(p)) => cur = n.child(p.role).ok_or(Error::BadGraph("translation names a missing child"))?,
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// `#nINDEX` for the first free index.
    pub(super) fn auto_name(&self) -> Result<heapless::String<{ crate::node::MAX_NODE_NAME }>> {
        let index = self.nodes.iter().position(Option::is_none).ok_or(Error::NoSpace { what: "graph node slots" })?;
        let mut s = heapless::String::new();
        let _ = core::fmt::write(&mut s, format_args!("#n{index}"));
        Ok(s)
    }
}

/// The `write-threshold=` option of a node (0, off, when absent).
fn write_threshold(view: &OptionsView<'_, '_>) -> Result<u64> {
    view.get("write-threshold").map_or(Ok(0), |v| v.parse_size().map_err(Error::bad_value))
}

#[cfg(test)]
mod tests {
    use super::check_name;
    use crate::graph::Graph;

    /// What one more node slot costs: the node, its driver state, its generation and the walk's
    /// skip memory. An image of a chain takes two (three with a data file).
    #[test]
    fn bytes_per_node_slot() {
        let per_slot = (core::mem::size_of::<Graph<'static, 128, 64>>() - core::mem::size_of::<Graph<'static, 64, 64>>()) / 64;
        std::println!("graph: {per_slot} bytes per node slot, {} per chain image", 2 * per_slot);
        assert_eq!(Graph::<'static, 64, 64>::DEFAULT_BACKING_CHAIN, 31);
        assert_eq!(Graph::<'static, 1, 64>::DEFAULT_BACKING_CHAIN, 0);
    }

    #[test]
    fn names() {
        assert!(check_name("base.qcow2").is_ok());
        assert!(check_name("../x/base.qcow2").is_ok());
        assert!(check_name("dir/a:b").is_ok());
        assert!(check_name("json:{}").is_err());
        assert!(check_name("nbd:localhost:10809").is_err());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(1024)).is_err());
    }
}
