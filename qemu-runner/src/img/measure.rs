//! `img measure`: how large a new image would be, as `qemu-img measure` reports it ("required
//! size", "fully allocated size" and, for a qcow2 v3 source, "bitmaps size").
//!
//! The qcow2 formulas are the block layer's ([`strata_block::driver::qcow2::measure`], QEMU's
//! `qcow2_measure`); the data a source fills is counted from block status as QEMU counts it
//! (data extents rounded out to whole clusters, zeros and holes left out), with the same piece
//! walk `img convert` copies by. A raw output takes the whole virtual size, rounded to a sector
//! (QEMU's `raw_measure`).

use serde_json::json;
use strata_block::driver::qcow2::bitmaps::BitmapWalk;
use strata_block::driver::qcow2::measure::{self, Geometry, Measure};
use strata_block::graph::Role;

use super::args::{parse_size, Args};
use super::create::split_options;
use super::map;
use super::image::{self, block_on, Image, OpenOptions};
use super::qjson;
use super::ImgError;

/// QEMU's limit on an L1 table (`QCOW_MAX_L1_SIZE`): 32 MiB.
const MAX_L1_BYTES: u64 = 32 << 20;

/// What `-o` asks of a qcow2 output.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Qcow2Opts {
    geometry: Geometry,
    version: u32,
    backing: bool,
    /// `preallocation=full|falloc`: every data cluster is written.
    full: bool,
}

/// Runs `img measure [--output=human|json] [-O FMT] [-o OPTIONS] [-f FMT] [--image-opts]
/// [-U] [--size N | FILE]`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    print!("{}", output(argv)?);
    Ok(())
}

/// What [`run`] prints.
pub fn output(argv: &[String]) -> Result<String, ImgError> {
    let args = Args::parse(argv, &["-f", "-O", "-o", "--output", "--size", "-l"], &["--image-opts", "-U", "--force-share"])?;
    let json = match args.value("--output").unwrap_or("human") {
        "json" => true,
        "human" => false,
        other => return Err(ImgError::usage(format!("--output must be used with human or json as argument. ({other})"))),
    };
    let size = args.value("--size").map(|s| parse_size(s).map_err(|_| ImgError::usage("Invalid image size specified. Must be between 0 and 9223372036854775807.".into()))).transpose()?;
    let file = match (size, args.positional.as_slice()) {
        (Some(_), [_, ..]) => return Err(ImgError::failed("--size N cannot be used together with a filename.".into())),
        (None, []) => return Err(ImgError::failed("Either --size N or one filename must be specified.".into())),
        (None, [f]) => Some(f.clone()),
        (Some(_), []) => None,
        (None, _) => return Err(ImgError::usage("expected one filename".into())),
    };
    let out_fmt = args.value("-O").unwrap_or("raw");
    let options: Vec<String> = args.values("-o").map(str::to_string).collect();
    let qcow2 = match out_fmt {
        "qcow2" => Some(qcow2_options(&options)?),
        "raw" => {
            raw_options(&options)?;
            None
        }
        "qcow" | "vmdk" | "vdi" | "vpc" | "vhdx" | "qed" | "parallels" | "dmg" | "luks" | "cloop" | "bochs" => {
            return Err(ImgError::failed(format!("Block driver '{out_fmt}' does not support size measurement")))
        }
        other => return Err(ImgError::failed(format!("Unknown file format '{other}'"))),
    };
    let (measured, bitmaps) = match (file, size) {
        (Some(f), _) => {
            let opts = OpenOptions {
                format: args.value("-f").map(str::to_string),
                image_opts: args.has("--image-opts"),
                read_only: true,
                force_share: args.has("-U") || args.has("--force-share"),
                extra: args.value("-l").map(|l| if l.contains('=') { l.to_string() } else { format!("snapshot.name={l}") }),
                ..args.image_options()?
            };
            image::with_image(&f, &opts, |img| source(img, qcow2.as_ref()))?
        }
        (None, Some(n)) => (target(n, 0, qcow2.as_ref())?, None),
        (None, None) => return Err(ImgError::failed("Either --size N or one filename must be specified.".into())),
    };
    Ok(render(measured, bitmaps, json))
}

/// The measure of `img` as a new image of the output format.
fn source(img: &Image<'_, '_>, qcow2: Option<&Qcow2Opts>) -> Result<(Measure, Option<u64>), ImgError> {
    let size = img.backend.size();
    let Some(q) = qcow2 else { return Ok((target(size, 0, None)?, None)) };
    let cs = q.geometry.cluster_size;
    let required = if q.backing { size.next_multiple_of(cs) } else { filled(img, cs)? };
    let measured = target(size, required, qcow2)?;
    let bitmaps = if q.version >= 3 { bitmaps_size(img, cs)? } else { None };
    Ok((measured, bitmaps))
}

/// Bytes of whole `cs` clusters that hold data of `img` (QEMU: block status above, data and
/// allocated, rounded out to clusters; zero extents skipped). The extents are `img map`'s, so a
/// host hole under a qcow2 data cluster counts as zero only where QEMU's block status says so
/// (a metadata-preallocated image).
fn filled(img: &Image<'_, '_>, cs: u64) -> Result<u64, ImgError> {
    let (mut counted_to, mut required) = (0u64, 0u64);
    for e in map::map(img)?.iter().filter(|e| e.data && !e.zero && e.length > 0) {
        // QEMU counts from the start of the cluster holding the extent to its rounded-up end,
        // then goes on from there: the union of the clusters data touches.
        let start = (e.start - e.start % cs).max(counted_to);
        let end = (e.start + e.length).next_multiple_of(cs);
        if end > start {
            required += end - start;
            counted_to = end;
        }
    }
    Ok(required)
}

/// Bytes the source's persistent bitmaps would take in a qcow2 of `cs` clusters (QEMU's
/// `qcow2_get_persistent_dirty_bitmap_size`); `None` if the source cannot have them (not a
/// qcow2 v3).
fn bitmaps_size(img: &Image<'_, '_>, cs: u64) -> Result<Option<u64>, ImgError> {
    let graph = img.backend.graph();
    let root = img.root();
    let Some(state) = graph.state(root).map_err(|e| ImgError::failed(e.to_string()))? else { return Ok(None) };
    let Some(q) = state.qcow2() else { return Ok(None) };
    let h = q.header();
    if h.version < 3 {
        return Ok(None);
    }
    let Some((offset, len, count)) = q.extensions().bitmap_directory else { return Ok(Some(0)) };
    let file = graph.node(root).ok().and_then(|n| n.child(Role::File)).ok_or_else(|| ImgError::failed("qcow2 node without a file".into()))?;
    let fail = |e: strata_block::Error| ImgError::failed(format!("Could not read the bitmap directory: {e}"));
    let mut walk = BitmapWalk::new(offset, len, count, q.cluster_size(), h.size);
    let (mut data, mut dir) = (0u64, 0u64);
    while let Some(b) = block_on(walk.next(&graph.io(), file)).map_err(fail)? {
        data += measure::bitmap_clusters_size(h.size, b.granularity(), cs);
        dir += measure::bitmap_dir_entry_size(u64::from(b.name_len));
    }
    Ok(Some(data + measure::bitmap_directory_size(dir, cs)))
}

/// The measure of a new image of `size` virtual bytes of which `required` bytes (whole
/// clusters) hold data; a raw one when `qcow2` is `None`.
fn target(size: u64, required: u64, qcow2: Option<&Qcow2Opts>) -> Result<Measure, ImgError> {
    let Some(q) = qcow2 else {
        let n = size.next_multiple_of(512);
        return Ok(Measure { required: n, fully_allocated: n });
    };
    let g = q.geometry;
    let l2e = if g.extended_l2 { 16 } else { 8 };
    let l2_tables = size.div_ceil(g.cluster_size).div_ceil(g.cluster_size / l2e);
    if l2_tables.saturating_mul(8) > MAX_L1_BYTES {
        return Err(ImgError::failed("The image size is too large (try using a larger cluster size)".into()));
    }
    let required = if q.full { size.next_multiple_of(g.cluster_size) } else { required };
    Ok(measure::measure(size, required, g))
}

/// qemu-img's text (or JSON) for a measure.
fn render(m: Measure, bitmaps: Option<u64>, json: bool) -> String {
    if json {
        // In the schema's order (BlockMeasureInfo); qjson prints it in QEMU's table order.
        let mut v = serde_json::Map::new();
        v.insert("required".into(), json!(m.required));
        v.insert("fully-allocated".into(), json!(m.fully_allocated));
        if let Some(b) = bitmaps {
            v.insert("bitmaps".into(), json!(b));
        }
        format!("{}\n", qjson::pretty(&serde_json::Value::Object(v)))
    } else {
        let mut s = format!("required size: {}\nfully allocated size: {}\n", m.required, m.fully_allocated);
        if let Some(b) = bitmaps {
            s += &format!("bitmaps size: {b}\n");
        }
        s
    }
}

/// `-o` for a raw output: only `size` and `preallocation` mean anything to its measure.
fn raw_options(options: &[String]) -> Result<(), ImgError> {
    for item in options.iter().flat_map(|o| split_options(o)) {
        let key = item.split_once('=').map_or(item.as_str(), |(k, _)| k);
        if !matches!(key, "size" | "preallocation" | "extent_size_hint") {
            return Err(invalid(key, "raw"));
        }
    }
    Ok(())
}

fn invalid(key: &str, fmt: &str) -> ImgError {
    ImgError::failed(format!("Invalid parameter '{key}'\nInvalid options for file format '{fmt}'"))
}

/// `-o` for a qcow2 output, checked as `qcow2_measure` checks it.
fn qcow2_options(options: &[String]) -> Result<Qcow2Opts, ImgError> {
    let (mut cluster, mut refcount_bits, mut version, mut ext_l2) = (None, None, 3u32, false);
    let (mut backing, mut full) = (false, false);
    let bad = |msg: String| ImgError::failed(msg);
    for item in options.iter().flat_map(|o| split_options(o)) {
        let (key, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
        let on_off = |v: &str| match v {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err(bad(format!("Parameter '{key}' expects 'on' or 'off'"))),
        };
        match key {
            "cluster_size" => cluster = Some(parse_size(value).map_err(|_| bad(format!("Parameter '{key}' expects a non-negative number below 2^64")))?),
            "refcount_bits" => refcount_bits = Some(value.parse::<u64>().map_err(|_| bad(format!("Parameter '{key}' expects a non-negative number below 2^64")))?),
            "compat" => {
                version = match value {
                    "0.10" | "v2" => 2,
                    "1.1" | "v3" => 3,
                    _ => return Err(bad(format!("Invalid parameter value for 'compat': '{value}'"))),
                }
            }
            "extended_l2" => ext_l2 = on_off(value)?,
            "lazy_refcounts" => {
                on_off(value)?;
            }
            "preallocation" => {
                full = match value {
                    "off" | "metadata" => false,
                    "falloc" | "full" => true,
                    _ => return Err(bad(format!("Invalid parameter '{value}'"))),
                }
            }
            "backing_file" => backing = true,
            "backing_fmt" | "compression_type" | "size" | "data_file" | "data_file_raw" => {}
            "encryption" | "encrypt.format" if value == "off" || value.is_empty() => {}
            "encryption" | "encrypt.format" => return Err(bad("encrypted qcow2 output is not supported".into())),
            _ => return Err(invalid(key, "qcow2")),
        }
    }
    let cs = cluster.unwrap_or(65536);
    if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
        return Err(bad("Cluster size must be a power of two between 512 and 2048k".into()));
    }
    if ext_l2 && cs < 16 << 10 {
        return Err(bad("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes".into()));
    }
    let bits = refcount_bits.unwrap_or(16);
    if !bits.is_power_of_two() || bits > 64 {
        return Err(bad("Refcount width must be a power of two and may not exceed 64 bits".into()));
    }
    if version < 3 && bits != 16 {
        return Err(bad("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)".into()));
    }
    Ok(Qcow2Opts {
        geometry: Geometry { cluster_size: cs, refcount_order: bits.trailing_zeros(), extended_l2: ext_l2 },
        version,
        backing,
        full,
    })
}

