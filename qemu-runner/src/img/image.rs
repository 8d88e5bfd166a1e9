//! Opening images on the host for the `img` subcommands: host files as leaf devices, a graph and
//! a backend from the block layer, and a small executor.
//!
//! [`with_image`] keeps everything an image needs (its files, bounce memory, graph, backend) in
//! one scope and closes it all, locks included, when the scope ends: the block layer borrows
//! what it uses (it never allocates), so the owner of the memory must outlive it.

use strata_block::dev::file::{CacheMode, Engine, HostFile, HostFileOptions};
use strata_block::clock::MonotonicClock;
use strata_block::io::cache::{CacheSlot, Inflater, SLICE};
use strata_block::io::zstd::ZstdDecoder;
use strata_block::{Backend, BackendOptions, DetectZeroes, Error, Graph, NodeId};

use super::resolve::HostResolver;
use super::ImgError;

/// Graph capacity for host images: nodes (a 31-deep chain of images with their files) and
/// tracked requests. A chain deeper than that opens again in a [`DEEP_NODES`] graph.
pub type HostGraph<'a> = Graph<'a, 64, HOST_TRACKED>;
/// Tracked-request slots of a host graph (a chain's depth does not change them: the read-only
/// layers below the top take none).
const HOST_TRACKED: usize = 512;
/// Nodes of the graph that images with a chain deeper than [`HostGraph`] holds are opened in:
/// at about 2.2 KiB a node slot (a node and its driver state) and two slots an image, 1.4 MiB,
/// so only such chains pay for it (and the test threads' 2 MiB stacks keep the small graph).
pub const DEEP_NODES: usize = 640;
/// The deepest chain the host tool opens: images below the top, as many as [`DEEP_NODES`] slots
/// hold (319).
pub const DEEP_CHAIN: usize = Graph::<'static, DEEP_NODES, HOST_TRACKED>::DEFAULT_BACKING_CHAIN;
/// A backend on a host graph.
pub type HostBackend<'g, 'd> = Backend<'g, 'd>;

/// Default qcow2 metadata cache budget (`--cache-size`): 4 MiB, enough for every L2 table of a
/// 32 GiB image with 64 KiB clusters.
pub const DEFAULT_CACHE_BYTES: u64 = 4 << 20;
/// Decoders for compressed clusters per image (deflate and zstd each).
const INFLATERS: usize = 4;
/// A zstd decoder's output window: the largest cluster (2 MiB), for reads of part of one.
const ZSTD_WINDOW: usize = 2 << 20;

/// Bounce buffers per image and their size.
const BOUNCE_BUFFERS: usize = 32;
const BOUNCE_SIZE: usize = 64 * 1024;

/// How to open an image.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// `-f FMT`: the format driver, instead of probing.
    pub format: Option<String>,
    /// `--image-opts`: the argument is an options string, not a file name.
    pub image_opts: bool,
    /// Open read-only.
    pub read_only: bool,
    /// `-t none|writeback`.
    pub cache: CacheMode,
    /// `-t unsafe`: flushes never reach the host file (QEMU's `cache.no-flush`).
    pub no_flush: bool,
    /// `-i threads|io_uring` (`native` is refused).
    pub engine: Engine,
    /// `-U`: share every permission (read-only opens of images others hold).
    pub force_share: bool,
    /// Zero detection for writes.
    pub detect_zeroes: DetectZeroes,
    /// qcow2 metadata cache budget in bytes (`None`: [`DEFAULT_CACHE_BYTES`]); rounded down to
    /// 4 KiB slots, at least one.
    pub cache_bytes: Option<u64>,
    /// Backing and data files may lie outside the opened image's directory tree.
    pub allow_backing_anywhere: bool,
    /// Open without backing files (as `qemu-img info`).
    pub no_backing: bool,
    /// Extra options for the top node in Strata's grammar (`snapshot.name=NAME`).
    pub extra: Option<String>,
    /// `--object` definitions (`throttle-group,id=G,limits.…`), made before the image opens.
    pub objects: Vec<String>,
}

/// An open image.
pub struct Image<'g, 'd> {
    /// The backend on the root node.
    pub backend: HostBackend<'g, 'd>,
    /// The host files under it (the image's first).
    pub files: Vec<&'d HostFile>,
    /// Their canonical paths, in the same order.
    pub paths: Vec<std::path::PathBuf>,
    /// The devices the block layer holds for them, in the same order: the files, or the
    /// recordings over them ([`super::leaf_logs`]).
    pub leaves: Vec<&'d dyn strata_block::dev::BlockDevice>,
    /// What QEMU calls them, in the same order (`qemu-img map` prints these).
    pub names: Vec<String>,
}

impl Image<'_, '_> {
    /// The root node's driver name.
    pub fn format(&self) -> &'static str {
        self.backend
            .graph()
            .node(self.backend.root())
            .map_or("?", |n| n.driver)
    }

    /// The root node.
    pub fn root(&self) -> NodeId {
        self.backend.root()
    }
}

/// The backends' accounting clock (see [`super::clock`]).
pub use super::clock::now_ns;

/// Runs a future to completion on this thread (devices are polled; pending futures wake
/// themselves).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// Opens `spec` (a file name, or with `image_opts` an options string) and runs `f` on it; the
/// image is closed when `f` returns. An image whose backing chain the small graph cannot hold is
/// opened again in a deep one ([`DEEP_NODES`]).
pub fn with_image<R>(
    spec: &str,
    opts: &OpenOptions,
    f: impl FnOnce(&Image<'_, '_>) -> Result<R, ImgError>,
) -> Result<R, ImgError> {
    let mut f = Some(f);
    match with_graph::<R, _, 64>(spec, opts, &mut f)? {
        Some(r) => Ok(r),
        None => with_graph::<R, _, DEEP_NODES>(spec, opts, &mut f)?.ok_or_else(|| ImgError::failed(format!("Could not open '{spec}': backing chain too deep"))),
    }
}

/// [`with_image`] in a graph of `N` nodes: `None` if the chain is too deep for it (and `N` is
/// less than [`DEEP_NODES`]); `f` is taken only once the image is open.
fn with_graph<R, F: FnOnce(&Image<'_, '_>) -> Result<R, ImgError>, const N: usize>(
    spec: &str,
    opts: &OpenOptions,
    f: &mut Option<F>,
) -> Result<Option<R>, ImgError> {
    // Recorded files (crash tests, `super::leaf_logs`): their logs and recordings outlive the graph.
    let leaf_logs = super::leaf_logs::active();
    let sinks: typed_arena::Arena<std::rc::Rc<super::crashlog::LogWriter>> = typed_arena::Arena::new();
    let arena: typed_arena::Arena<HostFile> = typed_arena::Arena::new();
    let recordings: typed_arena::Arena<strata_block::dev::record::Recording<'_>> = typed_arena::Arena::new();
    let budget = opts.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES);
    let slots: Vec<CacheSlot> = (0..(budget / SLICE as u64).max(1)).map(|_| CacheSlot::new()).collect();
    let inflaters: Vec<Inflater> = (0..INFLATERS).map(|_| Inflater::new()).collect();
    let mut zstd_windows: Vec<Vec<u8>> = (0..INFLATERS).map(|_| vec![0u8; ZSTD_WINDOW]).collect();
    let zstd: Vec<ZstdDecoder<'_>> = zstd_windows
        .iter_mut()
        .map(|w| {
            let mut d = ZstdDecoder::new();
            d.set_window(w);
            d
        })
        .collect();
    let clock = MonotonicClock::new();
    let mut bounce = vec![0u8; BOUNCE_BUFFERS * BOUNCE_SIZE + 4096];
    let mut graph: Graph<'_, N, HOST_TRACKED> = Graph::new(&mut bounce, BOUNCE_SIZE);
    graph.set_metadata_cache(&slots);
    graph.set_decompressors(&inflaters);
    graph.set_zstd_decoders(&zstd);
    graph.set_clock(&clock);
    for object in &opts.objects {
        let group = strata_block::io::throttle::parse_object(object).map_err(|e| ImgError::failed(format!("--object {object}: {e}")))?;
        graph.add_throttle_group(group).map_err(|e| ImgError::failed(format!("--object {object}: {e}")))?;
    }
    let extra = opts.extra.as_deref().map(|e| format!("{e},")).unwrap_or_default();
    let text = if opts.image_opts {
        // blkdebug's config=FILE, read here (the block layer has no files).
        super::blkdebug_config::expand(spec)?
    } else {
        let escaped = spec.replace(',', ",,");
        match &opts.format {
            Some(f) => format!("driver={f},{extra}file={escaped}"),
            None if extra.is_empty() => format!("file={escaped}"),
            // Options for the top node need its driver: probe it first.
            None => format!("driver={},{extra}file={escaped}", probe_format(spec)?),
        }
    };
    let file_opts = HostFileOptions {
        read_only: opts.read_only,
        mode: opts.cache,
        engine: opts.engine,
        force_share: opts.force_share,
        no_flush: opts.no_flush,
        ..HostFileOptions::default()
    };
    let mut resolver = HostResolver::new(&arena, file_opts, opts.allow_backing_anywhere, opts.no_backing);
    if let Some(logs) = leaf_logs.as_deref() {
        resolver = resolver.recording(super::resolve::LeafWrap { logs, sinks: &sinks, recordings: &recordings });
    }
    let opened = block_on(graph.open_with(&text, &mut resolver));
    let root = match opened {
        Ok(root) => root,
        Err(e) => {
            let slots = Error::NoSpace { what: "graph node slots" };
            if N < DEEP_NODES && (e == strata_block::graph::open::CHAIN_TOO_DEEP || e == slots) {
                return Ok(None);
            }
            let detail = match (&e, resolver.last_error.take()) {
                (Error::NotFound | Error::BadName { .. }, Some(text)) => text,
                _ if e == strata_block::graph::open::CHAIN_TOO_DEEP => format!("{e}: {} images below the top", graph.backing_chain()),
                (_, Some(text)) => format!("{e} ({text})"),
                (_, None) => e.to_string(),
            };
            return Err(ImgError::failed(format!("Could not open '{spec}': {detail}")));
        }
    };
    let backend = Backend::new(
        &graph,
        root,
        BackendOptions {
            read_only: opts.read_only,
            detect_zeroes: opts.detect_zeroes,
            clock: now_ns,
        },
    )
    .map_err(|e| ImgError::failed(format!("Could not open '{spec}': {e}")))?;
    let (paths, files) = resolver.files.iter().map(|(p, f)| (p.clone(), *f)).unzip();
    let image = Image { backend, files, paths, leaves: resolver.leaves.clone(), names: resolver.names.clone() };
    let Some(f) = f.take() else { return Err(ImgError::failed(format!("Could not open '{spec}': opened twice"))) };
    let result = f(&image);
    // A clean close: caches written back and stable, images marked clean.
    let closed = block_on(image.backend.close());
    match (result, closed) {
        (Ok(r), Ok(())) => Ok(Some(r)),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(ImgError::failed(format!("Could not close '{spec}': {e}{}", os_failures(&image.files, &image.paths)))),
    }
}

/// What the OS last refused on each of `files` (at `paths`), as ` (path: op at offset+len:
/// error)`, or nothing: the detail behind a device error.
pub fn os_failures(files: &[&HostFile], paths: &[std::path::PathBuf]) -> String {
    let parts: Vec<String> = files
        .iter()
        .zip(paths)
        .filter_map(|(f, p)| f.last_os_failure().map(|e| format!("{}: {e}", p.display())))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// The format a file probes as (the block layer's probe over its first 512 bytes).
fn probe_format(spec: &str) -> Result<&'static str, ImgError> {
    use std::io::Read;
    let mut head = [0u8; strata_block::driver::PROBE_BYTES];
    let mut file = std::fs::File::open(spec).map_err(|e| ImgError::failed(format!("Could not open '{spec}': {e}")))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(ImgError::failed(format!("Could not read '{spec}': {e}"))),
        }
    }
    Ok(strata_block::driver::probe(&head[..n]).name)
}

/// Parses `-t` (QEMU's cache modes that matter here).
pub fn cache_mode(value: Option<&str>) -> Result<CacheMode, ImgError> {
    match value {
        None | Some("writeback") | Some("unsafe") => Ok(CacheMode::Writeback),
        Some("none") | Some("directsync") => Ok(CacheMode::None),
        Some(other) => Err(ImgError::usage(format!("-t {other}: expected none or writeback"))),
    }
}

/// Parses `-i`.
pub fn engine(value: Option<&str>) -> Result<Engine, ImgError> {
    match value {
        None => Ok(Engine::Auto),
        Some("io_uring") => Ok(Engine::IoUring),
        Some("threads") => Ok(Engine::Threads),
        // qemu-img's `native` is Linux AIO, which Strata does not have: say so rather than run
        // another engine under its name.
        Some("native") => Err(ImgError::usage(
            "-i native (also implied by bench's -n) is Linux AIO, which Strata does not implement: use -t none -i io_uring for direct I/O at queue depth, or -i threads".into(),
        )),
        Some(other) => Err(ImgError::usage(format!("-i {other}: expected threads or io_uring"))),
    }
}

/// A zeroed buffer of `len` bytes whose address is aligned to 4 KiB (what O_DIRECT needs).
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// Allocates it.
    pub fn new(len: usize) -> Self {
        let storage = vec![0u8; len + 4096];
        let start = storage.as_ptr().align_offset(4096);
        Self { storage, start, len }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}
