//! `img amend`: changes a qcow2 image's options in place, as `qemu-img amend -o OPTIONS`.
//!
//! Options are checked as QEMU's `qcow2_amend_options` checks them, with its messages: the
//! creation-only ones (`cluster_size`, `extended_l2`, `compression_type`, encryption,
//! `preallocation`) are refused, a refcount width must be a power of two up to 64, and
//! compat=0.10 allows neither lazy refcounts nor another width than 16. What is done so far:
//! `lazy_refcounts=on|off` (the block layer's [`Qcow2::set_lazy_refcounts`]), `size`
//! (a resize), and `compat`/`refcount_bits` equal to what the image has. Changing the compat
//! level or the refcount width, and the backing or data file, is refused as not supported yet.

use strata_block::driver::qcow2::Qcow2;

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
    image::with_image(file, &opts, |img| {
        let graph = img.backend.graph();
        let root = img.root();
        let Some(q) = graph.state(root).ok().flatten().and_then(|s| s.qcow2()) else {
            return Err(ImgError::failed(format!("Format driver '{}' does not support option amendment", img.format())));
        };
        apply(img, q, &amend)
    })
}

/// Checks `amend` against image `q` as QEMU does, then applies it.
fn apply(img: &image::Image<'_, '_>, q: &Qcow2, amend: &Amend) -> Result<(), ImgError> {
    let h = q.header();
    let version = amend.version.unwrap_or(h.version);
    let bits = amend.refcount_bits.unwrap_or(1 << h.refcount_order);
    if version < 3 && bits != 16 {
        return Err(ImgError::failed("Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)".into()));
    }
    if version < 3 && amend.lazy == Some(true) {
        return Err(ImgError::failed("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)".into()));
    }
    if version != h.version {
        return Err(ImgError::failed(format!("amend: changing compat to {} is not supported yet", if version < 3 { "0.10" } else { "1.1" })));
    }
    if bits != 1 << h.refcount_order {
        return Err(ImgError::failed("amend: changing refcount_bits is not supported yet".into()));
    }
    if let Some(what) = &amend.unsupported {
        return Err(ImgError::failed(format!("amend: changing {what} is not supported yet")));
    }
    let graph = img.backend.graph();
    let fail = |e: strata_block::Error| ImgError::failed(format!("Error while amending options: {e}"));
    if let Some(on) = amend.lazy {
        let _drained = block_on(img.backend.drain());
        block_on(q.set_lazy_refcounts(&graph.io(), img.root(), on)).map_err(fail)?;
    }
    if let Some(size) = amend.size {
        if size != img.backend.size() {
            block_on(img.backend.resize(size)).map_err(fail)?;
        }
    }
    Ok(())
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
