//! Disks for the guest: `--drive` options, serial rules, and the default scratch disk.
//!
//! `--drive` uses Strata's options grammar (`strata_block::options`): `file=F,serial=S,read-only=on`,
//! where `file=` may be left out of the first element and `,,` writes a comma inside a value. Each
//! drive becomes one virtio-blk device whose serial is the name the kernel knows it by.
//! `driver=null-co,size=1G` attaches QEMU's null block driver instead of a file (reads return
//! zeros, writes are dropped): a device with no storage cost, for benchmarks. `headroom=SIZE`
//! is the room a writable qcow2 image may grow into during the boot (see [`crate::headroom`]).
//! `format=raw|qcow2` names the image format, as QEMU's `-drive format=`: the runner and the
//! kernel then never probe it. Without it a file is probed (the qcow2 magic means qcow2), and a
//! writable drive that probes as raw gets QEMU's warning: the guest refuses writes that would
//! put an image header into its first sector. `log=PATH` puts QEMU's `blklogwrites` filter
//! under the drive: every write, write-zeroes, discard and flush reaching the file is logged to
//! PATH (created or emptied before the boot) in dm-log-writes' format (see [`crate::write_log`]).

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use strata_block::options::Options;

use crate::{workspace, RunnerError};

/// The longest serial virtio-blk carries (`VIRTIO_BLK_ID_BYTES`).
pub const MAX_SERIAL_LEN: usize = 20;

/// The keys `--drive` accepts.
pub const DRIVE_KEYS: [&str; 8] = ["file", "serial", "read-only", "driver", "size", "headroom", "format", "log"];

/// An image format named by `format=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The file's bytes as they are.
    Raw,
    /// A qcow2 image (with its backing chain and data files).
    Qcow2,
}

impl Format {
    /// The driver name (QEMU's and the kernel's).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// What QEMU puts behind a drive's virtio-blk device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "driver")]
pub enum Backing {
    /// The raw file (or block device) `Drive::file`.
    #[default]
    File,
    /// QEMU's `null-co` driver of `size` bytes, `read-zeroes=on`; `Drive::file` is empty.
    NullCo {
        /// Capacity in bytes (a multiple of 512).
        size: u64,
    },
}

/// Size of the default disk `target/strata/default-disk.img`.
pub const DEFAULT_DISK_BYTES: u64 = 64 << 20;

/// One disk attached to the guest as a virtio-blk device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drive {
    /// The raw image file (or block device) on the host (empty for `null-co`).
    pub file: PathBuf,
    /// The virtio-blk serial: the device's name inside the kernel.
    pub serial: String,
    /// Attach read-only.
    pub read_only: bool,
    /// A file, or QEMU's null driver.
    pub backing: Backing,
    /// `headroom=`: bytes a writable qcow2 file is extended by for the boot (`None`:
    /// [`crate::headroom::default_headroom`]; `Some(0)`: none).
    pub headroom: Option<u64>,
    /// `format=`: the image format, never probed (`None`: probed).
    pub format: Option<Format>,
    /// `log=`: the file QEMU's `blklogwrites` logs this drive's writes and flushes to (`None`:
    /// no log).
    pub log: Option<PathBuf>,
}

impl Drive {
    /// A read-write drive.
    pub fn new(file: impl Into<PathBuf>, serial: impl Into<String>) -> Self {
        Drive {
            file: file.into(),
            serial: serial.into(),
            read_only: false,
            backing: Backing::File,
            headroom: None,
            format: None,
            log: None,
        }
    }

    /// A read-write drive on QEMU's `null-co` driver of `size` bytes.
    pub fn null_co(size: u64, serial: impl Into<String>) -> Self {
        Drive {
            backing: Backing::NullCo { size },
            ..Drive::new(PathBuf::new(), serial)
        }
    }

    /// The serial a drive gets when `--drive` number `index` (from 0) names none.
    pub fn default_serial(index: usize) -> String {
        format!("disk{index}")
    }

    /// Parses one `--drive` argument; `index` (from 0) picks the default serial.
    pub fn parse(text: &str, index: usize) -> Result<Drive, RunnerError> {
        let bad = |msg: String| RunnerError::Usage(format!("--drive {text}: {msg}"));
        let opts = Options::<16>::parse(text, Some("file")).map_err(|e| bad(e.to_string()))?;
        opts.check_only(&DRIVE_KEYS)
            .map_err(|e| bad(format!("{e} (allowed: {})", DRIVE_KEYS.join(", "))))?;
        let backing = match opts.get("driver").map(|v| v.to_string()).as_deref() {
            None | Some("file") => Backing::File,
            Some("null-co") => {
                let size = opts
                    .get("size")
                    .ok_or_else(|| bad("driver=null-co needs size=BYTES".into()))?
                    .parse_size()
                    .map_err(|e| bad(format!("size: {e}")))?;
                if size == 0 || size % 512 != 0 {
                    return Err(bad("size: a positive multiple of 512".into()));
                }
                Backing::NullCo { size }
            }
            Some(other) => return Err(bad(format!("driver \"{other}\": expected file or null-co"))),
        };
        let file = match (backing, opts.get("file")) {
            (Backing::File, Some(v)) if v.unescaped_len() > 0 => v.to_string(),
            (Backing::File, _) => return Err(bad("no file given".into())),
            (Backing::NullCo { .. }, None) => String::new(),
            (Backing::NullCo { .. }, Some(_)) => return Err(bad("driver=null-co takes no file".into())),
        };
        if backing == Backing::File && opts.get("size").is_some() {
            return Err(bad("size= is for driver=null-co (a file's size is its own)".into()));
        }
        let serial = match opts.get("serial") {
            Some(v) => v.to_string(),
            None => Drive::default_serial(index),
        };
        check_serial(&serial).map_err(bad)?;
        let read_only = match opts.get("read-only") {
            Some(v) => v.parse_bool().map_err(|e| bad(format!("read-only: {e}")))?,
            None => false,
        };
        let headroom = match opts.get("headroom") {
            Some(v) => Some(v.parse_size().map_err(|e| bad(format!("headroom: {e}")))?),
            None => None,
        };
        let format = match opts.get("format").map(|v| v.to_string()).as_deref() {
            None => None,
            Some("raw") => Some(Format::Raw),
            Some("qcow2") => Some(Format::Qcow2),
            Some(other) => return Err(bad(format!("format \"{other}\": expected raw or qcow2"))),
        };
        let log = opts.get("log").map(|v| PathBuf::from(v.to_string()));
        match &log {
            Some(l) if l.as_os_str().is_empty() => return Err(bad("log: no file given".into())),
            Some(_) if backing != Backing::File => return Err(bad("log= is for image files, not driver=null-co".into())),
            Some(_) if read_only => return Err(bad("log= is for writable drives (a read-only drive logs nothing)".into())),
            _ => {}
        }
        if format.is_some() && backing != Backing::File {
            return Err(bad("format= is for image files, not driver=null-co".into()));
        }
        match headroom {
            Some(h) if h > 0 && backing != Backing::File => return Err(bad("headroom= is for image files, not driver=null-co".into())),
            Some(h) if h > 0 && read_only => return Err(bad("headroom= is for writable drives (read-only=on never grows)".into())),
            _ => {}
        }
        Ok(Drive {
            file: PathBuf::from(file),
            serial,
            read_only,
            backing,
            headroom,
            format,
            log,
        })
    }
}

/// Checks a serial: 1 to 20 bytes of printable ASCII without `,` or whitespace.
pub fn check_serial(serial: &str) -> Result<(), String> {
    if serial.is_empty() {
        return Err("the serial is empty".into());
    }
    if serial.len() > MAX_SERIAL_LEN {
        return Err(format!(
            "serial \"{serial}\" is {} bytes; virtio-blk carries at most {MAX_SERIAL_LEN}",
            serial.len()
        ));
    }
    if let Some(c) = serial.chars().find(|&c| !c.is_ascii_graphic() || c == ',') {
        return Err(format!(
            "serial \"{}\" contains {c:?}; use printable ASCII without ',' or spaces",
            serial.escape_debug()
        ));
    }
    Ok(())
}

/// Checks a set of drives before QEMU starts: valid and unique serials, and files that exist.
/// Returns the drives with their files made absolute.
pub fn validate(drives: &[Drive]) -> Result<Vec<Drive>, RunnerError> {
    let mut seen = HashSet::new();
    let mut out: Vec<Drive> = Vec::with_capacity(drives.len());
    for drive in drives {
        check_serial(&drive.serial).map_err(RunnerError::Usage)?;
        if !seen.insert(drive.serial.as_str()) {
            return Err(RunnerError::Usage(format!(
                "two drives have serial \"{}\"; serials name devices and must be unique",
                drive.serial
            )));
        }
        let file = match drive.backing {
            Backing::File => absolute_file(&drive.file)?,
            Backing::NullCo { .. } => PathBuf::new(),
        };
        // One file on two drives where one writes: the guest would see it change under the
        // other (QEMU refuses the second open on its lock).
        if let Some(other) = out.iter().find(|d| d.backing == Backing::File && drive.backing == Backing::File && d.file == file && !(d.read_only && drive.read_only)) {
            return Err(RunnerError::Usage(format!(
                "drives \"{}\" and \"{}\" are the same file {} and one of them is writable",
                other.serial,
                drive.serial,
                file.display()
            )));
        }
        let log = match &drive.log {
            Some(_) if drive.read_only || drive.backing != Backing::File => {
                return Err(RunnerError::Usage(format!("drive \"{}\": log= is for writable image files", drive.serial)));
            }
            Some(l) => Some(absolute_log(l)?),
            None => None,
        };
        out.push(Drive {
            file,
            log,
            ..drive.clone()
        });
    }
    Ok(out)
}

/// `path` made absolute, or [`RunnerError::MissingFile`] if it does not exist or is a directory.
fn absolute_file(path: &Path) -> Result<PathBuf, RunnerError> {
    let missing = |source| RunnerError::MissingFile {
        what: "drive",
        path: path.to_path_buf(),
        source,
    };
    let abs = std::fs::canonicalize(path).map_err(missing)?;
    if abs.is_dir() {
        return Err(missing(std::io::Error::other("is a directory")));
    }
    Ok(abs)
}

/// The default scratch disk `target/strata/default-disk.img` (64 MiB, raw, serial `disk0`),
/// created on first use and reused while it has the right size.
///
/// Runs that share it and write to it at the same time fail: QEMU locks images it writes.
pub fn default_disk() -> Result<Drive, RunnerError> {
    let dir = workspace::strata_dir();
    let path = dir.join("default-disk.img");
    let len = std::fs::metadata(&path).map(|m| m.len()).ok();
    if len != Some(DEFAULT_DISK_BYTES) {
        let io = |e| RunnerError::io(format!("creating {}", path.display()), e);
        std::fs::create_dir_all(&dir).map_err(io)?;
        // Build it under a private name and rename it, so concurrent runs never see half a disk.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("default-disk.img.{}-{n}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        file.set_len(DEFAULT_DISK_BYTES).map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io)?;
    }
    // The runner made it raw: named, so never probed (and never warned about).
    Ok(Drive { format: Some(Format::Raw), ..Drive::new(path, Drive::default_serial(0)) })
}

/// `log` made absolute (its directory must exist). Whether it is a drive's file is checked by
/// `write_log::prepare_all`, against every drive and chain file, by identity.
fn absolute_log(log: &Path) -> Result<PathBuf, RunnerError> {
    let missing = |source| RunnerError::MissingFile { what: "log directory of drive", path: log.to_path_buf(), source };
    let name = log.file_name().ok_or_else(|| RunnerError::Usage(format!("log={}: not a file name", log.display())))?;
    let dir = match log.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok(std::fs::canonicalize(dir).map_err(missing)?.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Drive, String> {
        Drive::parse(text, 0).map_err(|e| e.to_string())
    }

    #[test]
    fn implied_file_and_defaults() {
        assert_eq!(parse("a.img"), Ok(Drive::new("a.img", "disk0")));
        assert_eq!(
            Drive::parse("file=b.img", 3).map_err(|e| e.to_string()),
            Ok(Drive::new("b.img", "disk3"))
        );
    }

    #[test]
    fn all_keys() {
        let d = parse("x.img,serial=base,read-only=on");
        assert_eq!(
            d,
            Ok(Drive {
                file: "x.img".into(),
                serial: "base".into(),
                read_only: true,
                backing: Backing::File,
                headroom: None,
                format: None,
                log: None,
            })
        );
        assert_eq!(parse("x.img,log=x.log").map(|d| d.log), Ok(Some("x.log".into())));
        assert_eq!(parse("x.img,format=raw").map(|d| d.format), Ok(Some(Format::Raw)));
        assert_eq!(parse("x.img,format=qcow2").map(|d| d.format), Ok(Some(Format::Qcow2)));
        assert!(parse("x.img,format=vmdk").is_err());
        assert!(parse("driver=null-co,size=1M,format=raw").is_err());
        assert_eq!(parse("x.img,read-only=off").map(|d| d.read_only), Ok(false));
        assert_eq!(parse("x.img,headroom=1M").map(|d| d.headroom), Ok(Some(1 << 20)));
        assert_eq!(parse("x.img,headroom=0").map(|d| d.headroom), Ok(Some(0)));
        assert_eq!(parse("x.img,headroom=0,read-only=on").map(|d| d.headroom), Ok(Some(0)));
    }

    #[test]
    fn escaped_comma_in_file() {
        assert_eq!(parse("a,,b.img").map(|d| d.file), Ok("a,b.img".into()));
        assert_eq!(parse("file=a,,,serial=s").map(|d| d.file), Ok("a,".into()));
    }

    #[test]
    fn errors() {
        let err = |t: &str| parse(t).err().unwrap_or_default();
        assert!(err("a.img,colour=1").contains("unknown option \"colour\""));
        assert!(err("a.img,read-only=maybe").contains("read-only"));
        assert!(err("serial=x").contains("no file"));
        assert!(err("").contains("no file"));
        assert!(err("a.img,serial=").contains("empty"));
        assert!(err("a.img,serial=123456789012345678901").contains("at most 20"));
        assert!(err("a.img,serial=a b").contains("' '"));
        assert!(err("a.img,serial=a,,b").contains("','"));
        assert!(err("a.img,a.img").contains("a.img"));
        assert!(err("a.img,headroom=lots").contains("headroom"));
        assert!(err("a.img,headroom=1M,read-only=on").contains("writable"));
        assert!(err("driver=null-co,size=1M,headroom=1M").contains("null-co"));
        assert!(err("driver=null-co,size=1M,log=l").contains("null-co"));
        assert!(err("a.img,log=l,read-only=on").contains("writable"));
        assert!(err("a.img,log=").contains("log"));
    }

    #[test]
    fn null_co() {
        assert_eq!(
            parse("driver=null-co,size=1G,serial=n"),
            Ok(Drive::null_co(1 << 30, "n"))
        );
        let err = |t: &str| parse(t).err().unwrap_or_default();
        assert!(err("driver=null-co").contains("needs size"));
        assert!(err("driver=null-co,size=1000").contains("multiple of 512"));
        assert!(err("driver=null-co,size=1M,file=a.img").contains("takes no file"));
        assert!(err("a.img,size=1M").contains("null-co"));
        assert!(err("a.img,driver=nbd").contains("expected file or null-co"));
        assert!(validate(&[Drive::null_co(1 << 20, "n")]).is_ok());
    }

    #[test]
    fn serial_rules() {
        assert!(check_serial("12345678901234567890").is_ok());
        assert!(check_serial("disk-0_x.y").is_ok());
        assert!(check_serial("tab\there").is_err());
        assert!(check_serial("é").is_err());
    }

    #[test]
    fn validate_checks_uniqueness_and_files() {
        let dir = std::env::temp_dir();
        let f = dir.join(format!("qr-validate-{}.img", std::process::id()));
        assert!(std::fs::write(&f, [0u8; 512]).is_ok());
        let reader = |serial| Drive { read_only: true, ..Drive::new(&f, serial) };
        assert!(validate(&[reader("a"), reader("b")]).is_ok(), "readers share a file");
        let shared = validate(&[Drive::new(&f, "a"), reader("b")]);
        assert!(matches!(shared, Err(RunnerError::Usage(m)) if m.contains("same file")));
        let dup = validate(&[Drive::new(&f, "a"), Drive::new(&f, "a")]);
        assert!(matches!(dup, Err(RunnerError::Usage(m)) if m.contains("unique")));
        let missing = validate(&[Drive::new(dir.join("no-such-qr.img"), "a")]);
        assert!(
            matches!(&missing, Err(e @ RunnerError::MissingFile { .. }) if e.exit_code() == 2
                && e.to_string().contains("no-such-qr.img"))
        );
        let _ = std::fs::remove_file(&f);
    }
}
