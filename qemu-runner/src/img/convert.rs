//! `img convert -O raw`: copies what an image shows into a new sparse raw file, like
//! `qemu-img convert -O raw`. Block status drives it as it drives qemu-img
//! ([`extents::next`]): zero and unallocated extents are never read and stay holes in the
//! output; data extents are read and their all-zero 4 KiB blocks left as holes too. `-p` draws
//! qemu-img's progress line over the bytes to copy, on a terminal only (issue 14 asks for that;
//! qemu-img draws it into pipes and files too, which [`run_to`] still does for comparisons).
//!
//! `-O qcow2` creates the output with `img create`'s option code (`-o cluster_size,
//! extended_l2, refcount_bits, lazy_refcounts, compression_type, preallocation=off`), `-B
//! BACKING [-F FMT]` gives it a backing file and copies only the source's top layer (qemu-img's
//! block status without `_above`), `-c` stores clusters compressed (deflate, or zstd with
//! `compression_type=zstd`); `-n` writes into an existing image (zeros then written, not
//! assumed), `-m N` runs N requests at once, `-W` lets writes complete out of order, `-S SIZE`
//! sets the zero-run size left out of data (0: none), `-r RATE` limits bytes per second. `-C`
//! (refused with `-c` and `-S` as qemu-img refuses it) copies data extents that lie in host
//! files into a raw output with `copy_file_range`; into a qcow2 it copies through buffers.
//! The copy itself is `strata_block::cmd::copy`'s loop (`convert_copy`). The output is opened
//! with qemu-img convert's default cache mode, `-t unsafe`: nothing is flushed to disk (half
//! the wall time of a 256 MiB copy was the final `fdatasync`); `-t writeback` or `-t none`
//! flush at the end.

use std::io::{IsTerminal, Write};
use std::path::Path;

use strata_block::driver::qcow2::header::Compression;

use super::args::{parse_size, Args};
use super::convert_copy::{self, Plan};
use super::create;
use super::image::{self, OpenOptions};
use super::output;
use super::ImgError;

/// Runs `img convert [-f FMT] [--image-opts] [-t CACHE] [-T SRC_CACHE] [-l snapshot.name=NAME]
/// [-p] [-q] [--cache-size SIZE] [--allow-backing-anywhere] -O raw SRC DST`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    run_on(argv, &mut std::io::stdout())
}

/// [`run_to`] on a stream that may be a terminal: `-p`'s line is drawn into `out` only if it
/// is one, so a pipe or a file gets none.
pub fn run_on<W: Write + IsTerminal>(argv: &[String], out: &mut W) -> Result<(), ImgError> {
    if out.is_terminal() {
        run_to(argv, out)
    } else {
        run_to(argv, &mut std::io::sink())
    }
}

/// [`run`], drawing `-p`'s progress line into `out`.
pub fn run_to(argv: &[String], out: &mut dyn Write) -> Result<(), ImgError> {
    // `-o` may be given several times (as for `img create`): collect every value first.
    let mut options = Vec::new();
    let mut rest = Vec::new();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "-o" {
            options.push(
                it.next()
                    .cloned()
                    .ok_or_else(|| ImgError::usage("-o needs a value".into()))?,
            );
        } else if let Some(v) = arg.strip_prefix("-o").filter(|_| !arg.starts_with("--")) {
            options.push(v.to_string());
        } else {
            rest.push(arg.clone());
        }
    }
    let args = Args::parse(
        &rest,
        &["-f", "-O", "-t", "-T", "-l", "-B", "-F", "-m", "-S", "-r"],
        &["--image-opts", "-U", "-p", "-q", "-c", "-n", "-W", "-C"],
    )?;
    let files = args.exactly(2, "SRC and DST")?;
    let out_fmt = args.value("-O").unwrap_or("raw");
    if !matches!(out_fmt, "raw" | "qcow2") {
        return Err(ImgError::usage(format!(
            "Unknown file format '{out_fmt}' (qcow2, raw)"
        )));
    }
    let (compressed, copy_range, skip_create) = (args.has("-c"), args.has("-C"), args.has("-n"));
    let checks = [
        (
            compressed && copy_range,
            "Cannot enable copy offloading when -c is used",
        ),
        (
            args.value("-S").is_some() && copy_range,
            "Cannot enable copy offloading when -S is used",
        ),
        (
            skip_create && !options.is_empty(),
            "-o has no effect when skipping image creation",
        ),
        (
            compressed && args.has("-W"),
            "Out of order write and compress are mutually exclusive",
        ),
    ];
    if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
        return Err(ImgError::usage((*msg).into()));
    }
    let workers = match args.value("-m") {
        None => 8,
        Some(v) => v.parse::<usize>().ok().filter(|m| (1..=16).contains(m)).ok_or_else(|| {
            ImgError::usage("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16".into())
        })?,
    };
    let sparse = match args.value("-S") {
        None => 4096,
        Some(v) => parse_size(v).ok().filter(|s| s % 512 == 0 && *s <= MAX_SPARSE).ok_or_else(|| {
            ImgError::usage(format!(
                "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to {MAX_SPARSE}. \
                 Select 0 to disable sparse detection (fully allocates output)."
            ))
        })?,
    };
    let rate = match args.value("-r") {
        None => 0,
        Some(v) => parse_size(v)
            .map_err(|_| ImgError::usage(format!("Invalid rate limit specified: {v}")))?,
    };
    let mut req = create::Request {
        format: out_fmt.into(),
        file: files[1].clone(),
        ..create::Request::default()
    };
    for text in &options {
        create::apply_options(&mut req, text)?;
    }
    req.backing = req
        .backing
        .take()
        .or_else(|| args.value("-B").map(str::to_string));
    req.backing_fmt = req
        .backing_fmt
        .take()
        .or_else(|| args.value("-F").map(str::to_string));
    if req.backing.is_some() && req.backing_fmt.is_none() {
        return Err(ImgError::failed(
            "Use of backing file requires explicit backing format".into(),
        ));
    }
    if out_fmt == "raw" {
        if compressed {
            return Err(ImgError::failed(
                "Compression not supported for this file format".into(),
            ));
        }
        if req.backing.is_some() {
            return Err(ImgError::failed(
                "Backing file not supported for file format 'raw'".into(),
            ));
        }
        if req.cluster_size.is_some()
            || req.refcount_bits.is_some()
            || req.extended_l2
            || req.lazy_refcounts
            || req.zstd
        {
            return Err(ImgError::usage(format!(
                "{}: raw images take only the size option",
                files[1]
            )));
        }
    }
    let src_opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        read_only: true,
        force_share: args.has("-U"),
        cache: image::cache_mode(args.value("-T"))?,
        extra: args.value("-l").map(snapshot_option).transpose()?,
        ..args.image_options()?
    };
    // qemu-img convert's output cache mode is `unsafe` unless `-t` says otherwise: the copy
    // is never flushed to disk (`-t writeback` does flush at the end).
    let out_cache = args.value("-t").unwrap_or("unsafe");
    let dst_opts = OpenOptions {
        format: Some(out_fmt.into()),
        cache: image::cache_mode(Some(out_cache))?,
        no_flush: out_cache == "unsafe",
        allow_backing_anywhere: args.has("--allow-backing-anywhere"),
        ..OpenOptions::default()
    };
    let has_backing = req.backing.is_some();
    // The source is open (and locked) before the output is touched, and the output is none of
    // the source's files.
    image::with_image(&files[0], &src_opts, |src| {
        let size = src.backend.size();
        if !skip_create {
            if out_fmt == "raw" {
                output::create_output(Path::new(&files[1]), size, &src.paths)?;
            } else {
                create::create_qcow2(&req, req.size.unwrap_or(size), &src.paths)?;
            }
        }
        let plan = Plan {
            workers,
            in_order: !args.has("-W"),
            sparse,
            compress: compressed.then_some(if req.zstd {
                Compression::Zstd
            } else {
                Compression::Zlib
            }),
            backing: has_backing,
            target_zeroed: !skip_create && !has_backing,
            offload: copy_range,
            rate,
        };
        let progress = (args.has("-p") && !args.has("-q")).then_some(out);
        image::with_image(&files[1], &dst_opts, |dst| {
            if dst.backend.size() < size {
                return Err(ImgError::failed(format!(
                    "{}: the target image is smaller than the source",
                    files[1]
                )));
            }
            let plan = Plan {
                compress: compression_of(dst, plan.compress),
                ..plan
            };
            convert_copy::copy(src, dst, &plan, progress)
        })
    })
}

/// Largest `-S` (qemu-img's `MAX_BUF_SECTORS` of 512 bytes).
const MAX_SPARSE: u64 = 2147483136;

/// `-c`'s codec as the target image says (`-n` into an existing image keeps its type).
fn compression_of(dst: &image::Image<'_, '_>, wanted: Option<Compression>) -> Option<Compression> {
    let q = dst
        .backend
        .graph()
        .state(dst.root())
        .ok()
        .flatten()
        .and_then(|s| s.qcow2());
    match (wanted, q) {
        (Some(_), Some(q)) => Some(q.header().compression),
        (w, _) => w,
    }
}

/// `-l snapshot.name=NAME`, `-l snapshot.id=ID` or `-l NAME` (qemu-img's forms) as options for
/// the top node.
fn snapshot_option(value: &str) -> Result<String, ImgError> {
    let (key, name) = match value.split_once('=') {
        Some(("snapshot.name", n)) => ("snapshot.name", n),
        Some(("snapshot.id", n)) => ("snapshot.id", n),
        Some((k, _)) => {
            return Err(ImgError::usage(format!(
                "-l {k}=...: expected snapshot.name= or snapshot.id="
            )))
        }
        None => ("snapshot.name", value),
    };
    if name.is_empty() {
        return Err(ImgError::usage("-l: empty snapshot name".into()));
    }
    Ok(format!("{key}={}", name.replace(',', ",,")))
}
