//! The host side of `img convert`'s copy: block's copy loop ([`strata_block::cmd::copy`]) with
//! the host's hooks (holes of host files, the `-p` line, a `-r` rate) and targets (a backend,
//! or a qcow2 taking compressed clusters for `-c`), run by `-m` workers on this thread. With
//! `-c` the whole clusters of each chunk are compressed together on all cores
//! ([`compress_all`]), then written in order.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use futures::future::join_all;
use strata_block::cmd::copy::{
    Action, Copy, CopyConfig, CopyError, CopyOp, CopyTarget, ExtentPolicy, Standard,
};
use strata_block::dev::BlockDevice;
use strata_block::driver::qcow2::header::Compression;
use strata_block::driver::qcow2::Qcow2;
use strata_block::path::Extent;
use strata_block::{Backend, NodeId};

use super::compress::compress_all;
use super::copy_hooks::HostHooks;
use super::extents;
use super::holes::HostFiles;
use super::image::{block_on, AlignedBuf, Image};
use super::progress::Progress;
use super::ImgError;

/// Bytes per copy request (qemu-img's default buffer: 2 MiB).
const CHUNK: u64 = 2 << 20;

/// How to copy.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// `-m`: workers (requests in flight).
    pub workers: usize,
    /// Writes in order (no `-W`).
    pub in_order: bool,
    /// `-S`: zero runs of this many bytes in data are not written (0: write everything).
    pub sparse: u64,
    /// `-c`: compress clusters with this codec (the target is a qcow2).
    pub compress: Option<Compression>,
    /// `-B`: the target has a backing file; only the source's top layer is copied.
    pub backing: bool,
    /// The target reads as zeros where not written (a new image without backing).
    pub target_zeroed: bool,
    /// `-r`: bytes per second (0: no limit).
    pub rate: u64,
    /// `-C`: copy data between host files with `copy_file_range` (raw output only).
    pub offload: bool,
}

/// convert's policy: [`Standard`], and with `-S 0` zeros copied as data (qemu-img "fully
/// allocates" the output then: the zeros are read and written).
struct Policy {
    standard: Standard,
    allocate: bool,
}

impl ExtentPolicy for Policy {
    fn action(&self, offset: u64, ext: &Extent) -> Action {
        match self.standard.action(offset, ext) {
            Action::Zero if self.allocate => Action::Copy,
            a => a,
        }
    }
}

/// Where the copy writes: the target backend, compressing whole clusters for `-c`.
struct Target<'a, 'g, 'd> {
    backend: &'a Backend<'g, 'd>,
    compressed: Option<(Compression, &'g Qcow2)>,
    offload: Option<Offload<'a>>,
}

/// `-C` into a raw output: the source's host files (opened on first use) and the output file.
struct Offload<'a> {
    /// The host path of a source leaf.
    path_of: Box<dyn Fn(NodeId) -> Option<PathBuf> + 'a>,
    dst: File,
    open: RefCell<HashMap<PathBuf, File>>,
}

impl Offload<'_> {
    /// Copies `len` bytes at `src_offset` of source leaf `leaf` to `offset` of the output with
    /// `copy_file_range`; false if the kernel or file systems cannot (the loop copies then).
    fn copy(&self, leaf: NodeId, src_offset: u64, offset: u64, len: u64) -> bool {
        let Some(path) = (self.path_of)(leaf) else {
            return false;
        };
        let mut open = self.open.borrow_mut();
        if !open.contains_key(&path) {
            match File::open(&path) {
                Ok(f) => {
                    open.insert(path.clone(), f);
                }
                Err(_) => return false,
            }
        }
        let Some(src) = open.get(&path) else {
            return false;
        };
        let (Ok(mut from), Ok(mut to)) = (
            libc::loff_t::try_from(src_offset),
            libc::loff_t::try_from(offset),
        ) else {
            return false;
        };
        let mut left = len as usize;
        while left > 0 {
            // SAFETY: both descriptors are open files this function owns a reference to; the
            // kernel reads and updates only the two offsets passed by pointer.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut from,
                    self.dst.as_raw_fd(),
                    &mut to,
                    left,
                    0,
                )
            };
            if n <= 0 {
                return false;
            }
            left -= n as usize;
        }
        true
    }
}

impl CopyTarget for Target<'_, '_, '_> {
    async fn write(&self, offset: u64, data: &[u8]) -> strata_block::Result<()> {
        let Some((codec, q)) = self.compressed else {
            return self.backend.write(offset, data).await;
        };
        let cs = q.cluster_size();
        let size = self.backend.size();
        let graph = self.backend.graph();
        let io = graph.io();
        let root = self.backend.root();
        // The chunk's pieces: (guest offset, range in `data`, whether it is a whole cluster).
        let mut pieces = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            let pos = offset + at as u64;
            let n = ((cs - pos % cs) as usize).min(data.len() - at);
            let whole = pos.is_multiple_of(cs) && (n as u64 == cs || pos + n as u64 == size);
            pieces.push((pos, at..at + n, whole));
            at += n;
        }
        // The last cluster of an image whose size is not a multiple of the cluster size is
        // compressed zero-padded, as QEMU does.
        let mut padded = Vec::new();
        if let Some((_, r, true)) = pieces.last().filter(|(_, r, _)| (r.len() as u64) < cs) {
            padded.extend_from_slice(&data[r.clone()]);
            padded.resize(cs as usize, 0);
        }
        let clusters: Vec<&[u8]> = pieces
            .iter()
            .filter(|(_, _, whole)| *whole)
            .map(|(_, r, _)| {
                if (r.len() as u64) < cs {
                    &padded[..]
                } else {
                    &data[r.clone()]
                }
            })
            .collect();
        // Every whole cluster of the chunk is compressed at once, on all cores.
        let mut payloads = compress_all(codec, &clusters, cs as usize).into_iter();
        for (pos, r, whole) in pieces {
            let payload = if whole {
                payloads.next().flatten()
            } else {
                None
            };
            match payload {
                Some(payload) => q.write_compressed(&io, root, pos, &payload).await?,
                None => self.backend.write(pos, &data[r]).await?,
            }
        }
        Ok(())
    }

    async fn write_zeroes(&self, offset: u64, len: u64) -> strata_block::Result<()> {
        self.backend.write_zeroes(offset, len, true).await
    }

    async fn copy_range(
        &self,
        src_leaf: NodeId,
        src_offset: u64,
        offset: u64,
        len: u64,
    ) -> strata_block::Result<bool> {
        Ok(self
            .offload
            .as_ref()
            .is_some_and(|o| o.copy(src_leaf, src_offset, offset, len)))
    }
}

/// Copies all of `src` into `dst` as `plan` says, then flushes `dst`. Draws `-p`'s line into
/// `progress` if given.
pub fn copy(
    src: &Image<'_, '_>,
    dst: &Image<'_, '_>,
    plan: &Plan,
    progress: Option<&mut dyn Write>,
) -> Result<(), ImgError> {
    let size = src.backend.size();
    let compressed = match plan.compress {
        Some(codec) => {
            let state = dst.backend.graph().state(dst.root()).ok().flatten();
            let q = state.and_then(|s| s.qcow2()).ok_or_else(|| {
                ImgError::failed("Compression not supported for this file format".into())
            })?;
            Some((codec, q))
        }
        None => None,
    };
    let unit = compressed.map_or(1, |(_, q)| q.cluster_size());
    let align = extents::alignment(src);
    let cfg = CopyConfig {
        chunk: CHUNK.max(unit).next_multiple_of(unit),
        align: align.max(unit),
        unit,
        // A compressed cluster is written whole unless it is all zeros (qemu-img).
        sparse: if unit > 1 { unit } else { plan.sparse },
        target_zeroed: plan.target_zeroed,
        in_order: plan.in_order,
        ..CopyConfig::new(size)
    };
    let policy = Policy {
        standard: Standard {
            base_depth: plan.backing.then_some(1),
        },
        allocate: plan.sparse == 0 && unit == 1,
    };
    let offload = match (plan.offload, dst.format(), dst.paths.first()) {
        (true, "raw", Some(path)) if compressed.is_none() => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| ImgError::failed(format!("{}: {e}", path.display())))?;
            let path_of = move |leaf: NodeId| {
                let graph = src.backend.graph();
                graph
                    .node(leaf)
                    .ok()
                    .and_then(|n| n.device())
                    .and_then(|d| HostFiles::new(src).path(d))
            };
            Some(Offload {
                path_of: Box::new(path_of),
                dst: file,
                open: RefCell::new(HashMap::new()),
            })
        }
        _ => None,
    };
    let target = Target {
        backend: &dst.backend,
        compressed,
        offload,
    };
    let hooks = HostHooks::new(src, plan.rate, |a| {
        matches!(a, Action::Copy | Action::CopyIfDiffers)
    });
    let copy = Copy::new(&src.backend, &target, None, &policy, &hooks, cfg)
        .map_err(|e| ImgError::failed(format!("convert: {e}")))?;
    if let Some(out) = progress {
        let total = block_on(copy.bytes_to_copy()).map_err(describe)?;
        *hooks.progress.borrow_mut() = Some(Progress::new(Some(out), total));
    }
    // Host files in the page cache run each request inside the call that makes it (HostFile's
    // inline engine), so on one executor thread more workers overlap nothing: they only read
    // ahead, each into its own 2 MiB buffer, while an earlier write waits: -m 8 took 1.13-1.16
    // times the CPU of -m 1 (raw -> qcow2, 256 MiB and 1 GiB, on a loaded 2-core machine: 14 MiB
    // more first-touch page faults, buffers cycled through the CPU caches). Then one worker runs; queued I/O (-t none, -T none, io_uring
    // or thread engines) gets every worker `-m` asks for.
    let inline = src
        .files
        .iter()
        .chain(dst.files.iter())
        .all(|f| f.runs_now());
    let workers = if inline { 1 } else { plan.workers.max(1) };
    let mut bufs: Vec<AlignedBuf> = (0..workers)
        .map(|_| AlignedBuf::new(cfg.chunk as usize))
        .collect();
    block_on(join_all(
        bufs.iter_mut()
            .map(|b| copy.worker(b.as_mut_slice(), &mut [])),
    ));
    copy.finish().map_err(describe)?;
    block_on(dst.backend.flush())
        .map_err(|e| ImgError::failed(format!("error while flushing: {e}")))?;
    if let Some(p) = hooks.progress.into_inner() {
        p.finish();
    }
    Ok(())
}

/// A copy error as qemu-img words it.
fn describe(e: CopyError) -> ImgError {
    let (offset, error) = (e.offset, e.error);
    ImgError::failed(match e.op {
        CopyOp::Status => format!("error while reading block status at offset {offset}: {error}"),
        CopyOp::Read | CopyOp::ReadCompare => {
            format!("error while reading at byte {offset}: {error}")
        }
        CopyOp::Write | CopyOp::WriteZeroes => {
            format!("error while writing at byte {offset}: {error}")
        }
        _ => format!("convert: {error}"),
    })
}
