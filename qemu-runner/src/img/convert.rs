//! `img convert -O raw`: copies what an image shows into a new sparse raw file, like
//! `qemu-img convert -O raw` (all-zero 4 KiB blocks are left as holes).

use std::cell::Cell;
use std::path::Path;

use futures::future::join_all;

use super::args::Args;
use super::image::{self, block_on, AlignedBuf, Image, OpenOptions};
use super::output;
use super::ImgError;

/// Bytes per copy request.
const CHUNK: u64 = 2 << 20;
/// Copy requests in flight.
const DEPTH: usize = 8;
/// Granularity of hole detection (qemu-img's default `-S 4k`).
const SPARSE: usize = 4096;

/// Runs `img convert [-f FMT] [--image-opts] [-t CACHE] [-T SRC_CACHE] [-l snapshot.name=NAME]
/// [--cache-size SIZE] [--allow-backing-anywhere] -O raw SRC DST`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    let args = Args::parse(
        argv,
        &["-f", "-O", "-t", "-T", "-l"],
        &["--image-opts", "-U", "-p", "-q"],
    )?;
    let files = args.exactly(2, "SRC and DST")?;
    match args.value("-O") {
        Some("raw") => {}
        Some(other) => return Err(ImgError::usage(format!("-O {other}: only raw output is supported yet"))),
        None => return Err(ImgError::usage("-O raw is required".into())),
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
    let dst_opts = OpenOptions {
        format: Some("raw".into()),
        cache: image::cache_mode(args.value("-t"))?,
        ..OpenOptions::default()
    };
    // The source is open (and locked) before the output is touched, and the output is none of
    // the source's files.
    image::with_image(&files[0], &src_opts, |src| {
        let size = src.backend.size();
        output::create_output(Path::new(&files[1]), size, &src.paths)?;
        image::with_image(&files[1], &dst_opts, |dst| copy(src, dst, size))
    })
}

/// `-l snapshot.name=NAME`, `-l snapshot.id=ID` or `-l NAME` (qemu-img's forms) as options for
/// the top node.
fn snapshot_option(value: &str) -> Result<String, ImgError> {
    let (key, name) = match value.split_once('=') {
        Some(("snapshot.name", n)) => ("snapshot.name", n),
        Some(("snapshot.id", n)) => ("snapshot.id", n),
        Some((k, _)) => return Err(ImgError::usage(format!("-l {k}=...: expected snapshot.name= or snapshot.id="))),
        None => ("snapshot.name", value),
    };
    if name.is_empty() {
        return Err(ImgError::usage("-l: empty snapshot name".into()));
    }
    Ok(format!("{key}={}", name.replace(',', ",,")))
}

/// Copies `size` bytes from `src` to `dst`, leaving zero blocks as holes, then flushes.
fn copy(src: &Image<'_, '_>, dst: &Image<'_, '_>, size: u64) -> Result<(), ImgError> {
    let next = Cell::new(0u64);
    let worker = || async {
        let mut buf = AlignedBuf::new(CHUNK as usize);
        loop {
            let offset = next.get();
            if offset >= size {
                return Ok(());
            }
            let n = (size - offset).min(CHUNK);
            next.set(offset + n);
            let data = &mut buf.as_mut_slice()[..n as usize];
            src.backend
                .read(offset, data)
                .await
                .map_err(|e| ImgError::failed(format!("error while reading at byte {offset}: {e}")))?;
            // Write the runs of non-zero blocks; leave zero blocks as holes.
            let mut at = 0usize;
            while at < data.len() {
                let block = |i: usize| &data[i..(i + SPARSE).min(data.len())];
                if strata_block::io::zero::is_zero(block(at)) {
                    at += SPARSE;
                    continue;
                }
                let start = at;
                while at < data.len() && !strata_block::io::zero::is_zero(block(at)) {
                    at += SPARSE;
                }
                let end = at.min(data.len());
                let pos = offset + start as u64;
                dst.backend
                    .write(pos, &data[start..end])
                    .await
                    .map_err(|e| ImgError::failed(format!("error while writing at byte {pos}: {e}")))?;
            }
        }
    };
    let results = block_on(join_all((0..DEPTH).map(|_| worker())));
    results.into_iter().collect::<Result<Vec<()>, ImgError>>()?;
    block_on(dst.backend.flush()).map_err(|e| ImgError::failed(format!("error while flushing: {e}")))?;
    Ok(())
}
