//! The kernel command line: `WORKLOAD [OPTIONS]`.
//!
//! `OPTIONS` is one word in Strata's options grammar (`strata_block::options`), with an implied
//! first key so the common case stays short: `sha256 disk0` means `sha256 device=disk0`.
//! Tokens QEMU's microvm may append for Linux (`virtio_mmio.device=...`) are ignored; anything
//! else unexpected is an error, reported with [`USAGE`].

use core::fmt;
use strata_block::options::{Options, OptionsError, ValueError};

/// Printed after a command-line error.
pub const USAGE: &str =
    "usage: devices | sha256 [device=]SERIAL | demo [[device=]SERIAL][,size=BYTES] | logbench";

/// The largest number of options a workload takes.
const MAX_OPTIONS: usize = 8;

/// A parsed command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Print the device table.
    Devices,
    /// Measure the cost per byte of the candidate log channels.
    LogBench,
    /// Hash a device's raw bytes.
    Sha256 {
        /// Serial of the device.
        device: &'a str,
    },
    /// Write a pattern, flush, read back and verify, with throughput and latency.
    Demo {
        /// Serial of the device (default: the first serial in sort order).
        device: Option<&'a str>,
        /// Bytes to write (default: 16 MiB or the device's size, whichever is smaller).
        size: Option<u64>,
    },
}

/// What is wrong with a command line.
#[derive(Debug)]
pub enum CmdlineError<'a> {
    /// The first word is not a workload.
    UnknownCommand(&'a str),
    /// A workload that needs options was given none.
    MissingOptions(&'static str),
    /// More words than the workload takes.
    ExtraWord(&'a str),
    /// The options word does not parse or names unknown keys.
    Options(OptionsError<'a>),
    /// A required option is absent.
    MissingKey(&'static str),
    /// An option's value is unusable.
    BadValue(&'static str, ValueError),
    /// A device name contains an escaped comma (serials never do).
    NotAName(&'static str),
}

impl fmt::Display for CmdlineError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownCommand(w) => write!(f, "unknown workload \"{}\"", w),
            Self::MissingOptions(cmd) => write!(f, "{} needs options", cmd),
            Self::ExtraWord(w) => write!(f, "unexpected word \"{}\" (options are one word: key=value,...)", w),
            Self::Options(e) => write!(f, "{}", e),
            Self::MissingKey(k) => write!(f, "missing option \"{}\"", k),
            Self::BadValue(k, e) => write!(f, "option \"{}\": {}", k, e),
            Self::NotAName(k) => write!(f, "option \"{}\" must be a plain name", k),
        }
    }
}

/// Parses the kernel command line. An empty line means `devices` (it never writes).
pub fn parse(cmdline: &str) -> Result<Command<'_>, CmdlineError<'_>> {
    let mut words = cmdline.split_ascii_whitespace().filter(|w| !w.starts_with("virtio_mmio.device="));
    let Some(workload) = words.next() else { return Ok(Command::Devices) };
    let options = words.next();
    if let Some(extra) = words.next() {
        return Err(CmdlineError::ExtraWord(extra));
    }
    let opts: Options<'_, MAX_OPTIONS> = Options::parse(options.unwrap_or(""), Some("device")).map_err(CmdlineError::Options)?;
    let name = |key: &'static str| -> Result<Option<&str>, CmdlineError<'_>> {
        opts.get(key).map(|v| v.as_str().ok_or(CmdlineError::NotAName(key))).transpose()
    };
    match workload {
        "devices" => {
            opts.check_only(&[]).map_err(CmdlineError::Options)?;
            Ok(Command::Devices)
        }
        "logbench" => {
            opts.check_only(&[]).map_err(CmdlineError::Options)?;
            Ok(Command::LogBench)
        }
        "sha256" => {
            if options.is_none() {
                return Err(CmdlineError::MissingOptions("sha256"));
            }
            opts.check_only(&["device"]).map_err(CmdlineError::Options)?;
            Ok(Command::Sha256 { device: name("device")?.ok_or(CmdlineError::MissingKey("device"))? })
        }
        "demo" => {
            opts.check_only(&["device", "size"]).map_err(CmdlineError::Options)?;
            let size = opts.get("size").map(|v| v.parse_size().map_err(|e| CmdlineError::BadValue("size", e))).transpose()?;
            Ok(Command::Demo { device: name("device")?, size })
        }
        other => Err(CmdlineError::UnknownCommand(other)),
    }
}
