//! `img map`: where an image's data lives, like `qemu-img map`: extents with start, length,
//! depth in the chain, present, zero, data and host offset, merged as qemu-img merges them.
//!
//! The block layer reports each extent's kind ([`strata_block::io::block_status`]); what QEMU
//! learns from the host file system is added here, as QEMU does: ranges of a raw file that are
//! holes read as zeros and are not data; inside a qcow2 data cluster, a host hole sets `zero`
//! only if the image looks metadata-preallocated (QEMU's `qcow2_detect_metadata_preallocation`:
//! more clusters with a refcount than the file has allocated, by a tenth).
//!
//! Zero and unallocated extents carry a host offset where the layer keeps a cluster for them
//! anyway (QEMU's `ZERO_ALLOC` and `UNALLOCATED_ALLOC`: a preallocated zero cluster, the
//! unallocated or zero subclusters of an allocated extended-L2 cluster), as qemu-img prints it;
//! with an offset, adjacent extents merge only where their host ranges are contiguous.
//!
//! The human output is qemu-img's: the merged extents that are data and not zeros, and an error
//! (after the lines before it) at the first data extent without a host offset (a compressed
//! cluster).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use strata_block::graph::Role;
use strata_block::path::{block_status, ExtentKind};
use strata_block::NodeId;

use super::args::Args;
use super::holes::HostFiles;
use super::image::{self, block_on, Image, OpenOptions};
use super::ImgError;

/// Most bytes asked for per status call.
const STEP: u64 = 1 << 30;

/// One extent as qemu-img prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// First byte.
    pub start: u64,
    /// Bytes.
    pub length: u64,
    /// Backing links followed.
    pub depth: u16,
    /// Allocated in some layer.
    pub present: bool,
    /// Reads as zeros.
    pub zero: bool,
    /// Has data.
    pub data: bool,
    /// A compressed cluster (newer qemu-img prints it, 10.x here; 7.2 does not).
    pub compressed: bool,
    /// Host offset, where there is one.
    pub offset: Option<u64>,
    /// Host file, where there is one, as QEMU names it (`Image::names`).
    pub file: Option<PathBuf>,
}

/// Runs `img map [-f FMT] [--image-opts] [-U] [--output=human|json] [--cache-size SIZE]
/// [--allow-backing-anywhere] FILE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(argv, &mut out)
}

/// [`run`], printing into `out`.
pub fn run_to(argv: &[String], out: &mut dyn Write) -> Result<(), ImgError> {
    let args = Args::parse(argv, &["-f", "--output"], &["-U", "--force-share", "--image-opts"])?;
    let spec = &args.exactly(1, "one image")?[0];
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        read_only: true,
        force_share: args.has("-U") || args.has("--force-share"),
        ..args.image_options()?
    };
    let as_json = match args.value("--output").unwrap_or("human") {
        "json" => true,
        "human" => false,
        other => return Err(ImgError::usage(format!("--output={other}: expected human or json"))),
    };
    let entries = image::with_image(spec, &opts, map)?;
    let written = |e: std::io::Error| ImgError::failed(format!("writing the output: {e}"));
    if as_json {
        writeln!(out, "{}", json(&entries)).map_err(written)?;
        return Ok(());
    }
    let (text, refused) = human(&entries);
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(written)?;
    match refused {
        Some(message) => Err(ImgError::failed(message.into())),
        None => Ok(()),
    }
}

/// What qemu-img refuses to draw in the human map.
const NO_HUMAN_MAP: &str = "File contains external, encrypted or compressed clusters.";

/// `img map`'s human text for `entries`, as qemu-img prints it, and its error if it stops: the
/// header, then every data extent that is not zeros, up to the first data extent without a
/// host offset.
pub fn human(entries: &[MapEntry]) -> (String, Option<&'static str>) {
    let mut text = format!("{:<16}{:<16}{:<16}File\n", "Offset", "Length", "Mapped to");
    for e in entries {
        let Some(offset) = e.offset.filter(|_| e.data) else {
            if e.data {
                return (text, Some(NO_HUMAN_MAP));
            }
            continue;
        };
        if !e.zero {
            let file = e.file.as_deref().map_or(String::new(), |p| p.display().to_string());
            text.push_str(&format!("{:<16}{:<16}{:<16}{file}\n", hex(e.start), hex(e.length), hex(offset)));
        }
    }
    (text, None)
}

/// C's `%#x`: `0x` before a non-zero number only (qemu-img prints an extent at 0 as `0`).
fn hex(v: u64) -> String {
    if v == 0 {
        "0".into()
    } else {
        format!("{v:#x}")
    }
}

/// `img map --output=json`'s text for `entries`, as qemu-img prints it (one extent a line).
pub fn json(entries: &[MapEntry]) -> String {
    let lines: Vec<String> = entries.iter().map(json_line).collect();
    format!("[{}]", lines.join(",\n"))
}

/// qemu-img's JSON line for one extent.
fn json_line(e: &MapEntry) -> String {
    let mut s = format!(
        "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}, \"compressed\": {}",
        e.start, e.length, e.depth, e.present, e.zero, e.data, e.compressed
    );
    if let Some(o) = e.offset {
        s.push_str(&format!(", \"offset\": {o}"));
    }
    s.push('}');
    s
}

/// The extents of an open image.
pub fn map(img: &Image<'_, '_>) -> Result<Vec<MapEntry>, ImgError> {
    let graph = img.backend.graph();
    let size = img.backend.size();
    let mut files = HostFiles::new(img);
    let mut prealloc: HashMap<NodeId, bool> = HashMap::new();
    let mut out: Vec<MapEntry> = Vec::new();
    let mut pos = 0;
    while pos < size {
        let ext = block_on(block_status(&graph.stack(), img.root(), pos, (size - pos).min(STEP)))
            .map_err(|e| ImgError::failed(format!("error while mapping at byte {pos}: {e}")))?;
        let base = MapEntry { start: pos, length: ext.len, depth: ext.depth, present: true, zero: false, data: true, compressed: false, offset: None, file: None };
        match ext.kind {
            ExtentKind::Compressed => push(&mut out, MapEntry { compressed: true, ..base }),
            ExtentKind::Sink => push(&mut out, base),
            ExtentKind::Zero | ExtentKind::Hole => {
                let (offset, file) = match ext.kept {
                    Some(k) => (Some(k.offset), graph.node(k.node).ok().and_then(|n| n.device()).and_then(|d| files.name(d)).map(PathBuf::from)),
                    None => (None, None),
                };
                let present = ext.kind == ExtentKind::Zero;
                push(&mut out, MapEntry { zero: true, data: false, present, offset, file, ..base });
            }
            ExtentKind::Data { leaf, offset, mapped_by } => {
                let device = graph.node(leaf).ok().and_then(|n| n.device());
                let path = device.and_then(|d| files.path(d));
                let name = device.and_then(|d| files.name(d)).map(PathBuf::from);
                let qcow2_prealloc = mapped_by.map(|q| *prealloc.entry(q).or_insert_with(|| metadata_preallocated(img, q)));
                // Split by the host file's holes.
                let mut done = 0;
                while done < ext.len {
                    let (hole, n) = match &path {
                        Some(p) => files.hole(p, offset + done, ext.len - done),
                        None => (false, ext.len - done),
                    };
                    let (data, zero) = match qcow2_prealloc {
                        None => (!hole, hole),
                        Some(pre) => (true, hole && pre),
                    };
                    push(&mut out, MapEntry {
                        start: pos + done,
                        length: n,
                        data,
                        zero,
                        offset: Some(offset + done),
                        file: name.clone(),
                        ..base.clone()
                    });
                    done += n;
                }
            }
        }
        pos += ext.len;
    }
    Ok(out)
}

/// Appends `e`, merging it into the last entry where qemu-img would.
fn push(out: &mut Vec<MapEntry>, e: MapEntry) {
    if let Some(last) = out.last_mut() {
        let contiguous = match (last.offset, e.offset) {
            (None, None) => true,
            (Some(a), Some(b)) => a + last.length == b,
            _ => false,
        };
        if last.depth == e.depth && last.present == e.present && last.zero == e.zero && last.data == e.data && last.compressed == e.compressed && last.file == e.file && contiguous {
            last.length += e.length;
            return;
        }
    }
    out.push(e);
}

/// QEMU's metadata-preallocation guess for qcow2 node `node`.
fn metadata_preallocated(img: &Image<'_, '_>, node: NodeId) -> bool {
    let graph = img.backend.graph();
    let Ok(n) = graph.node(node) else { return false };
    let (Some(q), Some(file)) = (graph.state(node).ok().flatten().and_then(|s| s.qcow2()), n.child(Role::File)) else {
        return false;
    };
    let Some(path) = graph.node(file).ok().and_then(|f| f.device()).and_then(|d| HostFiles::new(img).path(d)) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata(&path) else { return false };
    let cs = q.cluster_size();
    let real_clusters = meta.blocks() * 512 / cs;
    let threshold = (real_clusters * 10 / 9).max(real_clusters + 2);
    let end = meta.len().div_ceil(cs);
    let mut count = 0;
    // As QEMU: stop at the threshold, and reaching it is enough.
    for i in 0..end {
        if count >= threshold {
            break;
        }
        match block_on(q.refcount(&graph.io(), file, i * cs)) {
            Ok(r) => count += u64::from(r != 0),
            Err(_) => return false,
        }
    }
    count >= threshold
}
