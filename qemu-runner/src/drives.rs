//! Disks for the guest: `--drive` options, serial rules, and the default scratch disk.
//!
//! `--drive` uses Strata's options grammar (`strata_block::options`): `file=F,serial=S,read-only=on`,
//! where `file=` may be left out of the first element and `,,` writes a comma inside a value. Each
//! drive becomes one virtio-blk device whose serial is the name the kernel knows it by.

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
pub const DRIVE_KEYS: [&str; 3] = ["file", "serial", "read-only"];

/// Size of the default disk `target/strata/default-disk.img`.
pub const DEFAULT_DISK_BYTES: u64 = 64 << 20;

/// One disk attached to the guest as a virtio-blk device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drive {
    /// The raw image file (or block device) on the host.
    pub file: PathBuf,
    /// The virtio-blk serial: the device's name inside the kernel.
    pub serial: String,
    /// Attach read-only.
    pub read_only: bool,
}

impl Drive {
    /// A read-write drive.
    pub fn new(file: impl Into<PathBuf>, serial: impl Into<String>) -> Self {
        Drive {
            file: file.into(),
            serial: serial.into(),
            read_only: false,
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
        let file = match opts.get("file") {
            Some(v) if v.unescaped_len() > 0 => v.to_string(),
            _ => return Err(bad("no file given".into())),
        };
        let serial = match opts.get("serial") {
            Some(v) => v.to_string(),
            None => Drive::default_serial(index),
        };
        check_serial(&serial).map_err(bad)?;
        let read_only = match opts.get("read-only") {
            Some(v) => v.parse_bool().map_err(|e| bad(format!("read-only: {e}")))?,
            None => false,
        };
        Ok(Drive {
            file: PathBuf::from(file),
            serial,
            read_only,
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
    let mut out = Vec::with_capacity(drives.len());
    for drive in drives {
        check_serial(&drive.serial).map_err(RunnerError::Usage)?;
        if !seen.insert(drive.serial.as_str()) {
            return Err(RunnerError::Usage(format!(
                "two drives have serial \"{}\"; serials name devices and must be unique",
                drive.serial
            )));
        }
        let file = absolute_file(&drive.file)?;
        out.push(Drive {
            file,
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
    Ok(Drive::new(path, Drive::default_serial(0)))
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
                read_only: true
            })
        );
        assert_eq!(parse("x.img,read-only=off").map(|d| d.read_only), Ok(false));
    }

    #[test]
    fn escaped_comma_in_file() {
        assert_eq!(parse("a,,b.img").map(|d| d.file), Ok("a,b.img".into()));
        assert_eq!(parse("file=a,,,serial=s").map(|d| d.file), Ok("a,".into()));
    }

    #[test]
    fn errors() {
        let err = |t: &str| parse(t).err().unwrap_or_default();
        assert!(err("a.img,size=1").contains("unknown option \"size\""));
        assert!(err("a.img,read-only=maybe").contains("read-only"));
        assert!(err("serial=x").contains("no file"));
        assert!(err("").contains("no file"));
        assert!(err("a.img,serial=").contains("empty"));
        assert!(err("a.img,serial=123456789012345678901").contains("at most 20"));
        assert!(err("a.img,serial=a b").contains("' '"));
        assert!(err("a.img,serial=a,,b").contains("','"));
        assert!(err("a.img,a.img").contains("a.img"));
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
        let ok = validate(&[Drive::new(&f, "a"), Drive::new(&f, "b")]);
        assert!(ok.is_ok());
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
