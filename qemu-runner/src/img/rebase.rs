//! `img rebase`: changes the backing file a qcow2 image names, like `qemu-img rebase`.
//!
//! `-u` (unsafe) only rewrites the name and format in the header (QEMU's
//! `bdrv_change_backing_file`; the block layer lays the header cluster out anew:
//! [`strata_block::driver::qcow2::relink`]). `-b ""` (or `-u` without `-b`) removes the backing
//! file. A new backing file needs its format (`-F`), as qemu-img 10 requires.
//!
//! Safe mode first makes the image hold what the new backing file would change: through
//! block's copy loop, every range the image itself does not allocate is read as the image
//! reads it now (the old backing chain) and compared, cluster by cluster, with the new backing
//! file (zeros past its end, or without one); the clusters that differ are written into the
//! image. The comparison is the copy's target ([`Differences`]), not the loop's
//! [`Action::CopyIfDiffers`]: that one wants its compare backend in the source's graph, and the
//! new backing file is opened in a graph of its own. Then the header changes. A relative `-b` names a file beside the image, as qemu-img opens it.

use std::path::Path;

use futures::future::join_all;
use strata_block::cmd::copy::{Action, Copy, CopyConfig, CopyError, CopyOp, CopyTarget, ExtentPolicy, NoHooks};
use strata_block::path::{Extent, ExtentKind};

use super::args::Args;
use super::image::{self, block_on, AlignedBuf, Image, OpenOptions};
use super::ImgError;

/// Runs `img rebase [-f FMT] [--image-opts] [-t CACHE] [-T CACHE] [-p] [-q] [-U] [-u] [-b
/// BACKING] [-F FMT] FILE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    let args = Args::parse(argv, &["-f", "-F", "-b", "-t", "-T"], &["--image-opts", "-u", "-p", "-q", "-U", "-c"])?;
    let [file] = args.exactly(1, "FILE")? else { return Err(ImgError::usage("expected one FILE".into())) };
    let unsafe_mode = args.has("-u");
    let given = args.value("-b");
    if !unsafe_mode && given.is_none() {
        return Err(ImgError::usage("Must specify backing file (-b) or use unsafe mode (-u)".into()));
    }
    let backing = given.filter(|b| !b.is_empty());
    let format = args.value("-F").filter(|_| backing.is_some());
    let shown = backing.unwrap_or("");
    if backing.is_some() && format.is_none() {
        return Err(ImgError::failed(format!("Could not change the backing file to '{shown}': backing format must be specified")));
    }
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        // Unsafe: the header only, the old backing file need not exist (QEMU's
        // BDRV_O_NO_BACKING). Safe: the old chain is read.
        no_backing: unsafe_mode,
        ..args.image_options()?
    };
    image::with_image(file, &opts, |img| {
        if !unsafe_mode && img.backend.graph().state(img.root()).ok().flatten().and_then(|s| s.qcow2()).is_some() {
            copy_differences(img, file, backing, format)?;
        }
        let graph = img.backend.graph();
        let root = img.root();
        let Some(q) = graph.state(root).ok().flatten().and_then(|s| s.qcow2()) else {
            return Err(ImgError::failed(format!("Could not change the backing file to '{shown}': Operation not supported")));
        };
        let _drained = block_on(img.backend.drain());
        block_on(q.change_backing_file(&graph.io(), root, backing, format))
            .map_err(|e| ImgError::failed(format!("Could not change the backing file to '{shown}': {e}")))
    })
}

/// What safe mode does with each extent of the image: ranges the image allocates itself stay;
/// the others are read as the image reads them now and handed to [`Differences`].
struct Rebase;

impl ExtentPolicy for Rebase {
    fn action(&self, _offset: u64, ext: &Extent) -> Action {
        match (ext.depth, ext.kind) {
            (0, ExtentKind::Data { .. } | ExtentKind::Zero | ExtentKind::Compressed | ExtentKind::Sink) => Action::Skip,
            (_, ExtentKind::Zero | ExtentKind::Hole) => Action::Zero,
            _ => Action::Copy,
        }
    }
}

/// The copy's target in safe mode: the image, written only where what it reads now (the data
/// handed over) differs from what the new backing file reads (zeros past its end, or without
/// one), compared cluster by cluster of the image (qemu-img 10 compares in its cluster size).
struct Differences<'a, 'g, 'd, 'h, 'e> {
    image: &'a strata_block::Backend<'g, 'd>,
    new: Option<&'a strata_block::Backend<'h, 'e>>,
    grain: u64,
}

impl Differences<'_, '_, '_, '_, '_> {
    /// What the new backing file reads at `[offset, offset + len)`.
    async fn new_bytes(&self, offset: u64, len: usize) -> strata_block::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        if let Some(new) = self.new {
            let end = (offset + len as u64).min(new.size());
            if end > offset {
                new.read(offset, &mut buf[..(end - offset) as usize]).await?;
            }
        }
        Ok(buf)
    }

    /// The grains of `[offset, offset + len)`: (start, end) pairs on `grain` boundaries.
    fn grains(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        let (end, mut at, mut out) = (offset + len, offset, Vec::new());
        while at < end {
            let stop = ((at / self.grain + 1) * self.grain).min(end);
            out.push((at, stop));
            at = stop;
        }
        out
    }
}

impl CopyTarget for Differences<'_, '_, '_, '_, '_> {
    async fn write(&self, offset: u64, data: &[u8]) -> strata_block::Result<()> {
        let new = self.new_bytes(offset, data.len()).await?;
        for (a, b) in self.grains(offset, data.len() as u64) {
            let (i, j) = ((a - offset) as usize, (b - offset) as usize);
            if data[i..j] != new[i..j] {
                self.image.write(a, &data[i..j]).await?;
            }
        }
        Ok(())
    }

    async fn write_zeroes(&self, offset: u64, len: u64) -> strata_block::Result<()> {
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(2 << 20);
            let new = self.new_bytes(at, n as usize).await?;
            for (a, b) in self.grains(at, n) {
                let (i, j) = ((a - at) as usize, (b - at) as usize);
                if new[i..j].iter().any(|&x| x != 0) {
                    self.image.write_zeroes(a, b - a, false).await?;
                }
            }
            at += n;
        }
        Ok(())
    }
}

/// Safe mode's copy into `img` (open read-write with its old chain): see the module docs.
fn copy_differences(img: &Image<'_, '_>, file: &str, backing: Option<&str>, format: Option<&str>) -> Result<(), ImgError> {
    let size = img.backend.size();
    let grain = img.backend.graph().state(img.root()).ok().flatten().and_then(|s| s.qcow2()).map_or(512, |q| q.cluster_size());
    let run = |new: Option<&strata_block::Backend<'_, '_>>| -> Result<(), ImgError> {
        let target = Differences { image: &img.backend, new, grain };
        let cfg = CopyConfig { sparse: 0, target_zeroed: false, in_order: false, ..CopyConfig::new(size) };
        let copy = Copy::new(&img.backend, &target, None, &Rebase, &NoHooks, cfg).map_err(|e| ImgError::failed(format!("rebase: {e}")))?;
        let mut bufs: Vec<AlignedBuf> = (0..2).map(|_| AlignedBuf::new(cfg.chunk as usize)).collect();
        block_on(join_all(bufs.iter_mut().map(|b| copy.worker(b.as_mut_slice(), &mut []))));
        copy.finish().map(|_| ()).map_err(describe)
    };
    match backing {
        None => run(None)?,
        Some(name) => {
            let dir = Path::new(file).parent().unwrap_or(Path::new("."));
            let path = if Path::new(name).is_absolute() { Path::new(name).to_path_buf() } else { dir.join(name) };
            let opts = OpenOptions { format: format.map(str::to_string), read_only: true, force_share: true, allow_backing_anywhere: true, ..OpenOptions::default() };
            let spec = path.to_string_lossy().into_owned();
            image::with_image(&spec, &opts, |new| run(Some(&new.backend)))?;
        }
    }
    block_on(img.backend.flush()).map_err(|e| ImgError::failed(format!("error while flushing: {e}")))
}

/// A copy error as qemu-img words it.
fn describe(e: CopyError) -> ImgError {
    let (offset, error) = (e.offset, e.error);
    ImgError::failed(match e.op {
        CopyOp::Read => format!("error while reading image at offset {offset}: {error}"),
        CopyOp::ReadCompare => format!("error while reading the new backing file at offset {offset}: {error}"),
        CopyOp::Write | CopyOp::WriteZeroes => format!("error while writing at offset {offset}: {error}"),
        _ => format!("rebase: {error}"),
    })
}
