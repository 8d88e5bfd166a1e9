//! `img amend`: changes a qcow2 image's options in place, as `qemu-img amend -o OPTIONS`.
//!
//! Options are checked as QEMU's `qcow2_amend_options` checks them, with its messages: the
//! creation-only ones (`cluster_size`, `extended_l2`, `compression_type`, encryption,
//! `preallocation`) are refused, a refcount width must be a power of two up to 64, and
//! compat=0.10 allows neither lazy refcounts nor another width than 16. Done in QEMU's order:
//! the upgrade to compat=1.1 and the refcount width change (the block layer's
//! [`version::upgrade`] and [`refcount_width::change_refcount_width`], on the image file
//! opened raw), then `lazy_refcounts=on|off` ([`Qcow2::set_lazy_refcounts`]) and `size` (a
//! resize) on the qcow2 node, then the downgrade to compat=0.10 ([`version::downgrade`], on
//! the file again), each refusal with QEMU's message. Changing the backing or data file is
//! refused as not supported yet.

use strata_block::driver::qcow2::amend::refcount_width::{self, WidthChange};
use strata_block::driver::qcow2::amend::version;
use strata_block::driver::qcow2::Qcow2;
use strata_block::graph::Role;
use strata_block::io::Io;
use strata_block::NodeId;

use super::args::{parse_size, Args};
use super::create::split_options;
use super::image::{self, block_on, OpenOptions};
use super::ImgError;

/// What `-o` asks for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Amend {
    version: Option<u32>,
    refcount_bits: Option<u64>,
    lazy: Option<bool>,
    size: Option<u64>,
    /// `backing_file`, `backing_fmt`, `data_file`, `data_file_raw`: not supported yet.
    unsupported: Option<String>,
}

/// Memory for the structural changes (the check's default budget).
const BUDGET: usize = 16 << 20;

/// Runs `img amend [-f FMT] [--image-opts] [-p] [-q] [--force] -o OPTIONS FILE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    let args = Args::parse(argv, &["-f", "-o", "-t"], &["--image-opts", "-p", "-q", "--force"])?;
    let options: Vec<&str> = args.values("-o").collect();
    if options.is_empty() {
        return Err(ImgError::failed("Must specify options (-o)\nTry 'qemu-img amend --help' for more info".into()));
    }
    let file = &args.exactly(1, "one image")?[0];
    let amend = parse(&options)?;
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        ..args.image_options()?
    };
    // What the image is, checked against what is asked; read-only, so a refused amend leaves
    // the image as it was (a read-write open clears autoclear bits such as bitmaps').
    let ro = OpenOptions { read_only: true, ..opts.clone() };
    let steps = image::with_image(file, &ro, |img| {
        let graph = img.backend.graph();
        let Some(q) = graph.state(img.root()).ok().flatten().and_then(|s| s.qcow2()) else {
            return Err(ImgError::failed(format!("Format driver '{}' does not support option amendment", img.format())));
        };
        plan(q, &amend)
    })?;
    let structural = steps.upgrade || steps.width.is_some() || steps.downgrade;
    if structural && opts.image_opts {
        return Err(ImgError::failed("amend: changing compat or refcount_bits is not supported with --image-opts".into()));
    }
    // QEMU's order: upgrade, refcount width, lazy refcounts and size, downgrade last.
    let mut memory = if structural { vec![0u8; BUDGET] } else { Vec::new() };
    if steps.upgrade || steps.width.is_some() {
        on_file(file, &opts, |io, node| {
            if steps.upgrade {
                block_on(version::upgrade(io, node, &mut memory)).map_err(failed)?;
            }
            if let Some(order) = steps.width {
                match block_on(refcount_width::change_refcount_width(io, node, order, &mut memory)).map_err(failed)? {
                    WidthChange::Changed => {}
                    WidthChange::TooNarrow { offset, refcount } => {
                        return Err(ImgError::failed(format!(
                            "Cannot decrease refcount entry width to {} bits: Cluster at offset {offset:#x} has a refcount of {refcount}",
                            1u32 << order
                        )))
                    }
                }
            }
            Ok(())
        })?;
    }
    if amend.lazy.is_some() || amend.size.is_some() {
        image::with_image(file, &opts, |img| {
            let graph = img.backend.graph();
            let Some(q) = graph.state(img.root()).ok().flatten().and_then(|s| s.qcow2()) else {
                return Err(ImgError::failed("amend: the image is no longer qcow2".into()));
            };
            node_changes(img, q, &amend)
        })?;
    }
    if steps.downgrade {
        on_file(file, &opts, |io, node| match block_on(version::downgrade(io, node, &mut memory)).map_err(failed)? {
            Ok(()) => Ok(()),
            Err(refusal) => Err(ImgError::failed(refusal.to_string())),
        })?;
    }
    Ok(())
}

/// The structural changes to make, in QEMU's order.
#[derive(Clone, Copy, Debug, Default)]
struct Steps {
    upgrade: bool,
    /// The new refcount order.
    width: Option<u32>,
    downgrade: bool,
}

fn failed(e: strata_block::Error) -> ImgError {
    ImgError::failed(format!("Error while amending options: {e}"))
}

/// Checks `amend` against image `q` as QEMU's `qcow2_amend_options` does.
fn plan(q: &Qcow2, amend: &Amend) -> Result<Steps, ImgError> {
    let h = q.header();
    let version = amend.version.unwrap_or(h.version);
    let bits = 1u64 << h.refcount_order;
    let new_bits = amend.refcount_bits.unwrap_or(bits);
    if new_bits != bits && version < 3 && new_bits != 16 {
        return Err(ImgError::failed("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)".into()));
    }
    if version < 3 && amend.lazy == Some(true) {
        return Err(ImgError::failed("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)".into()));
    }
    if let Some(what) = &amend.unsupported {
        return Err(ImgError::failed(format!("amend: changing {what} is not supported yet")));
    }
    Ok(Steps {
        upgrade: version > h.version,
        width: (new_bits != bits).then(|| new_bits.trailing_zeros()),
        downgrade: version < h.version,
    })
}

/// Lazy refcounts and size, through the open qcow2 node.
fn node_changes(img: &image::Image<'_, '_>, q: &Qcow2, amend: &Amend) -> Result<(), ImgError> {
    let graph = img.backend.graph();
    if let Some(on) = amend.lazy {
        let _drained = block_on(img.backend.drain());
        block_on(q.set_lazy_refcounts(&graph.io(), img.root(), on)).map_err(failed)?;
    }
    if let Some(size) = amend.size {
        if size != img.backend.size() {
            block_on(img.backend.resize(size)).map_err(failed)?;
        }
    }
    Ok(())
}

/// Runs `f` on the image file's node, opened raw with no qcow2 node over it (as `img check
/// -r` does), so the structural change has no driver state to go stale.
fn on_file(file: &str, opts: &OpenOptions, f: impl FnOnce(&Io<'_, '_>, NodeId) -> Result<(), ImgError>) -> Result<(), ImgError> {
    let raw = OpenOptions { format: Some("raw".into()), no_backing: true, read_only: false, ..opts.clone() };
    image::with_image(file, &raw, |img| {
        let graph = img.backend.graph();
        let node = graph.node(img.root()).ok().and_then(|n| n.child(Role::File)).ok_or_else(|| ImgError::failed("amend: no image file node".into()))?;
        let _drained = block_on(img.backend.drain());
        f(&graph.io(), node)
    })
}

/// Parses the `-o` values (QEMU's `,,` escape; later values win).
fn parse(options: &[&str]) -> Result<Amend, ImgError> {
    let mut a = Amend::default();
    let bad = |m: String| ImgError::failed(m);
    for item in options.iter().flat_map(|o| split_options(o)) {
        let (key, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
        match key {
            "compat" => {
                a.version = Some(match value {
                    "0.10" | "v2" => 2,
                    "1.1" | "v3" => 3,
                    _ => return Err(bad(format!("Invalid compatibility level: '{value}'"))),
                })
            }
            "lazy_refcounts" => {
                a.lazy = Some(match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(bad(format!("Parameter '{key}' expects 'on' or 'off'"))),
                })
            }
            "refcount_bits" => {
                let n: u64 = value.parse().map_err(|_| bad(format!("Parameter '{key}' expects a non-negative number below 2^64")))?;
                if !n.is_power_of_two() || n > 64 {
                    return Err(bad("Refcount width must be a power of two and may not exceed 64 bits".into()));
                }
                a.refcount_bits = Some(n);
            }
            "size" => a.size = Some(parse_size(value).map_err(|_| bad(format!("Parameter '{key}' expects a size")))?),
            "backing_file" | "backing_fmt" | "data_file" | "data_file_raw" => a.unsupported = Some(key.to_string()),
            "cluster_size" | "extended_l2" | "compression_type" | "encryption" | "preallocation" => {
                return Err(bad(format!("Invalid parameter '{key}'\nThis option is only supported for image creation")))
            }
            k if k.starts_with("encrypt.") => return Err(bad(format!("Invalid parameter '{key}'\nThis option is only supported for image creation"))),
            _ => return Err(bad(format!("Invalid parameter '{key}'"))),
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn options_parse_and_refuse_as_qemu() {
        let a = parse(&["compat=1.1,lazy_refcounts=on", "refcount_bits=16,size=1M"]).unwrap();
        assert_eq!((a.version, a.lazy, a.refcount_bits, a.size), (Some(3), Some(true), Some(16), Some(1 << 20)));
        let e = parse(&["cluster_size=4k"]).unwrap_err().to_string();
        assert_eq!(e, "Invalid parameter 'cluster_size'\nThis option is only supported for image creation");
        assert_eq!(parse(&["foo=1"]).unwrap_err().to_string(), "Invalid parameter 'foo'");
        assert!(parse(&["refcount_bits=3"]).is_err());
    }
}
