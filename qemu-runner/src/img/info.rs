//! `img info`: what an image is (format, virtual size, host disk use), like `qemu-img info`.

use std::os::unix::fs::MetadataExt;

use strata_block::driver::NameRef;
use strata_block::driver::qcow2::header::{autoclear, compat, incompat};
use strata_block::driver::qcow2::snapshots::SnapshotInfo;
use strata_block::driver::qcow2::Qcow2;
use strata_block::graph::Role;

use super::args::Args;
use super::image::{self, block_on, Image, OpenOptions};
use super::ImgError;

/// Runs `img info [-f FMT] [--image-opts] [-U] [--output=human|json] FILE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    let args = Args::parse(argv, &["-f", "--output"], &["-U", "--force-share", "--image-opts"])?;
    let spec = &args.exactly(1, "one image")?[0];
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        read_only: true,
        force_share: args.has("-U") || args.has("--force-share"),
        // As qemu-img info: the image alone, its backing file is only named.
        no_backing: true,
        ..args.image_options()?
    };
    let (size, format, q) = image::with_image(spec, &opts, |img| Ok((img.backend.size(), img.format(), qcow2_info(img)?)))?;
    // Host disk use of the named file (not known for an options string).
    let disk = (!opts.image_opts)
        .then(|| std::fs::metadata(spec).map(|m| m.blocks() * 512).ok())
        .flatten();
    match args.value("--output").unwrap_or("human") {
        "json" => {
            let mut v = serde_json::json!({
                "virtual-size": size,
                "filename": spec,
                "format": format,
                "actual-size": disk,
                "dirty-flag": q.as_ref().is_some_and(|q| q.dirty),
            });
            if let Some(q) = &q {
                v["cluster-size"] = q.cluster_size.into();
                if let Some(b) = &q.backing {
                    v["backing-filename"] = b.clone().into();
                }
                if let Some(f) = &q.backing_format {
                    v["backing-filename-format"] = f.clone().into();
                }
                if !q.snapshots.is_empty() {
                    v["snapshots"] = q
                        .snapshots
                        .iter()
                        .map(|s| {
                            serde_json::json!({
                                "id": s.id.as_str(), "name": s.name.as_str(), "vm-state-size": s.vm_state_size,
                                "date-sec": s.date_sec, "date-nsec": s.date_nsec,
                                "vm-clock-sec": s.vm_clock_nsec / 1_000_000_000,
                                "vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000,
                                "icount": s.icount,
                            })
                        })
                        .collect();
                }
                let mut data = serde_json::json!({
                    "compat": q.compat, "compression-type": q.compression, "lazy-refcounts": q.lazy_refcounts,
                    "refcount-bits": q.refcount_bits, "corrupt": q.corrupt, "extended-l2": q.extended_l2,
                });
                if let Some(d) = &q.data_file {
                    data["data-file"] = d.clone().into();
                    data["data-file-raw"] = q.data_file_raw.into();
                }
                v["format-specific"] = serde_json::json!({ "type": "qcow2", "data": data });
            }
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        "human" => {
            println!("image: {spec}");
            println!("file format: {format}");
            println!("virtual size: {} ({size} bytes)", human_size(size));
            if let Some(disk) = disk {
                println!("disk size: {}", human_size(disk));
            }
            if let Some(q) = &q {
                print_qcow2(q);
            }
        }
        other => return Err(ImgError::usage(format!("--output={other}: expected human or json"))),
    }
    Ok(())
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
}

/// The qcow2 details of the image's root node, if it is one.
fn qcow2_info(img: &Image<'_, '_>) -> Result<Option<Qcow2Info>, ImgError> {
    let graph = img.backend.graph();
    let root = img.root();
    let node = graph.node(root).map_err(|e| ImgError::failed(e.to_string()))?;
    let Some(state) = graph.state(root).map_err(|e| ImgError::failed(e.to_string()))? else { return Ok(None) };
    let Some(q) = state.qcow2() else {
        return Ok(None);
    };
    let fail = |e: strata_block::Error| ImgError::failed(format!("Could not read the image: {e}"));
    let h = q.header();
    let links = state.links();
    let read = |r: Option<NameRef>| -> Result<Option<String>, ImgError> {
        let Some(r) = r else { return Ok(None) };
        let mut buf = vec![0u8; usize::from(r.len)];
        block_on(Qcow2::read_file_bytes(&graph.io(), root, r.offset, &mut buf)).map_err(fail)?;
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    };
    let mut snapshots = Vec::new();
    let file = node.child(Role::File).ok_or_else(|| ImgError::failed("qcow2 node without a file".into()))?;
    let mut walk = q.snapshots();
    while let Some(s) = block_on(walk.next(&graph.io(), file)).map_err(fail)? {
        snapshots.push(s);
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
    }))
}

/// qemu-img's human lines for a qcow2 image.
fn print_qcow2(q: &Qcow2Info) {
    println!("cluster_size: {}", q.cluster_size);
    if let Some(b) = &q.backing {
        println!("backing file: {b}");
    }
    if let Some(f) = &q.backing_format {
        println!("backing file format: {f}");
    }
    if !q.snapshots.is_empty() {
        println!("Snapshot list:");
        println!("{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
        for s in &q.snapshots {
            let clock = s.vm_clock_nsec / 1_000_000;
            let clock = format!("{:02}:{:02}:{:02}.{:03}", clock / 3_600_000, clock / 60_000 % 60, clock / 1000 % 60, clock % 1000);
            let date = s.date_sec;
            println!(
                "{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}",
                s.id.as_str(),
                s.name.as_str(),
                human_size(s.vm_state_size),
                format!("@{date}"),
                clock,
                s.icount.map_or(String::new(), |c| c.to_string())
            );
        }
    }
    println!("Format specific information:");
    println!("    compat: {}", q.compat);
    println!("    compression type: {}", q.compression);
    println!("    lazy refcounts: {}", q.lazy_refcounts);
    println!("    refcount bits: {}", q.refcount_bits);
    if let Some(d) = &q.data_file {
        println!("    data file: {d}");
        println!("    data file raw: {}", q.data_file_raw);
    }
    println!("    corrupt: {}", q.corrupt);
    println!("    extended l2: {}", q.extended_l2);
}

/// QEMU's human sizes (`size_to_str`: three significant digits): `64 MiB`, `1.5 GiB`,
/// `3.01 MiB`, `512 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        let decimals = if value >= 100.0 {
            0
        } else if value >= 10.0 {
            1
        } else {
            2
        };
        let text = format!("{value:.decimals$}");
        let trimmed = text.trim_end_matches('0').trim_end_matches('.');
        format!("{trimmed} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human_size(512), "512 B");
        assert_eq!(super::human_size(64 << 20), "64 MiB");
        assert_eq!(super::human_size(3 << 29), "1.5 GiB");
        assert_eq!(super::human_size(3080 * 1024), "3.01 MiB");
    }
}
