//! A workload's block stack: a graph over the catalog's devices, the node the command line's
//! options describe, and the executor glue that drives requests through it.
//!
//! Names — in the options, and backing or data-file names read from images — resolve only
//! through the device catalog: first through the command line's `--map NAME=SERIAL` pairs (what
//! `qemu-runner boot` passes for every file of a chain, with the name as the referring image
//! writes it), then as a virtio serial; nothing else is opened. Errors are
//! reported here, once, with the exit code they deserve: the command line's fault (bad options,
//! unknown serial) is [`exit_code::USAGE`], the device's or the image's is
//! [`exit_code::FAILURE`].

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

use static_cell::ConstStaticCell;
use static_cell::StaticCell;
use strata_block::clock::Clock;
use strata_block::dev::BlockDevice;
use strata_block::io::cache::{CacheSlot, Inflater};
use strata_block::io::zstd::ZstdDecoder;
use strata_block::graph::{NameRequest, Resolver, Role};
use strata_block::{Error, Graph, NodeId};
use strata_boot::clock;

use crate::cmdline::{Maps, Objects};
use crate::devices::{Catalog, Disk};
use crate::executor::{self, Platform};
use crate::{exit_code, println, report};

/// Graph nodes: a chain's image is a format node and a leaf (or a raw window of a pack disk,
/// [`crate::pack`]) per file, so 136 nodes hold a 64-deep backing chain packed into one disk
/// (2 + 64 * 2 + the pack's leaf) and the default backing-chain capacity is 67 images below the
/// top. A node slot (node, driver state, walk memory) is about 2.2 KiB: 4.3 KiB a layer.
pub const NODES: usize = 136;
/// Tracked-request slots: the deepest bench queue (an aligned request holds one slot at its
/// leaf; a full table is back-pressure, not an error). Measured when the tracker still scanned
/// its whole table per request (qd 32: 40 slots gave 8-50% more IOPS than 128); it now starts
/// from a free-slot hint and stops its conflict scans at the highest slot in use, so a larger
/// table costs little, but that has not been measured again.
pub const TRACKED: usize = 64;

/// The kernel's graph type.
pub type KGraph = Graph<'static, NODES, TRACKED>;
/// The kernel's backend type.
pub type KBackend<'g> = strata_block::Backend<'g, 'static>;

/// Bounce memory for unaligned requests, split in [`BOUNCE_BUFFER`] pieces.
const BOUNCE_BYTES: usize = 256 * 1024;
/// One bounce buffer.
pub const BOUNCE_BUFFER: usize = 64 * 1024;

#[repr(C, align(4096))]
struct Bounce([u8; BOUNCE_BYTES]);
static BOUNCE: ConstStaticCell<Bounce> = ConstStaticCell::new(Bounce([0; BOUNCE_BYTES]));

/// A device that completes nothing for this long while holding requests is declared dead.
pub const DEVICE_TIMEOUT_S: u64 = 30;

/// Metadata cache slots for qcow2 L1, L2 and refcount tables (4 KiB each): 1 MiB, which holds
/// every table of a 1 GiB overlay with extended L2 being written at random (at 256 KiB the dirty
/// slices of such a run filled the cache and every eviction forced a write-back with flushes);
/// bigger images page their tables through it.
pub const META_SLOTS: usize = 256;
static META: ConstStaticCell<[CacheSlot; META_SLOTS]> = ConstStaticCell::new([const { CacheSlot::new() }; META_SLOTS]);

/// Decoders for compressed clusters (about 60 KiB each); compressed reads take turns.
pub const INFLATERS: usize = 1;
static INFLATER: StaticCell<[Inflater; INFLATERS]> = StaticCell::new();

/// The zstd decoder for zstd-compressed clusters (`strata_block::io::zstd`: about 137 KiB of
/// tables and input) and its output window, the largest cluster (2 MiB): reads of part of a
/// cluster of any size decode through it; reads of whole clusters decode into their buffer.
static ZSTD: ConstStaticCell<ZstdDecoder<'static>> = ConstStaticCell::new(ZstdDecoder::new());
/// The zstd decoder's output window.
pub const ZSTD_WINDOW: usize = 2 << 20;
static ZSTD_WINDOW_MEM: ConstStaticCell<[u8; ZSTD_WINDOW]> = ConstStaticCell::new([0; ZSTD_WINDOW]);

/// The command line's `--object` definitions, made in the graph [`graph`] builds.
static OBJECTS: spin::Once<Objects<'static>> = spin::Once::new();

/// Keeps the command line's throttle groups (checked by the parser) for [`graph`].
pub fn define_objects(objects: &Objects<'static>) {
    OBJECTS.call_once(|| objects.clone());
}

/// A fresh graph with its metadata cache, decoders and the command line's throttle groups (one
/// per boot: the memory is taken once).
pub fn graph() -> Option<KGraph> {
    let bounce = BOUNCE.try_take()?;
    let meta = META.try_take()?;
    let inflaters = INFLATER.try_init_with(|| core::array::from_fn(|_| Inflater::new()))?;
    let mut graph = Graph::new(&mut bounce.0, BOUNCE_BUFFER);
    graph.set_metadata_cache(meta);
    graph.set_decompressors(inflaters);
    let zstd = ZSTD.try_take()?;
    zstd.set_window(ZSTD_WINDOW_MEM.try_take()?);
    graph.set_zstd_decoders(core::slice::from_ref(zstd));
    graph.set_clock(&TscClock);
    for text in OBJECTS.get().into_iter().flatten() {
        let group = strata_block::io::throttle::parse_object(text).ok()?;
        graph.add_throttle_group(group).ok()?;
    }
    Some(graph)
}

/// Emits a `write_threshold` record for every node whose write threshold a write passed since
/// the last call (QEMU's `BLOCK_WRITE_THRESHOLD` event, with its field names).
pub fn report_write_thresholds(graph: &KGraph) {
    for (_, node, e) in graph.handle().take_write_threshold_events() {
        report::Record::new("write_threshold")
            .str("node-name", node.name.as_str())
            .num("amount-exceeded", e.amount_exceeded)
            .num("write-threshold", e.write_threshold)
            .emit();
    }
}

/// The block layer's clock: the TSC since boot, in nanoseconds ([`clock_ns`]).
struct TscClock;

impl Clock for TscClock {
    fn now_ns(&self) -> u64 {
        clock_ns()
    }
}

/// Most leaf devices an open resolves (a backing chain's files and data files).
pub const MAX_LEAVES: usize = 24;

/// The leaf devices an open resolved, for their statistics.
pub type Leaves = heapless::Vec<&'static Disk, MAX_LEAVES>;

/// The longest name reported back when one does not resolve.
const MAX_REPORTED_NAME: usize = 256;

/// Resolves names through the command line's maps, then as serials (see the module docs).
struct CatalogResolver<'a> {
    catalog: &'a Catalog,
    maps: &'a Maps<'a>,
    leaves: Leaves,
    /// The name that did not resolve, its role, and the serial its map named (if any).
    missing: Option<(heapless::String<MAX_REPORTED_NAME>, Role, Option<&'a str>)>,
}

impl Resolver<'static> for CatalogResolver<'_> {
    fn resolve(&mut self, req: &NameRequest<'_, 'static>) -> strata_block::Result<&'static dyn BlockDevice> {
        let mapped = self.maps.iter().find(|(n, _)| *n == req.name).map(|(_, s)| *s);
        // A map may name a window of a pack disk (`crate::pack`): the disk here, the window below.
        if mapped.is_some_and(|t| crate::pack::is_window(t) && crate::pack::window_of(t).is_none()) {
            return Err(Error::BadName { what: "a --map window is not SERIAL@OFFSET+SIZE (hexadecimal)" });
        }
        match self.catalog.find(mapped.map_or(req.name, crate::pack::serial_of)) {
            Some(disk) => {
                if !self.leaves.iter().any(|d| core::ptr::eq(*d, disk)) {
                    let _ = self.leaves.push(disk);
                }
                Ok(&disk.dev)
            }
            None => {
                let mut s = heapless::String::new();
                for c in req.name.chars() {
                    if s.push(c).is_err() {
                        break;
                    }
                }
                self.missing = Some((s, req.role, mapped));
                Err(Error::NotFound)
            }
        }
    }

    fn window(&mut self, req: &NameRequest<'_, 'static>) -> Option<(u64, u64)> {
        let mapped = self.maps.iter().find(|(n, _)| *n == req.name).map(|(_, s)| *s)?;
        crate::pack::window_of(mapped)
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Backing => "backing file",
        Role::DataFile => "data file",
        Role::File => "device",
        Role::Reference => "blkverify reference",
    }
}

/// Longest options text [`open_read_only`] builds.
const MAX_OPTIONS_TEXT: usize = 1024;

/// Opens the node `options` describes for reading only: `read-only=on` is added to every format
/// level the options describe (`file.read-only=on` for a nested one) that does not say otherwise,
/// so a qcow2 image is opened without a write to its header (a read-write open clears autoclear
/// bits and refuses dirty images). Backing files are always opened read-only.
pub fn open_read_only(graph: &mut KGraph, catalog: &Catalog, maps: &Maps<'_>, options: &str) -> Result<(NodeId, Leaves), u32> {
    let mut text = heapless::String::<MAX_OPTIONS_TEXT>::new();
    match read_only_options(options, &mut text) {
        Ok(()) => open(graph, catalog, maps, text.as_str()),
        Err(e) => Err(fail("open", options, e)),
    }
}

/// `options` with `read-only=on` at every format level that names no `read-only`, into `out`.
fn read_only_options(options: &str, out: &mut heapless::String<MAX_OPTIONS_TEXT>) -> Result<(), Error> {
    let too_long = Error::BadOption { key: "file", why: "options too long" };
    let parsed = strata_block::options::Options::<'_, 32>::parse(options, Some("file"))?;
    out.push_str(options).map_err(|()| too_long)?;
    let mut view = Some(parsed.root());
    let mut depth = 0;
    while let Some(v) = view {
        if v.get("read-only").is_none() {
            out.push(',').map_err(|()| too_long)?;
            for _ in 0..depth {
                out.push_str("file.").map_err(|()| too_long)?;
            }
            out.push_str("read-only=on").map_err(|()| too_long)?;
        }
        view = v.child("file");
        depth += 1;
    }
    Ok(())
}

/// Closes `backend` cleanly (caches written back, flushed, images marked clean): what every
/// workload that may have written does last. A failure is reported as `WHAT: close` and its
/// exit code returned.
pub fn close(backend: KBackend<'_>, platform: &Io<'_>, what: &str, options: &str) -> Result<(), u32> {
    match executor::block_on(backend.close(), platform) {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => {
            let mut label = heapless::String::<64>::new();
            let _ = core::fmt::write(&mut label, format_args!("{}: close", what));
            Err(fail(label.as_str(), options, e))
        }
        None => Err(exit_code::FAILURE),
    }
}

/// `options` with `,driver=FMT` added when they name no driver and their `file` is a device
/// whose format the host named (`--format`), into `out`; `Ok(false)` when nothing is added.
fn named_format_options(catalog: &Catalog, maps: &Maps<'_>, options: &str, out: &mut heapless::String<MAX_OPTIONS_TEXT>) -> Result<bool, Error> {
    let parsed = strata_block::options::Options::<'_, 32>::parse(options, Some("file"))?;
    let root = parsed.root();
    let Some(name) = root.get("file").and_then(|v| v.as_str()) else { return Ok(false) };
    if root.get("driver").is_some() {
        return Ok(false);
    }
    let serial = maps.iter().find(|(n, _)| *n == name).map_or(name, |(_, s)| *s);
    let Some(format) = catalog.find(serial).and_then(|d| d.format()) else { return Ok(false) };
    let too_long = Error::BadOption { key: "file", why: "options too long" };
    out.push_str(options).map_err(|()| too_long)?;
    out.push_str(",driver=").map_err(|()| too_long)?;
    out.push_str(format).map_err(|()| too_long)?;
    Ok(true)
}

/// Opens the node `options` describes, resolving names through `maps` and the catalog;
/// reports failures and returns the exit code. A device whose format the host named opens
/// with that driver unless `options` name one.
pub fn open(graph: &mut KGraph, catalog: &Catalog, maps: &Maps<'_>, options: &str) -> Result<(NodeId, Leaves), u32> {
    let mut named = heapless::String::<MAX_OPTIONS_TEXT>::new();
    let options = match named_format_options(catalog, maps, options, &mut named) {
        Ok(true) => named.as_str(),
        Ok(false) => options,
        Err(e) => return Err(fail("open", options, e)),
    };
    let mut resolver = CatalogResolver { catalog, maps, leaves: Leaves::new(), missing: None };
    let platform = Devices { catalog, watchdog: Watchdog::new() };
    let opened = executor::block_on(graph.open_with(options, &mut resolver), &platform);
    match opened {
        Some(Ok(node)) => Ok((node, resolver.leaves)),
        Some(Err(Error::NotFound)) if resolver.missing.is_some() => {
            let Some((name, role, mapped)) = resolver.missing else { return Err(exit_code::USAGE) };
            match mapped {
                Some(serial) => println!("strata: {} \"{}\" is mapped to serial \"{}\", which no device has; devices are:", role_name(role), name, serial),
                None => println!("strata: {} \"{}\": no device with serial \"{}\" (and no --map for it); devices are:", role_name(role), name, name),
            }
            for d in catalog.iter() {
                println!("  {}", d.serial());
            }
            report::error("usage", format_args!("{} \"{}\" not found in the device catalog", role_name(role), name));
            Err(exit_code::USAGE)
        }
        Some(Err(e)) => Err(fail("open", options, e)),
        None => Err(exit_code::FAILURE),
    }
}

/// Reports a block-layer error of `what` on `options` and returns its exit code.
pub fn fail(what: &str, options: &str, e: Error) -> u32 {
    let (kind, code) = match e {
        Error::BadOptions { .. } | Error::BadOption { .. } | Error::UnknownDriver | Error::NotFound | Error::BadGraph(_) => ("usage", exit_code::USAGE),
        Error::ReadOnly => ("read-only", exit_code::FAILURE),
        Error::NoSpace { .. } => ("no-space", exit_code::FAILURE),
        _ => ("io", exit_code::FAILURE),
    };
    println!("strata: {} \"{}\": {}", what, options, e);
    if let Error::NoSpace { what: ROOM_ON_THE_DEVICE } = e {
        println!("strata: the image grew to the end of its device; give the drive more room (qemu-runner: headroom=SIZE)");
    }
    report::error(kind, format_args!("{} \"{}\": {}", what, options, e));
    code
}

/// What [`Error::NoSpace`] names when an image outgrows the device holding it.
const ROOM_ON_THE_DEVICE: &str = "room on the device holding the image";

/// Declares the devices dead when they hold requests and complete none for
/// [`DEVICE_TIMEOUT_S`].
pub struct Watchdog {
    last_progress: Cell<u64>,
}

impl Watchdog {
    /// Starts counting now.
    pub fn new() -> Self {
        Self { last_progress: Cell::new(clock::now()) }
    }

    fn check(&self, catalog: &Catalog, completed: usize) {
        let now = clock::now();
        if completed > 0 || catalog.in_flight() == 0 {
            self.last_progress.set(now);
        } else if now.wrapping_sub(self.last_progress.get()) > clock::hz().saturating_mul(DEVICE_TIMEOUT_S) {
            println!("strata: the devices completed nothing for {} s", DEVICE_TIMEOUT_S);
            report::error("io", format_args!("device timeout: nothing completed for {} s", DEVICE_TIMEOUT_S));
            exit_code::exit(exit_code::FAILURE);
        }
    }
}

/// Polls the catalog's devices; no batching (for opening a graph, which needs `&mut`).
pub struct Devices<'a> {
    /// The devices.
    pub catalog: &'a Catalog,
    /// Dead-device detection.
    pub watchdog: Watchdog,
}

impl Platform for Devices<'_> {
    fn poll_devices(&self) -> usize {
        let n = self.catalog.poll_all();
        self.watchdog.check(self.catalog, n);
        n
    }
}

/// Runs I/O through a graph: each executor round is one submission batch (plug before,
/// unplug after: one doorbell per device per round), and idle rounds poll the devices.
pub struct Io<'a> {
    /// The graph.
    pub graph: &'a KGraph,
    /// The devices.
    pub devices: Devices<'a>,
}

impl<'a> Io<'a> {
    /// Batching I/O on `graph` over `catalog`'s devices.
    pub fn new(graph: &'a KGraph, catalog: &'a Catalog) -> Self {
        Self { graph, devices: Devices { catalog, watchdog: Watchdog::new() } }
    }
}

impl Platform for Io<'_> {
    fn begin_round(&self) {
        self.graph.plug();
    }

    fn end_round(&self) {
        self.graph.unplug();
    }

    fn poll_devices(&self) -> usize {
        self.devices.poll_devices()
    }
}

/// The backend's clock: nanoseconds since boot, by multiply and shift (`clock::ticks_to_ns`
/// divides in 128 bits, a library call per request under TCG).
pub fn clock_ns() -> u64 {
    static NS_PER_TICK_Q32: AtomicU64 = AtomicU64::new(0);
    let mut factor = NS_PER_TICK_Q32.load(Ordering::Relaxed);
    if factor == 0 {
        factor = ((1_000_000_000u128 << 32) / u128::from(clock::hz().max(1))) as u64;
        NS_PER_TICK_Q32.store(factor, Ordering::Relaxed);
    }
    let ticks = clock::now().wrapping_sub(clock::boot_ticks());
    ((u128::from(ticks) * u128::from(factor)) >> 32) as u64
}
