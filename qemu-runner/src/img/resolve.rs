//! Host name resolution for `img`: turns the names the block layer asks for into host files.
//!
//! Rules (`docs/ARCHITECTURE.md`, "Devices and names"):
//! - the name the user gave is a path as given (relative to the working directory); the tree
//!   its directory roots is the *allowed tree*;
//! - backing and data-file names read from an image are relative to the directory of the image
//!   that names them (absolute names are taken as they are), and after resolving symlinks must
//!   lie inside the allowed tree, unless `--allow-backing-anywhere`;
//! - protocol prefixes (`json:`, `nbd:`) never reach here: the block layer refuses them;
//! - one host file is opened once: the same file named twice is the same device, which is how
//!   the block layer sees a loop in a chain.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use strata_block::dev::file::{HostFile, HostFileOptions};
use strata_block::dev::record::Recording;
use strata_block::dev::BlockDevice;
use strata_block::graph::{NameRequest, Resolver};
use strata_block::Error;

use super::crashlog::LogWriter;
use super::leaf_logs::LeafLogs;

/// The tree rule: `canonical` (a resolved backing or data file) must lie inside `tree`, unless
/// `allow_anywhere`; the error says where it lies and how to allow it.
pub(crate) fn check_in_tree(canonical: &Path, tree: &Path, allow_anywhere: bool) -> Result<(), String> {
    if allow_anywhere || canonical.starts_with(tree) {
        return Ok(());
    }
    Err(format!("'{}' lies outside {} (use --allow-backing-anywhere to allow it)", canonical.display(), tree.display()))
}

/// Where a resolver that records its files ([`super::leaf_logs`]) keeps what it makes.
pub struct LeafWrap<'d> {
    /// The run's logs and seq counter.
    pub logs: &'d LeafLogs,
    /// The logs this image writes to.
    pub sinks: &'d typed_arena::Arena<Rc<LogWriter>>,
    /// The recordings over its files.
    pub recordings: &'d typed_arena::Arena<Recording<'d>>,
}

/// Opens host files for one image and remembers them.
pub struct HostResolver<'d> {
    arena: &'d typed_arena::Arena<HostFile>,
    opts: HostFileOptions<'d>,
    /// Files opened, by canonical path.
    pub files: Vec<(PathBuf, &'d HostFile)>,
    /// The device handed to the block layer for each of `files` (same order): the file, or
    /// the recording over it.
    pub leaves: Vec<&'d dyn BlockDevice>,
    /// What QEMU calls each of `files` (same order): the name given for the image, a backing
    /// name joined to the directory of the name that names it (QEMU's `path_combine`), a data
    /// file's name as the image spells it (QEMU opens it so).
    pub names: Vec<String>,
    record: Option<LeafWrap<'d>>,
    tree: Option<PathBuf>,
    allow_anywhere: bool,
    no_backing: bool,
    /// The last failure, as text for the user.
    pub last_error: Option<String>,
}

impl<'d> HostResolver<'d> {
    /// A resolver opening files with `opts` into `arena`.
    pub fn new(arena: &'d typed_arena::Arena<HostFile>, opts: HostFileOptions<'d>, allow_anywhere: bool, no_backing: bool) -> Self {
        Self { arena, opts, files: Vec::new(), leaves: Vec::new(), names: Vec::new(), record: None, tree: None, allow_anywhere, no_backing, last_error: None }
    }

    /// Hands the block layer every file this resolver opens wrapped in a recording.
    pub fn recording(self, wrap: LeafWrap<'d>) -> Self {
        Self { record: Some(wrap), ..self }
    }

    /// The path of a device this resolver opened.
    pub fn path_of(&self, dev: &dyn BlockDevice) -> Option<&Path> {
        self.leaves
            .iter()
            .position(|l| std::ptr::addr_eq(*l as *const dyn BlockDevice, dev as *const dyn BlockDevice))
            .and_then(|i| self.files.get(i))
            .map(|(p, _)| p.as_path())
    }

    /// What QEMU calls the file `req` names (see [`HostResolver::names`]).
    fn qemu_name(&self, req: &NameRequest<'_, 'd>) -> String {
        let referrer = req.referrer.and_then(|dev| {
            let i = self.leaves.iter().position(|l| std::ptr::addr_eq(*l as *const dyn BlockDevice, dev as *const dyn BlockDevice))?;
            self.names.get(i)
        });
        match referrer {
            Some(base) if req.role == strata_block::graph::Role::Backing && !Path::new(req.name).is_absolute() => match base.rfind('/') {
                Some(i) => format!("{}{}", &base[..=i], req.name),
                None => req.name.to_string(),
            },
            _ => req.name.to_string(),
        }
    }

    fn fail(&mut self, e: Error, text: String) -> Error {
        self.last_error = Some(text);
        e
    }
}

impl<'d> Resolver<'d> for HostResolver<'d> {
    fn resolve(&mut self, req: &NameRequest<'_, 'd>) -> Result<&'d dyn BlockDevice, Error> {
        let path = match req.referrer {
            None => PathBuf::from(req.name),
            Some(dev) => {
                let Some(base) = self.path_of(dev) else {
                    return Err(self.fail(Error::NotFound, format!("'{}': the image naming it is not a host file", req.name)));
                };
                base.parent().unwrap_or(Path::new("/")).join(req.name)
            }
        };
        let canonical = match path.canonicalize() {
            Ok(p) => p,
            Err(e) => {
                let what = match req.referrer {
                    None => format!("{e}"),
                    Some(_) => format!("Could not open {} '{}': {e}", if req.role == strata_block::graph::Role::Backing { "backing file" } else { "data file" }, path.display()),
                };
                return Err(self.fail(Error::NotFound, what));
            }
        };
        match (&self.tree, req.referrer) {
            (None, None) | (Some(_), None) => {
                if self.tree.is_none() {
                    self.tree = canonical.parent().map(Path::to_path_buf);
                }
            }
            (Some(tree), Some(_)) => {
                if let Err(text) = check_in_tree(&canonical, tree, self.allow_anywhere) {
                    return Err(self.fail(Error::BadName { what: "backing or data file outside the opened image's directory tree" }, text));
                }
            }
            (None, Some(_)) => {}
        }
        if let Some(i) = self.files.iter().position(|(p, _)| *p == canonical) {
            if let Some(leaf) = self.leaves.get(i) {
                return Ok(*leaf);
            }
        }
        let mut opts = self.opts;
        if req.role == strata_block::graph::Role::Backing {
            opts.read_only = true;
        }
        match HostFile::open(&canonical, &opts) {
            Ok(f) => {
                let f: &'d HostFile = self.arena.alloc(f);
                let leaf: &'d dyn BlockDevice = match &self.record {
                    None => f,
                    Some(w) => match w.logs.sink(&canonical) {
                        Ok(sink) => {
                            let sink: &'d Rc<LogWriter> = w.sinks.alloc(sink);
                            w.recordings.alloc(Recording::sharing(f, &**sink, w.logs.counter()))
                        }
                        Err(e) => return Err(self.fail(Error::NotFound, format!("recording {}: {e}", canonical.display()))),
                    },
                };
                let name = self.qemu_name(req);
                self.files.push((canonical, f));
                self.leaves.push(leaf);
                self.names.push(name);
                Ok(leaf)
            }
            Err(e) => Err(self.fail(Error::NotFound, format!("{e}"))),
        }
    }

    fn follow_backing(&mut self) -> bool {
        !self.no_backing
    }
}
