//! `img commit`: copies what an image holds above its base into the base, like `qemu-img
//! commit` (QEMU's active commit job: `commit_active_start`, then `bdrv_make_empty`).
//!
//! The base is the immediate backing file, or with `-b` the image of that name further down
//! the chain. Everything allocated above the base — data and zeros of the top and of the
//! images between — goes into the base through block's copy loop
//! ([`strata_block::cmd::copy`], [`Standard`] policy with the base's depth, in units of the
//! job's granularity as QEMU's mirror copies them), the base growing
//! first if it is smaller (as the job truncates it). Then, unless `-d` (which `-b` implies, as
//! in qemu-img), the top is emptied: every cluster unallocated
//! ([`strata_block::driver::qcow2::Qcow2::make_empty`]), so it reads through to the base again.
//! No header changes: qemu-img 10 leaves every image's backing file name as it was, also with
//! `-b` (the images between still lie over the base, whose data now includes theirs).
//!
//! Two opens: the top with its chain read-only and shared (the source), the base read-write
//! on its own (the target). The source never reads the base's data (those ranges are left to
//! the base), so the target's writes cannot be read back stale.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::future::join_all;
use strata_block::cmd::copy::{Action, Copy, CopyConfig, CopyError, CopyOp, Standard};
use strata_block::driver::qcow2::Qcow2;
use strata_block::graph::Role;

use super::args::{parse_size, Args};
use super::copy_hooks::HostHooks;
use super::extents;
use super::holes::HostFiles;
use super::image::{self, block_on, AlignedBuf, Image, OpenOptions};
use super::progress::Progress;
use super::ImgError;

/// Bytes per copy request (the mirror job's default buffer is 16 MiB in 64 KiB granules; 2 MiB
/// keeps the buffers small).
const CHUNK: u64 = 2 << 20;

/// One image of the chain below the top: its host file, driver, and the name its referrer wrote.
struct Member {
    path: PathBuf,
    format: &'static str,
    written: String,
}

/// The images below the top of `img`, nearest first.
fn chain(img: &Image<'_, '_>) -> Vec<Member> {
    let graph = img.backend.graph();
    let files = HostFiles::new(img);
    let mut out = Vec::new();
    let mut node = graph.node(img.root()).ok().and_then(|n| n.child(Role::Backing));
    let mut referrer = img.root();
    while let Some(n) = node {
        let Ok(here) = graph.node(n) else { break };
        let mut leaf = n;
        while let Some(f) = graph.node(leaf).ok().and_then(|x| x.child(Role::File)) {
            leaf = f;
        }
        let path = graph.node(leaf).ok().and_then(|x| x.device()).and_then(|d| files.path(d)).unwrap_or_default();
        let written = graph
            .state(referrer)
            .ok()
            .flatten()
            .and_then(|s| s.links().backing)
            .and_then(|r| {
                let mut buf = vec![0u8; usize::from(r.len)];
                block_on(Qcow2::read_file_bytes(&graph.io(), referrer, r.offset, &mut buf)).ok()?;
                Some(String::from_utf8_lossy(&buf).into_owned())
            })
            .unwrap_or_default();
        out.push(Member { path, format: here.driver, written });
        referrer = n;
        node = here.child(Role::Backing);
    }
    out
}

/// Whether `-b NAME` names `m` (QEMU's `bdrv_find_backing_image`: the name as the chain writes
/// it, or the same file by path, relative to the top's directory or the working directory).
fn names(m: &Member, name: &str, top: &Path) -> bool {
    if m.written == name {
        return true;
    }
    let dir = top.parent().unwrap_or(Path::new("."));
    [dir.join(name), PathBuf::from(name)].iter().any(|p| p.canonicalize().is_ok_and(|c| c == m.path))
}

/// Runs `img commit [-f FMT] [--image-opts] [-t CACHE] [-b BASE] [-d] [-p] [-q] [-r RATE] FILE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    run_to(argv, &mut std::io::stdout())
}

/// [`run`], printing to `out`.
pub fn run_to(argv: &[String], out: &mut dyn Write) -> Result<(), ImgError> {
    let args = Args::parse(argv, &["-f", "-t", "-b", "-r"], &["--image-opts", "-d", "-p", "-q"])?;
    let [file] = args.exactly(1, "FILE")? else { return Err(ImgError::usage("expected one FILE".into())) };
    let base_name = args.value("-b");
    let drop = args.has("-d") || base_name.is_some();
    let quiet = args.has("-q");
    let rate = match args.value("-r") {
        Some(r) => parse_size(r).map_err(|_| ImgError::failed("Invalid rate limit specified".into()))?,
        None => 0,
    };
    let top_opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        read_only: true,
        force_share: true,
        ..args.image_options()?
    };
    // Find the base (first open: the chain, read-only).
    let (base, depth) = image::with_image(file, &top_opts, |img| {
        let members = chain(img);
        let found = match base_name {
            Some(name) => members.iter().position(|m| names(m, name, Path::new(file))).ok_or_else(|| ImgError::failed(format!("Did not find '{name}' in the backing chain of '{file}'")))?,
            None if members.is_empty() => return Err(ImgError::failed("Image does not have a backing file".into())),
            None => 0,
        };
        let m = &members[found];
        Ok(((m.path.clone(), m.format), found + 1))
    })?;
    let base_opts = OpenOptions {
        format: Some(base.1.to_string()),
        // The base's own backing chain is not read: commit writes it, never reads it.
        no_backing: true,
        allow_backing_anywhere: true,
        ..args.image_options()?
    };
    let base_spec = base.0.to_string_lossy().into_owned();
    let show_progress = args.has("-p") && !quiet;
    image::with_image(&base_spec, &base_opts, |dst| {
        image::with_image(file, &top_opts, |src| {
            let size = src.backend.size();
            if dst.backend.size() < size {
                block_on(dst.backend.resize(size)).map_err(|e| ImgError::failed(format!("Could not resize the base image '{base_spec}': {e}")))?;
            }
            // The job's granularity (QEMU's bdrv_get_default_bitmap_granularity: the base's
            // cluster size within 4 KiB..64 KiB): a unit with anything to commit is copied
            // whole, from what the top reads there.
            let cs = dst.backend.graph().state(dst.root()).ok().flatten().and_then(|s| s.qcow2()).map_or(65536, |q| q.cluster_size());
            let unit = cs.clamp(4096, 65536);
            let cfg = CopyConfig {
                chunk: CHUNK,
                unit,
                align: extents::alignment(src).max(unit),
                sparse: 0,
                target_zeroed: false,
                in_order: false,
                ..CopyConfig::new(size)
            };
            let policy = Standard { base_depth: Some(depth as u16) };
            let hooks = HostHooks::new(src, rate, |a| matches!(a, Action::Copy | Action::Zero));
            let copy = Copy::new(&src.backend, &dst.backend, None, &policy, &hooks, cfg).map_err(|e| ImgError::failed(format!("commit: {e}")))?;
            if show_progress {
                let total = block_on(copy.bytes_to_copy()).map_err(describe)?;
                *hooks.progress.borrow_mut() = Some(Progress::new(Some(&mut *out), total));
            }
            let mut bufs: Vec<AlignedBuf> = (0..2).map(|_| AlignedBuf::new(CHUNK as usize)).collect();
            block_on(join_all(bufs.iter_mut().map(|b| copy.worker(b.as_mut_slice(), &mut []))));
            copy.finish().map_err(describe)?;
            if let Some(p) = hooks.progress.into_inner() {
                p.finish();
            }
            Ok(())
        })?;
        block_on(dst.backend.flush()).map_err(|e| ImgError::failed(format!("error while flushing the base image: {e}")))
    })?;
    if !drop {
        let empty_opts = OpenOptions { read_only: false, force_share: false, no_backing: true, ..top_opts };
        image::with_image(file, &empty_opts, |img| {
            let graph = img.backend.graph();
            let root = img.root();
            // Formats that cannot be emptied are left as they are (qemu-img ignores ENOTSUP).
            let Some(q) = graph.state(root).ok().flatten().and_then(|s| s.qcow2()) else { return Ok(()) };
            let _drained = block_on(img.backend.drain());
            block_on(q.make_empty(&graph.io(), root)).map_err(|e| ImgError::failed(format!("Could not empty {file}: {e}")))
        })?;
    }
    if !quiet {
        writeln!(out, "Image committed.").map_err(|e| ImgError::failed(e.to_string()))?;
    }
    Ok(())
}

/// A copy error as qemu-img words it.
fn describe(e: CopyError) -> ImgError {
    let (offset, error) = (e.offset, e.error);
    ImgError::failed(match e.op {
        CopyOp::Status => format!("error while reading block status at offset {offset}: {error}"),
        CopyOp::Read | CopyOp::ReadCompare => format!("error while reading at byte {offset}: {error}"),
        CopyOp::Write | CopyOp::WriteZeroes => format!("error while writing at byte {offset}: {error}"),
        _ => format!("commit: {error}"),
    })
}
