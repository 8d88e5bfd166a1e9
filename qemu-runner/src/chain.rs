//! Image chains behind `--drive`: a qcow2 drive's backing files and data files, attached raw.
//!
//! The guest opens a chain from its device catalog only (`docs/ARCHITECTURE.md`, "Devices and names"), so
//! the runner does what a host open would and hands the result over: for a drive with
//! `format=qcow2`, or without `format=` and whose file starts with the qcow2 magic (never for
//! `format=raw`), it walks the backing chain and the data files with `img`'s host
//! rules ([`crate::img::resolve`]: names relative to the referring image, inside the directory
//! tree of the drive's file, protocol prefixes refused, loops refused), attaches every file as
//! one more raw virtio-blk drive — serials `S.1`, `S.2`, ... after the drive's serial `S`,
//! read-only (but a writable drive's own data file: read-write, never packed, extended to hold
//! the whole disk) — and passes `--map NAME=SERIAL` on the kernel command line for every name exactly
//! as the referring image writes it. A missing or refused file is a runner error before QEMU
//! starts.
//!
//! Chains with more files than the machine has device slots (24 virtio-mmio slots on microvm)
//! are packed instead: each drive's chain files are copied into one read-only pack disk (a
//! temporary file, serial `S.p`), each at a [`PACK_ALIGN`]ed offset, and every name is mapped to
//! its window of that disk, `--map NAME=S.p@OFFSET+SIZE` (hexadecimal); the kernel opens each
//! file as a read-only `raw` window over the pack (`kernel/src/pack.rs`). The copy costs the
//! chain's bytes once per boot; a chain that fits the slots is attached file by file as before.

use std::io::Read;
use std::path::{Path, PathBuf};

use strata_block::dev::file::{HostFile, HostFileOptions};
use strata_block::dev::BlockDevice;
use strata_block::graph::{check_name, NameRequest, Resolver, Role};

use crate::drives::{check_serial, Backing, Drive, Format};
use crate::img::resolve::HostResolver;
use crate::{Machine, RunnerError, Transport};

/// Most virtio-blk devices a boot takes: microvm's 24 virtio-mmio slots, which is also what the
/// kernel's device catalog holds (pc/q35 and the `virt` boards' PCIe root bus have more free
/// PCI slots, the catalog does not); riscv64 virt's 8 virtio-mmio slots.
pub fn max_drives(machine: Machine, transport: Transport) -> usize {
    match (machine, transport) {
        // riscv64 virt has 8 virtio-mmio slots (VIRTIO_COUNT).
        (Machine::RiscvVirt, Transport::Mmio) => 8,
        _ => 24,
    }
}

/// Most images below a drive's top image that the runner follows: the host tool's capacity
/// ([`crate::img::image::DEEP_CHAIN`]); the kernel refuses a chain deeper than its own graph holds.
pub const MAX_CHAIN: usize = crate::img::image::DEEP_CHAIN;

/// The qcow2 magic, `QFI\xfb`.
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
/// Header extension: backing file format name.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Header extension: external data file name.
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Incompatible feature bit: external data file.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;

/// The names a qcow2 header gives: backing file, its format, data file.
#[derive(Debug, Default, PartialEq, Eq)]
struct Links {
    backing: Option<String>,
    backing_fmt: Option<String>,
    data_file: Option<String>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// Reads the links of the image at `path`; `None` if it is not qcow2.
fn read_links(path: &Path) -> Result<Option<Links>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // The header, its extensions and (usually) the backing name sit in the first cluster; read
    // up to 64 KiB plus the longest name.
    let mut head = Vec::new();
    file.by_ref().take(64 * 1024 + 1024).read_to_end(&mut head).map_err(|e| format!("{}: {e}", path.display()))?;
    if head.len() < 4 || head[..4] != QCOW2_MAGIC {
        return Ok(None);
    }
    let bad = |what: &str| format!("{}: {what}", path.display());
    let version = be32(&head, 4);
    if version != 2 && version != 3 {
        return Err(bad("unsupported qcow2 version"));
    }
    let text = |at: u64, len: u64| -> Result<String, String> {
        let (at, len) = (at as usize, len as usize);
        let bytes = head.get(at..at.saturating_add(len)).ok_or_else(|| bad("a file name lies past the header area"))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| bad("a file name is not UTF-8"))
    };
    let mut links = Links::default();
    let (boff, blen) = (be64(&head, 8), u64::from(be32(&head, 16)));
    if boff != 0 && blen != 0 {
        if blen > 1023 {
            return Err(bad("backing file name longer than 1023 bytes"));
        }
        links.backing = Some(text(boff, blen)?);
    }
    let (incompat, header_len) = if version == 3 { (be64(&head, 72), be32(&head, 100) as usize) } else { (0, 72) };
    let mut at = header_len;
    while at + 8 <= head.len() {
        let (kind, len) = (be32(&head, at), u64::from(be32(&head, at + 4)));
        if kind == 0 {
            break;
        }
        let data = (at + 8) as u64;
        match kind {
            EXT_BACKING_FORMAT => links.backing_fmt = Some(text(data, len)?),
            EXT_DATA_FILE if incompat & INCOMPAT_DATA_FILE != 0 => links.data_file = Some(text(data, len)?),
            _ => {}
        }
        at = (data + len.div_ceil(8) * 8) as usize;
    }
    Ok(links.into())
}

/// One file of a chain: where it is, and the name its referrer wrote.
struct Member {
    path: PathBuf,
    name: String,
    /// The top image's own data file: written when the top is (a writable drive's).
    top_data: bool,
}

/// Walks the chain under `top` with the host rules; returns its other files, top first, or
/// `None` if `top` is not a qcow2 image.
fn walk(top: &Path, allow_anywhere: bool) -> Result<Option<Vec<Member>>, RunnerError> {
    let arena = typed_arena::Arena::<HostFile>::new();
    let opts = HostFileOptions { read_only: true, force_share: true, ..HostFileOptions::default() };
    let mut resolver = HostResolver::new(&arena, opts, allow_anywhere, false);
    let usage = |m: String| RunnerError::Usage(format!("--drive {}: {m}", top.display()));
    let top_name = top.to_string_lossy();
    let mut referrer: &dyn BlockDevice = resolver
        .resolve(&NameRequest { name: &top_name, role: Role::File, referrer: None })
        .map_err(|e| usage(resolver.last_error.clone().unwrap_or_else(|| e.to_string())))?;
    let mut path = top.to_path_buf();
    let mut members = Vec::new();
    let mut probe = true;
    for _ in 0..=MAX_CHAIN {
        let links = if probe { read_links(&path).map_err(usage)? } else { None };
        let Some(links) = links else {
            return Ok((path != top).then_some(members));
        };
        let mut next = None;
        for (name, role) in [(links.data_file, Role::DataFile), (links.backing, Role::Backing)] {
            let Some(name) = name else { continue };
            check_name(&name).map_err(|e| usage(format!("\"{name}\" in {}: {e}", path.display())))?;
            let before = resolver.files.len();
            let dev = resolver
                .resolve(&NameRequest { name: &name, role, referrer: Some(referrer) })
                .map_err(|e| usage(resolver.last_error.clone().unwrap_or_else(|| e.to_string())))?;
            if resolver.files.len() == before {
                return Err(usage(format!("\"{name}\" in {}: a file met twice in one chain (a loop)", path.display())));
            }
            let file = resolver.path_of(dev).map(Path::to_path_buf).unwrap_or_default();
            members.push(Member { path: file.clone(), name: name.clone(), top_data: role == Role::DataFile && path == top });
            if role == Role::Backing {
                probe = links.backing_fmt.as_deref().is_none_or(|f| f == "qcow2");
                next = Some((dev, file));
            }
        }
        match next {
            Some((dev, file)) => {
                referrer = dev;
                path = file;
            }
            None => return Ok(Some(members)),
        }
    }
    Err(usage(format!("a backing chain deeper than {MAX_CHAIN} images below the top")))
}

/// Extends the data file `data` of the qcow2 image `top` (if shorter) to the image's virtual
/// size rounded up to a cluster: a virtio disk cannot grow during the boot, and the guest writes
/// every data cluster at its guest offset, the last one whole, as QEMU does. The extension is a
/// hole (zeros) and stays: a data file longer than the clusters written is what QEMU leaves too
/// once it has written the last cluster.
fn room_for_data(top: &Path, data: &Path) -> Result<(), String> {
    let mut head = [0u8; 32];
    std::fs::File::open(top).and_then(|mut f| f.read_exact(&mut head)).map_err(|e| format!("{}: {e}", top.display()))?;
    let (cluster_bits, size) = (be32(&head, 20), be64(&head, 24));
    if !(9..=21).contains(&cluster_bits) {
        return Err(format!("{}: cluster_bits {cluster_bits} out of range", top.display()));
    }
    let want = size.checked_next_multiple_of(1 << cluster_bits).ok_or_else(|| format!("{}: virtual size too large", top.display()))?;
    let file = std::fs::OpenOptions::new().write(true).open(data).map_err(|e| format!("data file {}: {e}", data.display()))?;
    let len = file.metadata().map_err(|e| format!("data file {}: {e}", data.display()))?.len();
    if len < want && file.metadata().is_ok_and(|m| m.is_file()) {
        file.set_len(want).map_err(|e| format!("extending data file {}: {e}", data.display()))?;
    }
    Ok(())
}

/// What [`expand`] makes of the drives.
#[derive(Debug, Default)]
pub struct Expanded {
    /// The drives to attach: each given drive, then its chain's files (or the pack disk that
    /// holds them).
    pub drives: Vec<Drive>,
    /// Words for the kernel command line: `--map=NAME=SERIAL` (or `NAME=SERIAL@OFFSET+SIZE`
    /// into a pack disk) for every chain file and `--format=SERIAL=FMT` for every drive with
    /// `format=`.
    pub words: Vec<String>,
    /// QEMU's warning for every writable drive whose format was probed as raw.
    pub warnings: Vec<String>,
    /// The pack disks made for this boot, removed when this is dropped: keep it until QEMU is
    /// gone.
    pub packs: Vec<PackFile>,
}

/// QEMU's warning for a writable image probed as raw (`bdrv_open_inherit`).
fn probed_raw_warning(file: &Path) -> String {
    format!(
        "Image format was not specified for '{}' and probing guessed raw. Automatically detecting \
         the format is dangerous for raw images, write operations on block 0 will be restricted. \
         Specify the 'raw' format explicitly to remove the restrictions.",
        file.display()
    )
}

/// Where files start in a pack disk: a multiple of this (and every window's size is one).
pub const PACK_ALIGN: u64 = 4096;

/// A pack disk for this boot: removed when dropped.
#[derive(Debug)]
pub struct PackFile(PathBuf);

impl Drop for PackFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A pack disk being written: one drive's chain files, each at a [`PACK_ALIGN`]ed offset.
struct Pack {
    serial: String,
    file: std::fs::File,
    guard: PackFile,
    end: u64,
    /// Files placed so far and their `--map` targets.
    placed: Vec<(PathBuf, String)>,
}

impl Pack {
    /// A new, empty pack disk with serial `serial`.
    fn create(serial: String) -> Result<Self, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("strata-pack-{}-{n}.img", std::process::id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { serial, file, guard: PackFile(path), end: 0, placed: Vec::new() })
    }

    /// Places `src` in the pack (once) and returns its `--map` target, `SERIAL@OFFSET+SIZE` in
    /// hexadecimal.
    fn add(&mut self, src: &Path) -> Result<String, String> {
        use std::io::{Seek, SeekFrom};
        if let Some((_, target)) = self.placed.iter().find(|(p, _)| p == src) {
            return Ok(target.clone());
        }
        let fail = |e: std::io::Error| format!("packing {}: {e}", src.display());
        let mut input = std::fs::File::open(src).map_err(fail)?;
        self.file.seek(SeekFrom::Start(self.end)).map_err(fail)?;
        let len = std::io::copy(&mut input, &mut self.file).map_err(fail)?;
        let size = len.next_multiple_of(PACK_ALIGN).max(PACK_ALIGN);
        let target = format!("{}@{:x}+{:x}", self.serial, self.end, size);
        self.end += size;
        self.file.set_len(self.end).map_err(fail)?;
        self.placed.push((src.to_path_buf(), target.clone()));
        Ok(target)
    }
}

/// Expands qcow2 drives into their chains (see the module docs). A drive with `format=raw` is
/// never looked into; one with `format=qcow2` must be qcow2; one without is probed. If the
/// chains' files are more than the machine has device slots for, each drive's chain files go
/// into one pack disk instead (see the module docs).
pub fn expand(drives: &[Drive], machine: Machine, transport: Transport, allow_anywhere: bool) -> Result<Expanded, RunnerError> {
    let max = max_drives(machine, transport);
    let mut expanded = expand_with(drives, allow_anywhere, false)?;
    if expanded.drives.len() > max {
        expanded = expand_with(drives, allow_anywhere, true)?;
    }
    if expanded.drives.len() > max {
        return Err(RunnerError::Usage(format!(
            "{} drives with their backing and data files; the {} machine takes at most {max}",
            expanded.drives.len(),
            machine.as_str()
        )));
    }
    Ok(expanded)
}

/// [`expand`], each drive's chain files as drives of their own or, with `pack`, in one pack disk
/// per drive.
fn expand_with(drives: &[Drive], allow_anywhere: bool, pack: bool) -> Result<Expanded, RunnerError> {
    let mut out = Vec::new();
    // Name, file, and the serial (or pack window) the guest finds it at.
    let mut maps: Vec<(String, PathBuf, String)> = Vec::new();
    let mut expanded = Expanded::default();
    for drive in drives {
        out.push(drive.clone());
        if drive.backing != Backing::File {
            continue;
        }
        if let Some(format) = drive.format {
            expanded.words.push(format!("--format={}={}", drive.serial, format.as_str()));
        }
        if drive.format == Some(Format::Raw) {
            continue;
        }
        let Some(members) = walk(&drive.file, allow_anywhere)? else {
            if drive.format == Some(Format::Qcow2) {
                return Err(RunnerError::Usage(format!("--drive {}: format=qcow2, but the file is not a qcow2 image", drive.file.display())));
            }
            if !drive.read_only {
                expanded.warnings.push(probed_raw_warning(&drive.file));
            }
            continue;
        };
        let usage = |m: String| RunnerError::Usage(format!("--drive {}: {m}", drive.file.display()));
        let mut packed = None;
        if pack && !members.is_empty() {
            let serial = format!("{}.p", drive.serial);
            check_serial(&serial).map_err(|m| usage(format!("pack disk: {m} (choose a shorter serial=)")))?;
            packed = Some(Pack::create(serial).map_err(usage)?);
        }
        for (i, member) in members.into_iter().enumerate() {
            if member.name.chars().any(char::is_whitespace) {
                return Err(usage(format!("the file name \"{}\" contains whitespace, which the kernel command line cannot carry", member.name)));
            }
            if let Some((_, file, _)) = maps.iter().find(|(n, _, _)| *n == member.name) {
                // The same name for another file (images in different directories): the
                // guest resolves by name only.
                if *file != member.path {
                    return Err(usage(format!("the name \"{}\" means two different files in this chain; the guest resolves names only", member.name)));
                }
                continue;
            }
            let target = match &mut packed {
                // A writable top's data file is written in place: a drive of its own, never
                // packed, big enough for every cluster of the disk.
                _ if member.top_data && !drive.read_only => {
                    let serial = format!("{}.{}", drive.serial, i + 1);
                    check_serial(&serial).map_err(|m| usage(format!("data file {}: {m} (choose a shorter serial=)", member.path.display())))?;
                    room_for_data(&drive.file, &member.path).map_err(usage)?;
                    out.push(Drive { read_only: false, headroom: Some(0), format: Some(Format::Raw), ..Drive::new(member.path.clone(), serial.clone()) });
                    serial
                }
                Some(p) => p.add(&member.path).map_err(usage)?,
                None => {
                    let serial = format!("{}.{}", drive.serial, i + 1);
                    check_serial(&serial).map_err(|m| usage(format!("chain file {}: {m} (choose a shorter serial=)", member.path.display())))?;
                    // Backing and data files are only read: no headroom.
                    out.push(Drive { read_only: true, headroom: Some(0), ..Drive::new(member.path.clone(), serial.clone()) });
                    serial
                }
            };
            maps.push((member.name, member.path, target));
        }
        if let Some(p) = packed {
            out.push(Drive { read_only: true, headroom: Some(0), format: Some(Format::Raw), ..Drive::new(p.guard.0.clone(), p.serial.clone()) });
            expanded.packs.push(p.guard);
        }
    }
    expanded.words.extend(maps.into_iter().map(|(n, _, s)| format!("--map={n}={s}")));
    expanded.drives = out;
    Ok(expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_places_files_at_aligned_windows_once() {
        let dir = std::env::temp_dir().join(format!("qr-pack-{}", std::process::id()));
        assert!(std::fs::create_dir_all(&dir).is_ok());
        let (a, b) = (dir.join("a.img"), dir.join("b.img"));
        assert!(std::fs::write(&a, vec![1u8; 5000]).is_ok() && std::fs::write(&b, vec![2u8; 4096]).is_ok());
        let Ok(mut pack) = Pack::create("S.p".into()) else { panic!("pack") };
        assert_eq!(pack.add(&a).as_deref(), Ok("S.p@0+2000"));
        assert_eq!(pack.add(&b).as_deref(), Ok("S.p@2000+1000"));
        assert_eq!(pack.add(&a).as_deref(), Ok("S.p@0+2000"));
        let path = pack.guard.0.clone();
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert_eq!(bytes.len(), 0x3000);
        assert!(bytes[..5000].iter().all(|&x| x == 1) && bytes[5000..0x2000].iter().all(|&x| x == 0));
        assert!(bytes[0x2000..].iter().all(|&x| x == 2));
        drop(pack);
        assert!(!path.exists(), "a pack disk is removed when dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn raw_files_have_no_links() {
        let f = std::env::temp_dir().join(format!("qr-chain-{}.raw", std::process::id()));
        assert!(std::fs::write(&f, [0u8; 4096]).is_ok());
        assert_eq!(read_links(&f), Ok(None));
        let _ = std::fs::remove_file(&f);
    }
}
