//! `img create`: a new, empty image file, like `qemu-img create`.
//!
//! `-f qcow2` writes a qcow2 v3 image through the block layer
//! (`strata_block::driver::qcow2::create`) on the file opened as a host-file leaf; `-f raw`
//! makes a sparse file. Options come from `-o key=value,...` (repeatable; `,,` is a comma in a
//! value), `-b`/`-F` and the optional SIZE (QEMU's suffixes). With a backing file and no SIZE
//! the backing image's virtual size is used; unless `-u`, the backing file must open (relative
//! names resolve from the new image's directory, as QEMU stores them). Bad options are usage
//! errors (exit 2; qemu-img exits 1), failures to write exit 1.

use std::path::{Path, PathBuf};

use strata_block::dev::file::{HostFile, HostFileOptions};
use strata_block::driver::qcow2::create::{create, Compression, CreateOptions};
use strata_block::Graph;

use super::args::{parse_size, Args};
use super::image::{self, block_on, OpenOptions};
use super::output;
use super::resolve;
use super::ImgError;

/// What the command line asks for.
#[derive(Debug, Default)]
pub(super) struct Request {
    pub(super) format: String,
    pub(super) file: String,
    pub(super) size: Option<u64>,
    pub(super) cluster_size: Option<u64>,
    pub(super) extended_l2: bool,
    pub(super) lazy_refcounts: bool,
    pub(super) refcount_bits: Option<u64>,
    pub(super) backing: Option<String>,
    pub(super) backing_fmt: Option<String>,
    /// `compression_type=zstd` (else zlib).
    pub(super) zstd: bool,
}

/// Runs `img create [-f FMT] [-b BACKING] [-F FMT] [-o OPTIONS]... [-u] [-q] FILE [SIZE]`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    // `-o` may be given several times; collect every value before the generic parser.
    let mut options = Vec::new();
    let mut rest = Vec::new();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "-o" {
            options.push(it.next().cloned().ok_or_else(|| ImgError::usage("-o needs a value".into()))?);
        } else if let Some(v) = arg.strip_prefix("-o").filter(|_| !arg.starts_with("--")) {
            options.push(v.to_string());
        } else {
            rest.push(arg.clone());
        }
    }
    let args = Args::parse(&rest, &["-f", "-b", "-F"], &["-q", "-u"])?;
    let (file, size) = match args.positional.as_slice() {
        [file] => (file.clone(), None),
        [file, size] => (file.clone(), Some(size.clone())),
        _ => return Err(ImgError::usage("expected FILE [SIZE]".into())),
    };
    let mut req = Request { format: args.value("-f").unwrap_or("raw").to_string(), file, ..Request::default() };
    for text in &options {
        apply_options(&mut req, text)?;
    }
    if let Some(b) = args.value("-b") {
        req.backing = Some(b.to_string());
    }
    if let Some(f) = args.value("-F") {
        req.backing_fmt = Some(f.to_string());
    }
    if let Some(text) = size {
        req.size = Some(parse_size(&text).map_err(|_| {
            ImgError::usage(
                "Invalid image size specified. You may use k, M, G, T, P or E suffixes for \
                 kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."
                    .into(),
            )
        })?);
    }
    let file = req.file.clone();
    let usage = |msg: &str| ImgError::usage(format!("{file}: {msg}"));
    match req.format.as_str() {
        "qcow2" => {}
        "raw" => {
            if req.backing.is_some() || req.backing_fmt.is_some() || req.cluster_size.is_some() || req.refcount_bits.is_some() || req.extended_l2 || req.lazy_refcounts {
                return Err(usage("raw images take only the size option"));
            }
        }
        other => return Err(usage(&format!("Unknown file format '{other}' (qcow2, raw)"))),
    }
    match (&req.backing, &req.backing_fmt) {
        (Some(_), None) => return Err(usage("Backing file specified without backing format")),
        (None, Some(_)) => return Err(usage("Backing format cannot be used without backing file")),
        _ => {}
    }
    // The files the new image reads: its backing image (with -u it is not opened, and only a
    // name is written, as qemu-img does).
    let mut inputs = Vec::new();
    if let (Some(backing), Some(fmt)) = (&req.backing, &req.backing_fmt) {
        if !args.has("-u") {
            let (backing_size, paths) = open_backing(&req.file, backing, fmt, args.has("--allow-backing-anywhere"))?;
            req.size.get_or_insert(backing_size);
            inputs = paths;
        }
    }
    let size = req.size.ok_or_else(|| usage("Image creation needs a size parameter"))?;
    if !args.has("-q") {
        println!("{}", formatting_line(&req, size));
    }
    match req.format.as_str() {
        "raw" => new_file(&req.file, size, &inputs),
        _ => create_qcow2(&req, size, &inputs),
    }
}

/// Makes `file` an empty sparse file of `size` bytes; refused, and left as it was, if it is one
/// of `inputs` (the backing file) or another process holds it.
fn new_file(file: &str, size: u64, inputs: &[PathBuf]) -> Result<(), ImgError> {
    output::create_output(Path::new(file), size, inputs).map_err(|e| ImgError::failed(format!("{file}: {e}")))
}

/// Applies one `-o` value.
pub(super) fn apply_options(req: &mut Request, text: &str) -> Result<(), ImgError> {
    let file = req.file.clone();
    let usage = |msg: String| ImgError::usage(format!("{file}: {msg}"));
    for item in split_options(text) {
        let (key, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
        let on_off = |v: &str| match v {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err(usage(format!("Parameter '{key}' expects 'on' or 'off'"))),
        };
        let size = |v: &str| parse_size(v).map_err(|_| usage(format!("Parameter '{key}' expects a size")));
        match key {
            "size" => req.size = Some(size(value)?),
            "cluster_size" => req.cluster_size = Some(size(value)?),
            "extended_l2" => req.extended_l2 = on_off(value)?,
            "lazy_refcounts" => req.lazy_refcounts = on_off(value)?,
            "refcount_bits" => req.refcount_bits = Some(value.parse().map_err(|_| usage(format!("Parameter '{key}' expects a number")))?),
            "backing_file" => req.backing = Some(value.to_string()),
            "backing_fmt" => req.backing_fmt = Some(value.to_string()),
            "compat" if matches!(value, "1.1" | "v3") => {}
            "compat" => return Err(usage(format!("compat={value} is not supported (only 1.1)"))),
            "compression_type" if value == "zlib" => req.zstd = false,
            "compression_type" if value == "zstd" => req.zstd = true,
            "compression_type" => return Err(usage(format!("Invalid parameter value: compression_type={value} (zlib or zstd)"))),
            "preallocation" if value == "off" => {}
            "preallocation" => return Err(usage(format!("preallocation={value} is not supported (only off)"))),
            _ => return Err(usage(format!("Invalid parameter '{key}'"))),
        }
    }
    Ok(())
}

/// Splits `a=1,b=x,,y` into `a=1` and `b=x,y` (QEMU's `,,` escape).
pub(super) fn split_options(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                items.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    items.push(cur);
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

/// The backing image's virtual size and the files it opened (for [`output::create_output`]);
/// `backing` is relative to the new image's directory, and must lie inside that directory's tree
/// unless `anywhere` (the rule every later open of the new image applies: an image it refuses
/// is not made).
fn open_backing(file: &str, backing: &str, fmt: &str, anywhere: bool) -> Result<(u64, Vec<PathBuf>), ImgError> {
    let dir = Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let path: PathBuf = if Path::new(backing).is_absolute() { PathBuf::from(backing) } else { dir.join(backing) };
    if !anywhere {
        let tree = dir.canonicalize().map_err(|e| ImgError::failed(format!("{file}: {}: {e}", dir.display())))?;
        let found = path.canonicalize().map_err(|e| ImgError::failed(format!("{file}: Could not open backing file '{}': {e}", path.display())))?;
        resolve::check_in_tree(&found, &tree, false).map_err(|e| ImgError::failed(format!("{file}: the backing file {e}")))?;
    }
    let opts = OpenOptions {
        format: Some(fmt.to_string()),
        read_only: true,
        force_share: true,
        no_backing: true,
        ..OpenOptions::default()
    };
    let spec = path.to_string_lossy().into_owned();
    image::with_image(&spec, &opts, |img| Ok((img.backend.size(), img.paths.clone())))
        .map_err(|e| ImgError::failed(format!("{file}: {e}\nCould not open backing image.")))
}

/// qemu-img's "Formatting ..." line.
fn formatting_line(req: &Request, size: u64) -> String {
    if req.format == "raw" {
        return format!("Formatting '{}', fmt=raw size={size}", req.file);
    }
    let on = |b: bool| if b { "on" } else { "off" };
    let mut line = format!(
        "Formatting '{}', fmt=qcow2 cluster_size={} extended_l2={} compression_type={} size={size}",
        req.file,
        req.cluster_size.unwrap_or(65536),
        on(req.extended_l2),
        if req.zstd { "zstd" } else { "zlib" }
    );
    if let Some(b) = &req.backing {
        line += &format!(" backing_file={b}");
    }
    if let Some(f) = &req.backing_fmt {
        line += &format!(" backing_fmt={f}");
    }
    line += &format!(" lazy_refcounts={} refcount_bits={}", on(req.lazy_refcounts), req.refcount_bits.unwrap_or(16));
    line
}

/// Opens the new (empty, see [`new_file`]) `file` read-write as a host-file leaf.
fn open_new_file(file: &str) -> Result<HostFile, ImgError> {
    HostFile::open(Path::new(file), &HostFileOptions::default()).map_err(|e| ImgError::failed(format!("{file}: {e}")))
}

/// A qcow2 image through the block layer.
pub(super) fn create_qcow2(req: &Request, size: u64, inputs: &[PathBuf]) -> Result<(), ImgError> {
    let file = req.file.as_str();
    let usage = |msg: &str| ImgError::usage(format!("{file}: {msg}"));
    let cluster_size = req.cluster_size.unwrap_or(65536);
    if !cluster_size.is_power_of_two() || !(512..=2 << 20).contains(&cluster_size) {
        return Err(usage("Cluster size must be a power of two between 512 and 2048k"));
    }
    let refcount_bits = req.refcount_bits.unwrap_or(16);
    if !refcount_bits.is_power_of_two() || refcount_bits > 64 {
        return Err(usage("Refcount width must be a power of two and may not exceed 64 bits"));
    }
    let opts = CreateOptions {
        size,
        cluster_bits: cluster_size.trailing_zeros(),
        extended_l2: req.extended_l2,
        lazy_refcounts: req.lazy_refcounts,
        refcount_order: refcount_bits.trailing_zeros(),
        backing: req.backing.as_deref(),
        backing_fmt: req.backing_fmt.as_deref(),
        compression: if req.zstd { Compression::Zstd } else { Compression::Zlib },
    };
    // Check the options before the file is created or truncated.
    strata_block::driver::qcow2::create::Layout::new(&opts).map_err(|e| describe(file, e))?;
    new_file(file, 0, inputs)?;
    let leaf = open_new_file(file)?;
    let mut bounce = vec![0u8; 4 * 65536];
    let mut graph: Graph<'_, 4, 64> = Graph::new(&mut bounce, 65536);
    let node = graph.add_leaf("file", &leaf).map_err(|e| ImgError::failed(format!("{file}: {e}")))?;
    block_on(create(&graph.io(), node, &opts)).map_err(|e| describe(file, e))
}

/// A block-layer error as qemu-img words it: bad options are usage errors.
fn describe(file: &str, e: strata_block::Error) -> ImgError {
    match e {
        strata_block::Error::BadOption { why, .. } => {
            let mut chars = why.chars();
            let first: String = chars.next().map(|c| c.to_uppercase().collect()).unwrap_or_default();
            ImgError::usage(format!("{file}: {first}{}", chars.as_str()))
        }
        other => ImgError::failed(format!("{file}: Could not create image: {other}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn options_split_and_apply() {
        assert_eq!(split_options("a=1,b=x,,y,,"), vec!["a=1", "b=x,y,"]);
        let mut r = Request::default();
        apply_options(&mut r, "cluster_size=4k,extended_l2=on,refcount_bits=1,backing_file=b,,c").unwrap();
        assert_eq!((r.cluster_size, r.extended_l2, r.refcount_bits, r.backing.as_deref()), (Some(4096), true, Some(1), Some("b,c")));
        assert!(apply_options(&mut r, "lazy_refcounts=maybe").is_err());
        assert!(apply_options(&mut r, "foo=bar").is_err());
    }
}
