//! The kernel command line: `WORKLOAD [OPTIONS] [--flag value ...]`.
//!
//! `OPTIONS` is one word in Strata's options grammar (`strata_block::options`, QEMU `-blockdev`
//! style) describing the node to open, with `file` implied for the first element:
//! `sha256 disk0` is `sha256 file=disk0` (the format probed; raw for anything that is not a
//! known image), `sha256 driver=raw,offset=1M,size=4M,file=disk0` a window of it. Names resolve
//! only through the device catalog: `--map NAME=SERIAL` (repeatable, any workload) names a
//! device for a file name — the options' `file`, or a backing or data-file name exactly as an
//! image header writes it (`/`, `.` and `=` allowed in NAME; the last `=` splits); names without a
//! map are taken as serials. `qemu-runner boot` adds one per file of a chain. Flags follow the
//! options word. Tokens
//! QEMU's microvm may append for Linux (`virtio_mmio.device=...`) are ignored; anything else
//! unexpected is an error, reported with [`USAGE`].

use core::fmt;
use strata_block::options::{Options, OptionsError, ValueError};

/// Printed after a command-line error.
pub const USAGE: &str = "\
usage: WORKLOAD [OPTIONS] [--flag value ...]; OPTIONS: [file=]SERIAL[,driver=raw,offset=N,size=N,...]
  devices                      the device table
  sha256 OPTIONS               SHA-256 of what the opened node shows
  fat OPTIONS --file NAME [--write NAME]
                               FAT16/32 on an MBR disk: list the root, SHA-256 of NAME,
                               write its digest line into the --write file
  demo [OPTIONS]               write, flush, read back, verify (default: first device, 16M)
  bench OPTIONS [--rw randread|randwrite|read|write] [--bs 4k] [--qd 1..64]
                [--seconds N | --count N]
  logbench                     cost per byte of the log channels
  create SERIAL --size N [--cluster-size 64k] [--extended-l2] [--lazy-refcounts]
                [--refcount-bits 16] [--backing NAME] [--backing-fmt FMT]
                               format the device (or a raw window of it) as an empty qcow2
  io OPTIONS -c CMD [-c CMD ...] qemu-io's read [-P pat] [-q], write [-P pat | -z [-u]] [-q],
                               discard [-q], flush; CMD's words are separated by commas:
                               -c write,-P,0xaa,0,64k -c read,-P,0xaa,0,64k
  stress OPTIONS --seed N --ops N --qd 1..64 [--max-len 64k] [--block 4k] [--mix R:W:Z:ZU:D:F]
                               seeded verified mix; 'flush K covers ops 0..N' markers
  snapshot OPTIONS [--create NAME | --apply NAME | --delete NAME]
                               qcow2 internal snapshots: list them (the default), or create,
                               apply (id or name) or delete (name) one, as qemu-img snapshot
  check OPTIONS [--repair leaks|all]
                               qemu-img check of a qcow2 image (a bare SERIAL: its raw bytes)
  --format SERIAL=raw|qcow2    (any workload, repeatable) the device holds an image of that
                               format: opened with driver=FMT unless OPTIONS name a driver
  --zeroed SERIAL=OFFSET       (any workload, repeatable) the device reads as zeros from OFFSET
                               on (qemu-runner's headroom): qcow2 skips writing zeros there
  --object throttle-group,id=G,limits.iops-total=N,...
                               (any workload, repeatable) a throttle group that
                               driver=throttle,throttle-group=G nodes share (qemu-img's words)
  --map NAME=SERIAL            (any workload, repeatable) the file NAME (in OPTIONS or an image's
                               backing/data-file name, as written) is the device SERIAL";

/// Most `--map` pairs: a chain packed into one disk has one per file (see [`crate::pack`]).
pub const MAX_MAPS: usize = 128;

/// `--map NAME=SERIAL` pairs, in command-line order.
pub type Maps<'a> = heapless::Vec<(&'a str, &'a str), MAX_MAPS>;

/// `--zeroed SERIAL=OFFSET` pairs: devices the host promises read as zeros from OFFSET on.
pub type Zeroed<'a> = heapless::Vec<(&'a str, u64), MAX_MAPS>;

/// `--format SERIAL=FMT` pairs: devices whose image format the host named (never probed).
pub type Formats<'a> = heapless::Vec<(&'a str, &'static str), MAX_MAPS>;

/// `--object throttle-group,id=G,limits.…` definitions (qemu-img's `--object` words).
pub type Objects<'a> = heapless::Vec<&'a str, { strata_block::io::throttle::MAX_GROUPS }>;

/// A parsed command line: the command, the name→serial maps, the named formats, the zeroed
/// tails and the objects.
#[derive(Debug, PartialEq, Eq)]
pub struct Cmdline<'a> {
    /// What to run.
    pub command: Command<'a>,
    /// Names resolved to serials before the catalog is searched.
    pub maps: Maps<'a>,
    /// Devices whose tails read as zeros (`qemu-runner boot` passes one per drive it extended).
    pub zeroed: Zeroed<'a>,
    /// Devices whose format the host named (`qemu-runner boot` passes one per `format=`).
    pub formats: Formats<'a>,
    /// Throttle groups `throttle` nodes may name, checked here and made with each graph.
    pub objects: Objects<'a>,
}

/// Most options in one options word (as many as the graph's open takes).
const MAX_OPTIONS: usize = 32;

/// Deepest queue depth `bench` runs.
pub const MAX_QD: u32 = 64;

/// A bench's access pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rw {
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
}

impl Rw {
    /// The name on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            Rw::RandRead => "randread",
            Rw::RandWrite => "randwrite",
            Rw::Read => "read",
            Rw::Write => "write",
        }
    }

    /// True for writes.
    pub fn writes(self) -> bool {
        matches!(self, Rw::RandWrite | Rw::Write)
    }

    /// True for random offsets.
    pub fn random(self) -> bool {
        matches!(self, Rw::RandRead | Rw::RandWrite)
    }
}

/// When a bench stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this many seconds.
    Seconds(u64),
    /// After this many requests.
    Count(u64),
}

/// A bench's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchArgs<'a> {
    /// The node to open.
    pub options: &'a str,
    /// Access pattern.
    pub rw: Rw,
    /// Bytes per request.
    pub bs: u64,
    /// Requests in flight (tasks).
    pub qd: u32,
    /// When to stop.
    pub stop: Stop,
}

/// `io`'s commands: the values of the command line's `-c` flags, in order, each one word whose
/// commas separate qemu-io's words (`write,-P,0xaa,0,64k`: QEMU's `-append` keeps no quotes,
/// so spaces would split them). Holds the command line and finds them again when iterated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoCmds<'a>(&'a str);

impl<'a> IoCmds<'a> {
    /// The commands (each checked by [`parse`] with `strata_block::cmd::parse_words`).
    pub fn iter(&self) -> impl Iterator<Item = &'a str> {
        let mut words = self.0.split_ascii_whitespace();
        core::iter::from_fn(move || loop {
            if words.next()? == "-c" {
                return words.next();
            }
        })
    }
}

/// What `stress` runs (see `strata_block::cmd::stress::Config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StressArgs<'a> {
    /// The node to open.
    pub options: &'a str,
    /// The seed.
    pub seed: u64,
    /// Ops.
    pub ops: u32,
    /// Queue depth.
    pub qd: u32,
    /// Longest op (default: 64 KiB or the node).
    pub max_len: Option<u64>,
    /// Block size (alignment and model granularity).
    pub block: u32,
    /// Op weights.
    pub mix: strata_block::cmd::stress::Mix,
}

/// What `create` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateArgs<'a> {
    /// The device: a serial, or a raw window in the options grammar.
    pub options: &'a str,
    /// Virtual size in bytes.
    pub size: u64,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// Extended L2 entries.
    pub extended_l2: bool,
    /// Lazy refcounts.
    pub lazy_refcounts: bool,
    /// Refcount width in bits.
    pub refcount_bits: u64,
    /// Backing file name to store.
    pub backing: Option<&'a str>,
    /// Its format.
    pub backing_fmt: Option<&'a str>,
}

/// What `snapshot` does (one per boot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotAction<'a> {
    /// List the snapshots.
    List,
    /// Create one of this name.
    Create(&'a str),
    /// Apply the one of this id, or failing that name.
    Apply(&'a str),
    /// Delete the one of this name.
    Delete(&'a str),
}

/// What `check` may repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckRepair {
    /// Nothing: check only.
    Nothing,
    /// Leaked clusters (`--repair leaks`).
    Leaks,
    /// Leaks and errors (`--repair all`).
    All,
}

/// Flags that take no value.
const SWITCHES: &[&str] = &["--extended-l2", "--lazy-refcounts"];

/// A parsed command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Print the device table.
    Devices,
    /// Measure the cost per byte of the candidate log channels.
    LogBench,
    /// Hash what a node shows.
    Sha256 {
        /// The node, in the options grammar.
        options: &'a str,
    },
    /// List a FAT file system's root directory, hash a file of it, optionally write one.
    Fat {
        /// The node (an MBR disk whose first partition is FAT16/32).
        options: &'a str,
        /// The file to hash (8.3 name in the root directory).
        file: &'a str,
        /// The file to write the digest line into.
        write: Option<&'a str>,
    },
    /// Write a pattern, flush, read back and verify, with throughput and latency.
    Demo {
        /// The node (default: the device whose serial sorts first).
        options: Option<&'a str>,
    },
    /// Measure IOPS, throughput, latency and cycles per stage.
    Bench(BenchArgs<'a>),
    /// Format a device as an empty qcow2 image.
    Create(CreateArgs<'a>),
    /// Run qemu-io commands.
    Io {
        /// The node.
        options: &'a str,
        /// The commands, comma-separated words each.
        cmds: IoCmds<'a>,
    },
    /// Run the seeded stress engine.
    Stress(StressArgs<'a>),
    /// List, create, apply or delete qcow2 internal snapshots.
    Snapshot {
        /// The node (a qcow2 image).
        options: &'a str,
        /// What to do.
        action: SnapshotAction<'a>,
    },
    /// Check (and repair) a qcow2 image as qemu-img check.
    Check {
        /// The node (a bare device name: its raw bytes).
        options: &'a str,
        /// What to repair.
        repair: CheckRepair,
    },
}

/// What is wrong with a command line.
#[derive(Debug)]
pub enum CmdlineError<'a> {
    /// The first word is not a workload.
    UnknownCommand(&'a str),
    /// A workload that needs options was given none.
    MissingOptions(&'static str),
    /// A word that is neither the options word nor a flag.
    ExtraWord(&'a str),
    /// The options word does not parse.
    Options(OptionsError<'a>),
    /// A flag the workload does not take.
    UnknownFlag(&'a str),
    /// A flag without its value.
    MissingValue(&'a str),
    /// A flag given twice.
    DuplicateFlag(&'a str),
    /// A flag's value is unusable.
    BadFlag(&'a str, &'static str),
    /// A flag's size or number does not parse.
    BadValue(&'a str, ValueError),
    /// An `io` command does not parse.
    IoCommand(&'a str, strata_block::cmd::ParseError<'a>),
    /// An `--object` definition is refused.
    Object(&'a str, strata_block::Error),
}

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCommand(w) => write!(f, "unknown workload \"{}\"", w),
            Self::MissingOptions(cmd) => write!(f, "{} needs options (which node to use)", cmd),
            Self::ExtraWord(w) => write!(f, "unexpected word \"{}\" (options are one word: key=value,...; flags start with --)", w),
            Self::Options(e) => write!(f, "{}", e),
            Self::UnknownFlag(w) => write!(f, "unknown flag \"{}\"", w),
            Self::MissingValue(w) => write!(f, "flag \"{}\" needs a value", w),
            Self::DuplicateFlag(w) => write!(f, "flag \"{}\" given twice", w),
            Self::BadFlag(w, why) => write!(f, "flag \"{}\": {}", w, why),
            Self::BadValue(w, e) => write!(f, "flag \"{}\": {}", w, e),
            Self::IoCommand(w, e) => write!(f, "-c {}: {}", w, e),
            Self::Object(w, e) => write!(f, "--object {}: {}", w, e),
        }
    }
}

/// Parses the kernel command line. An empty line means `devices` (it never writes).
pub fn parse(cmdline: &str) -> Result<Cmdline<'_>, CmdlineError<'_>> {
    let mut maps = Maps::new();
    let mut zeroed = Zeroed::new();
    let mut formats = Formats::new();
    let mut objects = Objects::new();
    let command = parse_command(cmdline, &mut maps, &mut zeroed, &mut formats, &mut objects)?;
    Ok(Cmdline { command, maps, zeroed, formats, objects })
}

fn parse_command<'a>(
    cmdline: &'a str,
    maps: &mut Maps<'a>,
    zeroed: &mut Zeroed<'a>,
    formats: &mut Formats<'a>,
    objects: &mut Objects<'a>,
) -> Result<Command<'a>, CmdlineError<'a>> {
    let mut words = cmdline.split_ascii_whitespace().filter(|w| !w.starts_with("virtio_mmio.device="));
    let Some(workload) = words.next() else { return Ok(Command::Devices) };
    let mut rest = words.peekable();
    let options = rest.next_if(|w| !w.starts_with("--"));
    if let Some(text) = options {
        // The grammar is checked here so that its errors name the key; keys are checked by the
        // driver that opens the node.
        Options::<'_, MAX_OPTIONS>::parse(text, Some("file")).map_err(CmdlineError::Options)?;
    }
    let mut flags: heapless::Vec<(&str, &str), 8> = heapless::Vec::new();
    let mut io_cmds = 0usize;
    while let Some(word) = rest.next() {
        if word == "-c" {
            let value = rest.next().ok_or(CmdlineError::MissingValue(word))?;
            strata_block::cmd::parse_words(value.split(',')).map_err(|e| CmdlineError::IoCommand(value, e))?;
            io_cmds += 1;
            continue;
        }
        if !word.starts_with("--") {
            return Err(CmdlineError::ExtraWord(word));
        }
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, v),
            None if SWITCHES.contains(&word) => (word, "on"),
            None => (word, rest.next().ok_or(CmdlineError::MissingValue(word))?),
        };
        if name == "--map" {
            let (file, serial) = value.rsplit_once('=').ok_or(CmdlineError::BadFlag(name, "expected NAME=SERIAL"))?;
            // A target is a serial, or a window of a pack disk (`SERIAL@OFFSET+SIZE`).
            if file.is_empty() || serial.is_empty() || crate::pack::serial_of(serial).len() > 20 {
                return Err(CmdlineError::BadFlag(name, "expected NAME=SERIAL (a serial is 1 to 20 bytes)"));
            }
            if maps.iter().any(|(n, _)| *n == file) {
                return Err(CmdlineError::BadFlag(name, "a name mapped twice"));
            }
            maps.push((file, serial)).map_err(|_| CmdlineError::BadFlag(name, "more than 128 maps"))?;
            continue;
        }
        if name == "--format" {
            let (serial, format) = value.rsplit_once('=').ok_or(CmdlineError::BadFlag(name, "expected SERIAL=raw|qcow2"))?;
            let format = match format {
                "raw" => "raw",
                "qcow2" => "qcow2",
                _ => return Err(CmdlineError::BadFlag(name, "expected SERIAL=raw|qcow2")),
            };
            if serial.is_empty() || serial.len() > 20 || formats.iter().any(|(s, _)| *s == serial) {
                return Err(CmdlineError::BadFlag(name, "expected SERIAL=raw|qcow2, once per serial (1 to 20 bytes)"));
            }
            formats.push((serial, format)).map_err(|_| CmdlineError::BadFlag(name, "more than 24 formats"))?;
            continue;
        }
        if name == "--object" {
            let group = strata_block::io::throttle::parse_object(value).map_err(|e| CmdlineError::Object(value, e))?;
            let same_id = |other: &&str| strata_block::io::throttle::parse_object(other).is_ok_and(|g| g.name() == group.name());
            if objects.iter().any(same_id) {
                return Err(CmdlineError::BadFlag(name, "two objects with one id"));
            }
            objects.push(value).map_err(|_| CmdlineError::BadFlag(name, "more objects than the graph holds"))?;
            continue;
        }
        if name == "--zeroed" {
            let (serial, at) = value.rsplit_once('=').ok_or(CmdlineError::BadFlag(name, "expected SERIAL=OFFSET"))?;
            if serial.is_empty() || serial.len() > 20 {
                return Err(CmdlineError::BadFlag(name, "expected SERIAL=OFFSET (a serial is 1 to 20 bytes)"));
            }
            let at = size(name, at)?;
            zeroed.push((serial, at)).map_err(|_| CmdlineError::BadFlag(name, "more than 24 zeroed tails"))?;
            continue;
        }
        if flags.iter().any(|(n, _)| *n == name) {
            return Err(CmdlineError::DuplicateFlag(name));
        }
        flags.push((name, value)).map_err(|_| CmdlineError::UnknownFlag(name))?;
    }
    let no_flags = || match flags.first() {
        Some((name, _)) => Err(CmdlineError::UnknownFlag(name)),
        None => Ok(()),
    };
    let no_options = |cmd| match options {
        Some(w) => Err(CmdlineError::ExtraWord(w)).map(|()| cmd),
        None => Ok(cmd),
    };
    if workload != "io" && io_cmds > 0 {
        return Err(CmdlineError::UnknownFlag("-c"));
    }
    match workload {
        "devices" => {
            no_flags()?;
            no_options(Command::Devices)
        }
        "logbench" => {
            no_flags()?;
            no_options(Command::LogBench)
        }
        "sha256" => {
            no_flags()?;
            Ok(Command::Sha256 { options: options.ok_or(CmdlineError::MissingOptions("sha256"))? })
        }
        "fat" => {
            let options = options.ok_or(CmdlineError::MissingOptions("fat"))?;
            let (mut file, mut write) = (None, None);
            for &(name, value) in &flags {
                match name {
                    "--file" => file = Some(value),
                    "--write" => write = Some(value),
                    _ => return Err(CmdlineError::UnknownFlag(name)),
                }
            }
            let file = file.ok_or(CmdlineError::MissingValue("--file"))?;
            Ok(Command::Fat { options, file, write })
        }
        "demo" => {
            no_flags()?;
            Ok(Command::Demo { options })
        }
        "bench" => {
            let options = options.ok_or(CmdlineError::MissingOptions("bench"))?;
            bench(options, &flags).map(Command::Bench)
        }
        "create" => {
            let options = options.ok_or(CmdlineError::MissingOptions("create"))?;
            create(options, &flags).map(Command::Create)
        }
        "io" => {
            let options = options.ok_or(CmdlineError::MissingOptions("io"))?;
            no_flags()?;
            if io_cmds == 0 {
                return Err(CmdlineError::MissingValue("-c"));
            }
            Ok(Command::Io { options, cmds: IoCmds(cmdline) })
        }
        "stress" => {
            let options = options.ok_or(CmdlineError::MissingOptions("stress"))?;
            stress(options, &flags).map(Command::Stress)
        }
        "snapshot" => {
            let options = options.ok_or(CmdlineError::MissingOptions("snapshot"))?;
            let mut action = SnapshotAction::List;
            for &(name, value) in &flags {
                if action != SnapshotAction::List {
                    return Err(CmdlineError::BadFlag(name, "give one of --create, --apply, --delete"));
                }
                action = match name {
                    "--create" => SnapshotAction::Create(value),
                    "--apply" => SnapshotAction::Apply(value),
                    "--delete" => SnapshotAction::Delete(value),
                    _ => return Err(CmdlineError::UnknownFlag(name)),
                };
            }
            Ok(Command::Snapshot { options, action })
        }
        "check" => {
            let options = options.ok_or(CmdlineError::MissingOptions("check"))?;
            let mut repair = CheckRepair::Nothing;
            for &(name, value) in &flags {
                repair = match (name, value) {
                    ("--repair", "leaks") => CheckRepair::Leaks,
                    ("--repair", "all") => CheckRepair::All,
                    ("--repair", _) => return Err(CmdlineError::BadFlag(name, "expected leaks or all")),
                    _ => return Err(CmdlineError::UnknownFlag(name)),
                };
            }
            Ok(Command::Check { options, repair })
        }
        other => Err(CmdlineError::UnknownCommand(other)),
    }
}

fn bench<'a>(options: &'a str, flags: &[(&'a str, &'a str)]) -> Result<BenchArgs<'a>, CmdlineError<'a>> {
    let mut args = BenchArgs { options, rw: Rw::RandRead, bs: 4096, qd: 1, stop: Stop::Seconds(5) };
    let mut stop = None;
    for &(name, value) in flags {
        let number = |what| size(what, value);
        match name {
            "--rw" => {
                args.rw = match value {
                    "randread" => Rw::RandRead,
                    "randwrite" => Rw::RandWrite,
                    "read" => Rw::Read,
                    "write" => Rw::Write,
                    _ => return Err(CmdlineError::BadFlag(name, "expected randread, randwrite, read or write")),
                }
            }
            "--bs" => {
                args.bs = number(name)?;
                if args.bs == 0 || !args.bs.is_multiple_of(512) || args.bs > 1 << 20 {
                    return Err(CmdlineError::BadFlag(name, "expected a multiple of 512 from 512 to 1M"));
                }
            }
            "--qd" => {
                let qd = number(name)?;
                if qd == 0 || qd > u64::from(MAX_QD) {
                    return Err(CmdlineError::BadFlag(name, "expected 1 to 64"));
                }
                args.qd = qd as u32;
            }
            "--seconds" | "--count" => {
                if stop.is_some() {
                    return Err(CmdlineError::BadFlag(name, "give --seconds or --count, not both"));
                }
                let n = number(name)?;
                if n == 0 {
                    return Err(CmdlineError::BadFlag(name, "must be positive"));
                }
                stop = Some(if name == "--seconds" { Stop::Seconds(n) } else { Stop::Count(n) });
            }
            _ => return Err(CmdlineError::UnknownFlag(name)),
        }
    }
    if let Some(s) = stop {
        args.stop = s;
    }
    Ok(args)
}

fn stress<'a>(options: &'a str, flags: &[(&'a str, &'a str)]) -> Result<StressArgs<'a>, CmdlineError<'a>> {
    let mut args = StressArgs { options, seed: 0, ops: 0, qd: 1, max_len: None, block: 4096, mix: Default::default() };
    let mut given = [false; 3];
    for &(name, value) in flags {
        match name {
            "--seed" => (args.seed, given[0]) = (size(name, value)?, true),
            "--ops" => {
                let n = size(name, value)?;
                args.ops = u32::try_from(n).ok().filter(|&n| n < strata_block::cmd::stress::MAX_OPS).ok_or(CmdlineError::BadFlag(name, "too many ops"))?;
                given[1] = true;
            }
            "--qd" => {
                let qd = size(name, value)?;
                if qd == 0 || qd > u64::from(MAX_QD) {
                    return Err(CmdlineError::BadFlag(name, "expected 1 to 64"));
                }
                (args.qd, given[2]) = (qd as u32, true);
            }
            "--max-len" => args.max_len = Some(size(name, value)?),
            "--block" => args.block = u32::try_from(size(name, value)?).map_err(|_| CmdlineError::BadFlag(name, "too large"))?,
            "--mix" => args.mix = strata_block::cmd::stress::Mix::parse(value).ok_or(CmdlineError::BadFlag(name, "expected R:W:Z:ZU:D:F weights"))?,
            _ => return Err(CmdlineError::UnknownFlag(name)),
        }
    }
    for (i, flag) in ["--seed", "--ops", "--qd"].into_iter().enumerate() {
        if !given[i] {
            return Err(CmdlineError::MissingValue(flag));
        }
    }
    Ok(args)
}

fn create<'a>(options: &'a str, flags: &[(&'a str, &'a str)]) -> Result<CreateArgs<'a>, CmdlineError<'a>> {
    let mut args = CreateArgs { options, size: 0, cluster_size: 65536, extended_l2: false, lazy_refcounts: false, refcount_bits: 16, backing: None, backing_fmt: None };
    let mut sized = false;
    for &(name, value) in flags {
        match name {
            "--size" => (args.size, sized) = (size(name, value)?, true),
            "--cluster-size" => args.cluster_size = size(name, value)?,
            "--refcount-bits" => args.refcount_bits = size(name, value)?,
            "--extended-l2" | "--lazy-refcounts" => {
                let on = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(CmdlineError::BadFlag(name, "expected on or off (or no value)")),
                };
                if name == "--extended-l2" {
                    args.extended_l2 = on;
                } else {
                    args.lazy_refcounts = on;
                }
            }
            "--backing" => args.backing = Some(value),
            "--backing-fmt" => args.backing_fmt = Some(value),
            _ => return Err(CmdlineError::UnknownFlag(name)),
        }
    }
    if !sized {
        return Err(CmdlineError::MissingValue("--size"));
    }
    Ok(args)
}

/// A flag's value as a size or count (`4k`, `32`, `0x10`), read like the options grammar's sizes.
fn size<'a>(name: &'a str, value: &'a str) -> Result<u64, CmdlineError<'a>> {
    let opts = Options::<'_, 1>::parse(value, Some("v")).map_err(|_| CmdlineError::BadFlag(name, "expected a number"))?;
    let v = opts.get("v").ok_or(CmdlineError::BadFlag(name, "expected a number"))?;
    v.parse_size().map_err(|e| CmdlineError::BadValue(name, e))
}
