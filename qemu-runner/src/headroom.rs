//! Room for writable qcow2 images to grow into during a boot.
//!
//! A virtio disk's capacity is fixed when QEMU starts, but a qcow2 image grows as the guest
//! allocates clusters. So before the boot the runner extends every writable qcow2 drive's file
//! by its `headroom=` (default: [`default_headroom`], enough to write the whole image;
//! `headroom=0` disables it) with `set_len`:
//! the new bytes are a hole, so the guest reads zeros past the image, as the block layer
//! expects of a growing file. When QEMU has exited (however it ended) the file is cut back to
//! the image's real end — the end of the last cluster with a nonzero refcount, read through the
//! block layer on the host — and never below its size before the boot (nor, when the file ended
//! inside its last cluster and nothing was written past that, above it). An image that ran out of
//! the room fails its writes with "out of room on the device holding the image".
//!
//! Files that get no headroom: read-only drives, backing and data files, files that are not
//! qcow2, and qcow2 images the guest cannot open read-write anyway (corrupt; a dirty one it
//! repairs first, so it gets room). An image with an external data file gets room for its
//! metadata here; its data file is made big enough by [`crate::chain`]. An image left dirty by the guest (lazy refcounts, not closed) keeps its
//! headroom: its refcounts cannot tell where it ends. A warning says so.

use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};

use strata_block::driver::qcow2::header::incompat;
use strata_block::driver::qcow2::measure::{self, Geometry};

use crate::drives::{Backing, Drive, Format};
use crate::img::{end, output};
use crate::RunnerError;

/// The least headroom a writable qcow2 drive without `headroom=` gets: 256 MiB.
pub const DEFAULT_HEADROOM: u64 = 256 << 20;

/// Headroom of a writable qcow2 drive without `headroom=`: the image's fully allocated size
/// (what `qemu-img measure` calls it: header, L1 and L2 tables, refcount structures and every
/// data cluster), plus a sixteenth for tables that move while they grow, and at least
/// [`DEFAULT_HEADROOM`] (internal snapshots can make a write allocate again). The extension is
/// a hole, so its size costs nothing but capacity the guest sees; a guest can write the image
/// full without running out of room.
pub fn default_headroom(header: &[u8]) -> u64 {
    let be = |at: usize, n: usize| be_field(header, at, n);
    let (version, cluster_bits, size) = (be(4, 4), be(20, 4), be(24, 8));
    if !(9..=21).contains(&cluster_bits) {
        return DEFAULT_HEADROOM;
    }
    let (refcount_order, extended_l2) = if version >= 3 { (be(96, 4), be(72, 8) & (1 << 4) != 0) } else { (4, false) };
    let full = full_size(size, cluster_bits, refcount_order.min(6), extended_l2);
    full.saturating_add(full / 16).next_multiple_of(1 << 20).max(DEFAULT_HEADROOM)
}

/// Bytes of a qcow2 image of `size` virtual bytes with every cluster allocated: `img measure`'s
/// "fully allocated size", from the block layer's one formula.
fn full_size(size: u64, cluster_bits: u64, refcount_order: u64, extended_l2: bool) -> u64 {
    let geometry = Geometry { cluster_size: 1 << cluster_bits, refcount_order: refcount_order as u32, extended_l2 };
    measure::fully_allocated(size, geometry)
}

/// Incompatible bits that keep the guest from opening an image read-write (a dirty image is
/// repaired by the open).
const NO_WRITES: u64 = incompat::CORRUPT;

/// One extended file.
#[derive(Debug)]
struct Grown {
    path: PathBuf,
    /// The drive's serial.
    serial: String,
    /// Its length before the boot.
    original: u64,
}

/// The files extended for a boot; [`Headroom::shrink`] (or dropping it) cuts them back.
#[derive(Debug, Default)]
pub struct Headroom {
    files: Vec<Grown>,
}

/// Extends the files of the writable qcow2 drives among `drives` (see the module docs).
pub fn grow(drives: &[Drive]) -> Result<Headroom, RunnerError> {
    let mut grown = Headroom::default();
    for drive in drives {
        let raw = drive.format == Some(Format::Raw);
        if drive.read_only || drive.backing != Backing::File || drive.headroom == Some(0) || raw {
            continue;
        }
        let Some(header) = writable_qcow2(&drive.file) else { continue };
        let headroom = drive.headroom.unwrap_or_else(|| default_headroom(&header));
        let context = || format!("extending {} by headroom={headroom}", drive.file.display());
        let io = |e| RunnerError::io(context(), e);
        let file = OpenOptions::new().read(true).write(true).open(&drive.file).map_err(io)?;
        // Never grow a file another process holds (QEMU's write lock, taken and tested as QEMU
        // does): QEMU would then refuse the drive, and cutting the file back later could cut
        // that process's clusters. The lock ends with `file`, before QEMU starts.
        let _lock = output::lock_for_writing(&file, &drive.file).map_err(|e| RunnerError::io(context(), std::io::Error::other(e)))?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            continue;
        }
        let original = meta.len();
        // Whole sectors: the disk's capacity is counted in them.
        let len = original.saturating_add(headroom).next_multiple_of(512);
        file.set_len(len).map_err(io)?;
        grown.files.push(Grown { path: drive.file.clone(), serial: drive.serial.clone(), original });
    }
    Ok(grown)
}

/// The big-endian field of `n` bytes at `at` of a header (0 past its end).
fn be_field(header: &[u8], at: usize, n: usize) -> u64 {
    header.get(at..at + n).map_or(0, |b| b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

/// The first bytes of the header if `path` holds a qcow2 image the guest may open read-write.
fn writable_qcow2(path: &Path) -> Option<[u8; 104]> {
    let mut bytes = Vec::with_capacity(104);
    std::fs::File::open(path).ok()?.take(104).read_to_end(&mut bytes).ok()?;
    // A version 2 header is 72 bytes: what is past it reads as zeros here.
    let n = bytes.len();
    let mut head = [0u8; 104];
    head[..n].copy_from_slice(&bytes);
    if n < 72 || head[..4] != *b"QFI\xfb" {
        return None;
    }
    let ok = match be_field(&head, 4, 4) {
        2 => true,
        3 => n >= 104 && be_field(&head, 72, 8) & NO_WRITES == 0,
        _ => false,
    };
    ok.then_some(head)
}

impl Headroom {
    /// `--zeroed=SERIAL=OFFSET` kernel command-line words: each extended file reads as zeros
    /// from its old length on (a sparse extension), so the guest's qcow2 need not write zeros
    /// into clusters it allocates there.
    pub fn zeroed_words(&self) -> Vec<String> {
        self.files.iter().map(|g| format!("--zeroed={}={}", g.serial, g.original)).collect()
    }

    /// Files extended.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Cuts every file back to its image's end (never below its size before the boot); what
    /// could not be done comes back as warnings. Call after QEMU has exited.
    pub fn shrink(mut self) -> Vec<String> {
        self.shrink_all()
    }

    fn shrink_all(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        for g in self.files.drain(..) {
            if let Err(e) = shrink_one(&g) {
                warnings.push(format!("{}: headroom not given back: {e}", g.path.display()));
            }
        }
        warnings
    }
}

impl Drop for Headroom {
    fn drop(&mut self) {
        let _ = self.shrink_all();
    }
}

/// Cuts one file back (see [`Headroom::shrink`]).
fn shrink_one(g: &Grown) -> Result<(), String> {
    let len = std::fs::metadata(&g.path).map_err(|e| e.to_string())?.len();
    if len <= g.original {
        return Ok(());
    }
    let file = OpenOptions::new().read(true).write(true).open(&g.path).map_err(|e| e.to_string())?;
    // Held while the end is found and the file cut: another process may have opened the image
    // since QEMU exited, and its clusters past our idea of the end must not be cut.
    let _lock = output::lock_for_writing(&file, &g.path)?;
    // The scan for the last cluster in use starts a little past the file's last data: the
    // extension is a hole wherever the guest wrote nothing, and an image of terabytes gets
    // terabytes of headroom by default. (Past the slack only clusters allocated and never
    // written could hide — a failed write's leak — and cutting them leaves a leak QEMU's check
    // reports as one, as before.)
    let last_data = data_end(&file, g.original, len);
    let scan_from = last_data.saturating_add(SCAN_SLACK).min(len);
    let end = match end::image_end(&g.path, g.original, scan_from) {
        Ok(end) => end.clamp(g.original, len),
        // An image still dirty (the guest only read it) cannot say where it ends; if nothing was
        // written past its old length, that is where it ends.
        Err(_) if last_data == g.original => g.original,
        Err(e) => return Err(e),
    };
    // A file that ended inside its last cluster (as `qemu-img create` leaves them) keeps its
    // length while nothing was written past it: past the end reads as zeros anyway.
    let target = if end - g.original < 64 * 1024 && zeros(&file, g.original, end - g.original) { g.original } else { end };
    file.set_len(target).map_err(|e| e.to_string())
}

/// How far past the file's last data the end scan starts.
const SCAN_SLACK: u64 = 16 << 20;

/// The end of the last data extent of `file` in `[from, len)` (`from` if there is none; `len`
/// if the file system cannot say), by `SEEK_DATA`/`SEEK_HOLE`.
fn data_end(file: &std::fs::File, from: u64, len: u64) -> u64 {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let (mut at, mut end) = (from, from);
    while at < len {
        // SAFETY: lseek on a descriptor `file` owns; it moves the file offset, which nothing
        // else here relies on.
        let data = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENXIO) { end } else { len };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return len;
        }
        end = (hole as u64).min(len);
        at = hole as u64;
    }
    end
}

/// Whether the `len` bytes at `offset` of `file` are all zeros (false if they cannot be read).
fn zeros(file: &std::fs::File, offset: u64, len: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset).is_ok() && buf.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writable_qcow2_files_grow() {
        let dir = std::env::temp_dir().join(format!("qr-headroom-{}", std::process::id()));
        assert!(std::fs::create_dir_all(&dir).is_ok());
        let raw = dir.join("a.raw");
        assert!(std::fs::write(&raw, [0u8; 4096]).is_ok());
        let mut head = vec![0u8; 4096];
        head[..4].copy_from_slice(b"QFI\xfb");
        head[7] = 3;
        let q = dir.join("a.qcow2");
        assert!(std::fs::write(&q, &head).is_ok());
        head[79] = 2; // corrupt
        let dirty = dir.join("corrupt.qcow2");
        assert!(std::fs::write(&dirty, &head).is_ok());
        let ro = Drive { read_only: true, ..Drive::new(&q, "ro") };
        let off = Drive { headroom: Some(0), ..Drive::new(&q, "off") };
        let grown = grow(&[Drive::new(&raw, "r"), Drive::new(&dirty, "d"), ro, off]);
        assert!(matches!(grown, Ok(ref g) if g.is_empty()));
        let grown = grow(&[Drive { headroom: Some(1000), ..Drive::new(&q, "q") }]);
        assert!(matches!(grown, Ok(ref g) if g.len() == 1));
        assert_eq!(std::fs::metadata(&q).map(|m| m.len()).ok(), Some(4096 + 1024));
        // Not a real image: the end cannot be read; with nothing written past the old length
        // the file is cut back to it.
        let warnings = grown.map(Headroom::shrink).unwrap_or_default();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(std::fs::metadata(&q).map(|m| m.len()).ok(), Some(4096));
        // Written past it: the file stays grown and a warning says why.
        let grown = grow(&[Drive { headroom: Some(8192), ..Drive::new(&q, "q") }]);
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&q);
            assert!(f.and_then(|f| f.write_all_at(&[1u8; 512], 8192)).is_ok());
        }
        let warnings = grown.map(Headroom::shrink).unwrap_or_default();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The default headroom covers what `qemu-img measure` says a fully allocated image takes,
    /// across cluster sizes, refcount widths and extended L2 (and stays within a few percent).
    #[test]
    fn full_size_matches_qemu_img_measure() {
        let qemu_img = std::env::var("QEMU_IMG").unwrap_or_else(|_| "qemu-img".into());
        for (size, bits, order, ext) in [(1u64 << 30, 16u64, 4u64, false), (1 << 30, 12, 0, false), (10 << 30, 21, 6, false), (1 << 30, 16, 4, true), (3 << 20, 9, 4, false), (1 << 40, 16, 4, false)] {
            let opts = format!("cluster_size={},refcount_bits={},extended_l2={}", 1u64 << bits, 1u64 << order, if ext { "on" } else { "off" });
            let out = match std::process::Command::new(&qemu_img).args(["measure", "-O", "qcow2", "--size", &size.to_string(), "-o", &opts]).output() {
                Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
                other => panic!("qemu-img measure {opts}: {other:?}"),
            };
            let measured: u64 = out.lines().find_map(|l| l.strip_prefix("fully allocated size: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            let ours = full_size(size, bits, order, ext);
            assert_eq!(ours, measured, "{opts} {size}");
        }
        let mut header = [0u8; 104];
        header[..4].copy_from_slice(b"QFI\xfb");
        header[7] = 3;
        header[23] = 16; // 64 KiB clusters
        header[24..32].copy_from_slice(&(64u64 << 30).to_be_bytes());
        header[99] = 4;
        let h = default_headroom(&header);
        assert!(h >= full_size(64 << 30, 16, 4, false) && h < (69 << 30), "{h}");
        assert_eq!(default_headroom(&[0u8; 104]), DEFAULT_HEADROOM, "nonsense gets the floor");
    }
}
