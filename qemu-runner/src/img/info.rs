//! `img info`: what an image is (format, virtual size, host disk use), like `qemu-img info`;
//! `--backing-chain` for every layer; `--output=json` with qemu-img's fields, keys in the order
//! qemu-img prints them ([`qjson`](super::qjson)).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::{json, Value};
use strata_block::driver::qcow2::bitmaps::{BitmapWalk, FLAG_AUTO, FLAG_IN_USE};
use strata_block::driver::qcow2::header::{autoclear, compat, incompat};
use strata_block::driver::qcow2::snapshots::SnapshotInfo;
use strata_block::driver::qcow2::Qcow2;
use strata_block::driver::NameRef;
use strata_block::graph::Role;
use strata_block::NodeId;

use super::args::Args;
use super::holes::HostFiles;
use super::image::{self, block_on, Image, OpenOptions};
use super::qjson;
use super::human::human_size;
use super::ImgError;

/// Runs `img info [-f FMT] [--image-opts] [-U] [--backing-chain] [--output=human|json] FILE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    run_to(argv, &mut std::io::stdout())
}

/// [`run`], printing into `out`.
pub fn run_to(argv: &[String], out: &mut dyn Write) -> Result<(), ImgError> {
    let args = Args::parse(argv, &["-f", "--output"], &["-U", "--force-share", "--image-opts", "--backing-chain"])?;
    let spec = &args.exactly(1, "one image")?[0];
    let chain = args.has("--backing-chain");
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        read_only: true,
        force_share: args.has("-U") || args.has("--force-share"),
        // As qemu-img info: the image alone, its backing file is only named.
        no_backing: !chain,
        ..args.image_options()?
    };
    let json_out = match args.value("--output").unwrap_or("human") {
        "json" => true,
        "human" => false,
        other => return Err(ImgError::usage(format!("--output={other}: expected human or json"))),
    };
    let layers = image::with_image(spec, &opts, |img| layers(img, spec, !opts.image_opts, chain))?;
    let text = if json_out {
        let values: Vec<Value> = layers.iter().map(Layer::json).collect();
        if chain {
            qjson::pretty(&Value::Array(values))
        } else {
            values.into_iter().next().map(|v| qjson::pretty(&v)).unwrap_or_default()
        }
    } else {
        layers.iter().map(Layer::human).collect::<Vec<_>>().join("\n")
    };
    writeln!(out, "{}", text.trim_end_matches('\n')).map_err(|e| ImgError::failed(format!("writing the output: {e}")))
}

/// One image of the chain as `img info` shows it.
struct Layer {
    /// Its name as qemu-img gives it: the argument for the top, the full backing name below.
    filename: String,
    format: &'static str,
    size: u64,
    /// The host file: its length and disk use (`None` for an options string).
    file: Option<(u64, u64)>,
    qcow2: Option<Qcow2Info>,
}

/// The image's layers: the top, and with `chain` every backing layer below it.
fn layers(img: &Image<'_, '_>, spec: &str, named: bool, chain: bool) -> Result<Vec<Layer>, ImgError> {
    let graph = img.backend.graph();
    let files = HostFiles::new(img);
    let mut out: Vec<Layer> = Vec::new();
    let mut node = Some(img.root());
    let mut filename = spec.to_string();
    while let Some(n) = node {
        let here = graph.node(n).map_err(|e| ImgError::failed(e.to_string()))?;
        let qcow2 = qcow2_info(img, n)?;
        // The host file under this layer (through its file children).
        let mut leaf = n;
        while let Some(f) = graph.node(leaf).ok().and_then(|x| x.child(Role::File)) {
            leaf = f;
        }
        let path = graph.node(leaf).ok().and_then(|x| x.device()).and_then(|d| files.path(d));
        let file = if named || !out.is_empty() {
            // QEMU's file length is in whole 512-byte sectors.
            path.and_then(|p| std::fs::metadata(p).ok()).map(|m| (m.len().next_multiple_of(512), m.blocks() * 512))
        } else {
            None
        };
        let next_name = qcow2.as_ref().and_then(|q| q.backing.as_deref()).map(|b| full_backing_name(&filename, b));
        out.push(Layer { filename: filename.clone(), format: here.driver, size: here.size(), file, qcow2 });
        node = if chain { here.child(Role::Backing) } else { None };
        match next_name {
            Some(b) => filename = b,
            None => break,
        }
    }
    Ok(out)
}

/// QEMU's `path_combine`: a relative backing name is taken from the referring image's
/// directory, as the image's name spells it (`j/top.qcow2` names `j/base.qcow2`).
fn full_backing_name(image: &str, backing: &str) -> String {
    if Path::new(backing).is_absolute() {
        return backing.to_string();
    }
    match image.rfind('/') {
        Some(i) => format!("{}{backing}", &image[..=i]),
        None => backing.to_string(),
    }
}

impl Layer {
    /// qemu-img's JSON object (keys in QAPI's `BlockNodeInfo` order, then `children`).
    fn json(&self) -> Value {
        let mut v = json!({
            "filename": self.filename,
            "format": self.format,
            "dirty-flag": self.qcow2.as_ref().is_some_and(|q| q.dirty),
        });
        if let Some((_, disk)) = self.file {
            v["actual-size"] = disk.into();
        }
        v["virtual-size"] = self.size.into();
        if let Some(q) = &self.qcow2 {
            v["cluster-size"] = q.cluster_size.into();
            if let Some(b) = &q.backing {
                v["backing-filename"] = b.clone().into();
                v["full-backing-filename"] = full_backing_name(&self.filename, b).into();
            }
            if let Some(f) = &q.backing_format {
                v["backing-filename-format"] = f.clone().into();
            }
            if !q.snapshots.is_empty() {
                v["snapshots"] = q
                    .snapshots
                    .iter()
                    .map(|s| {
                        let mut o = json!({
                            "id": s.id.as_str(), "name": s.name.as_str(), "vm-state-size": s.vm_state_size,
                            "date-sec": s.date_sec, "date-nsec": s.date_nsec,
                            "vm-clock-sec": s.vm_clock_nsec / 1_000_000_000,
                            "vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000,
                        });
                        if let Some(c) = s.icount {
                            o["icount"] = c.into();
                        }
                        o
                    })
                    .collect();
            }
            // A version 2 image has only these three (QEMU's qcow2_get_specific_info).
            let mut data = json!({ "compat": q.compat, "compression-type": q.compression });
            if q.compat == "0.10" {
                data["refcount-bits"] = q.refcount_bits.into();
            } else {
                data["lazy-refcounts"] = q.lazy_refcounts.into();
                if !q.bitmaps.is_empty() {
                    data["bitmaps"] = q
                        .bitmaps
                        .iter()
                        .map(|b| json!({ "flags": bitmap_flags(b.flags), "name": b.name, "granularity": b.granularity }))
                        .collect();
                }
                data["refcount-bits"] = q.refcount_bits.into();
                if let Some(d) = &q.data_file {
                    data["data-file"] = d.clone().into();
                    data["data-file-raw"] = q.data_file_raw.into();
                }
                data["corrupt"] = q.corrupt.into();
                data["extended-l2"] = q.extended_l2.into();
            }
            v["format-specific"] = json!({ "type": "qcow2", "data": data });
        }
        // qemu-img 8.0 and later list the node's file child (7.2 does not).
        if let Some((len, disk)) = self.file {
            let file = json!({
                "children": [], "virtual-size": len, "filename": self.filename, "format": "file",
                "actual-size": disk, "format-specific": { "type": "file", "data": {} }, "dirty-flag": false,
            });
            v["children"] = json!([{ "name": "file", "info": file }]);
        }
        v
    }

    /// qemu-img's human lines.
    fn human(&self) -> String {
        let mut s = format!("image: {}\nfile format: {}\n", self.filename, self.format);
        s += &format!("virtual size: {} ({} bytes)\n", human_size(self.size), self.size);
        if let Some((_, disk)) = self.file {
            s += &format!("disk size: {}\n", human_size(disk));
        }
        if let Some(q) = &self.qcow2 {
            s += &qcow2_human(q, &self.filename);
        }
        // qemu-img 8.0 and later describe the file child too.
        if let Some((len, disk)) = self.file {
            s += &format!("Child node '/file':\n    filename: {}\n    protocol type: file\n", self.filename);
            s += &format!("    file length: {} ({len} bytes)\n    disk size: {}\n", human_size(len), human_size(disk));
        }
        s
    }
}

/// qemu-img's names for bitmap flags, in its order.
fn bitmap_flags(flags: u32) -> Vec<&'static str> {
    let mut out = Vec::new();
    if flags & FLAG_IN_USE != 0 {
        out.push("in-use");
    }
    if flags & FLAG_AUTO != 0 {
        out.push("auto");
    }
    out
}

/// One persistent bitmap, as listed.
struct Bitmap {
    name: String,
    granularity: u64,
    flags: u32,
}

/// What `img info` shows of a qcow2 image.
struct Qcow2Info {
    cluster_size: u64,
    backing: Option<String>,
    backing_format: Option<String>,
    data_file: Option<String>,
    data_file_raw: bool,
    compat: &'static str,
    compression: &'static str,
    lazy_refcounts: bool,
    refcount_bits: u64,
    corrupt: bool,
    dirty: bool,
    extended_l2: bool,
    snapshots: Vec<SnapshotInfo>,
    bitmaps: Vec<Bitmap>,
}

/// The qcow2 details of node `node`, if it is one.
fn qcow2_info(img: &Image<'_, '_>, node: NodeId) -> Result<Option<Qcow2Info>, ImgError> {
    let graph = img.backend.graph();
    let here = graph.node(node).map_err(|e| ImgError::failed(e.to_string()))?;
    let Some(state) = graph.state(node).map_err(|e| ImgError::failed(e.to_string()))? else { return Ok(None) };
    let Some(q) = state.qcow2() else {
        return Ok(None);
    };
    let fail = |e: strata_block::Error| ImgError::failed(format!("Could not read the image: {e}"));
    let h = q.header();
    let links = state.links();
    let read = |r: Option<NameRef>| -> Result<Option<String>, ImgError> {
        let Some(r) = r else { return Ok(None) };
        let mut buf = vec![0u8; usize::from(r.len)];
        block_on(Qcow2::read_file_bytes(&graph.io(), node, r.offset, &mut buf)).map_err(fail)?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    };
    let mut snapshots = Vec::new();
    let file = here.child(Role::File).ok_or_else(|| ImgError::failed("qcow2 node without a file".into()))?;
    let mut walk = q.snapshots();
    while let Some(s) = block_on(walk.next(&graph.io(), file)).map_err(fail)? {
        snapshots.push(s);
    }
    let mut bitmaps = Vec::new();
    if let Some((offset, len, count)) = q.extensions().bitmap_directory {
        let mut walk = BitmapWalk::new(offset, len, count, q.cluster_size(), h.size);
        let fail = |e: strata_block::Error| ImgError::failed(format!("Could not read the bitmap directory: {e}"));
        while let Some(b) = block_on(walk.next(&graph.io(), file)).map_err(fail)? {
            let name = read(Some(NameRef { offset: b.name_offset, len: b.name_len }))?.unwrap_or_default();
            bitmaps.push(Bitmap { name, granularity: b.granularity(), flags: b.flags });
        }
    }
    Ok(Some(Qcow2Info {
        cluster_size: q.cluster_size(),
        backing: read(links.backing)?,
        backing_format: q.extensions().backing_format().map(str::to_string),
        data_file: read(links.data_file)?,
        data_file_raw: h.autoclear & autoclear::DATA_FILE_RAW != 0,
        compat: if h.version == 2 { "0.10" } else { "1.1" },
        compression: h.compression.name(),
        lazy_refcounts: h.compatible & compat::LAZY_REFCOUNTS != 0,
        refcount_bits: 1 << h.refcount_order,
        corrupt: h.incompatible & incompat::CORRUPT != 0,
        dirty: h.incompatible & incompat::DIRTY != 0,
        extended_l2: h.extended_l2(),
        snapshots,
        bitmaps,
    }))
}

/// qemu-img's human lines for a qcow2 image named `filename`.
fn qcow2_human(q: &Qcow2Info, filename: &str) -> String {
    let mut s = format!("cluster_size: {}\n", q.cluster_size);
    if let Some(b) = &q.backing {
        let full = full_backing_name(filename, b);
        if &full == b {
            s += &format!("backing file: {b}\n");
        } else {
            s += &format!("backing file: {b} (actual path: {full})\n");
        }
    }
    if let Some(f) = &q.backing_format {
        s += &format!("backing file format: {f}\n");
    }
    if !q.snapshots.is_empty() {
        s += &super::snapshot::format_list(&q.snapshots, super::snapshot::local_date);
    }
    s += "Format specific information:\n";
    s += &format!("    compat: {}\n", q.compat);
    s += &format!("    compression type: {}\n", q.compression);
    if q.compat == "0.10" {
        s += &format!("    refcount bits: {}\n", q.refcount_bits);
        return s;
    }
    s += &format!("    lazy refcounts: {}\n", q.lazy_refcounts);
    if !q.bitmaps.is_empty() {
        s += "    bitmaps:\n";
        for (i, b) in q.bitmaps.iter().enumerate() {
            s += &format!("        [{i}]:\n            flags:\n");
            for (j, f) in bitmap_flags(b.flags).iter().enumerate() {
                s += &format!("                [{j}]: {f}\n");
            }
            s += &format!("            name: {}\n            granularity: {}\n", b.name, b.granularity);
        }
    }
    s += &format!("    refcount bits: {}\n", q.refcount_bits);
    if let Some(d) = &q.data_file {
        s += &format!("    data file: {d}\n");
        s += &format!("    data file raw: {}\n", q.data_file_raw);
    }
    s += &format!("    corrupt: {}\n", q.corrupt);
    s += &format!("    extended l2: {}\n", q.extended_l2);
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn full_backing_names_as_qemu_combines_them() {
        assert_eq!(super::full_backing_name("top.qcow2", "base.qcow2"), "base.qcow2");
        assert_eq!(super::full_backing_name("./top.qcow2", "base.qcow2"), "./base.qcow2");
        assert_eq!(super::full_backing_name("j/sub/t.qcow2", "../b.qcow2"), "j/sub/../b.qcow2");
        assert_eq!(super::full_backing_name("j/t.qcow2", "/abs/b.qcow2"), "/abs/b.qcow2");
    }

}
