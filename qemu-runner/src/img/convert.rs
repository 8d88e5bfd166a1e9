//! `img convert -O raw`: copies what an image shows into a new sparse raw file, like
//! `qemu-img convert -O raw`. Block status drives it as it drives qemu-img
//! ([`extents::next`]): zero and unallocated extents are never read and stay holes in the
//! output; data extents are read and their all-zero 4 KiB blocks left as holes too. `-p` draws
//! qemu-img's progress line over the bytes to copy, on a terminal only (issue 14 asks for that;
//! qemu-img draws it into pipes and files too, which [`run_to`] still does for comparisons).

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::path::Path;

use futures::future::join_all;
use futures::lock::Mutex;

use super::args::Args;
use super::extents::{self, Piece};
use super::holes::HostFiles;
use super::image::{self, block_on, AlignedBuf, Image, OpenOptions};
use super::output;
use super::progress::Progress;
use super::ImgError;

/// Bytes per copy request.
const CHUNK: u64 = 2 << 20;
/// Copy requests in flight.
const DEPTH: usize = 8;
/// Granularity of hole detection (qemu-img's default `-S 4k`).
const SPARSE: u64 = 4096;

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
        let progress = (args.has("-p") && !args.has("-q")).then_some(out);
        image::with_image(&files[1], &dst_opts, |dst| copy(src, dst, size, progress))
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

/// Where the copy stands: the next offset to look at, and the source's host files (for their
/// holes). One worker at a time asks block status and claims the next data chunk (qemu-img's
/// `s->lock`), so chunks are claimed in order and never twice.
struct Cursor<'i, 'g, 'd> {
    next: u64,
    files: HostFiles<'i, 'g, 'd>,
}

/// Bytes of `src` that [`copy`] reads (its data extents), for the progress line.
fn data_bytes(src: &Image<'_, '_>, size: u64) -> Result<u64, ImgError> {
    let mut files = HostFiles::new(src);
    let align = extents::alignment(src);
    let (mut pos, mut total) = (0, 0);
    while pos < size {
        match block_on(extents::next(src, &mut files, pos, size - pos, align))? {
            Piece::Copy(n) => {
                total += n;
                pos += n;
            }
            Piece::Skip(n) => pos += n,
        }
    }
    Ok(total)
}

/// Copies `size` bytes from `src` to the new (all-holes) `dst`: data extents only, leaving
/// zero blocks as holes, then flushes. Draws progress into `progress` if given.
fn copy(src: &Image<'_, '_>, dst: &Image<'_, '_>, size: u64, progress: Option<&mut dyn Write>) -> Result<(), ImgError> {
    let total = if progress.is_some() { data_bytes(src, size)? } else { 0 };
    let progress = RefCell::new(Progress::new(progress, total));
    let cursor = Mutex::new(Cursor { next: 0, files: HostFiles::new(src) });
    let align = extents::alignment(src);
    // The next data chunk to copy, or `None` at the end.
    let claim = || async {
        let mut c = cursor.lock().await;
        loop {
            let at = c.next;
            if at >= size {
                return Ok::<_, ImgError>(None);
            }
            match extents::next(src, &mut c.files, at, size - at, align).await? {
                Piece::Skip(n) => c.next = at + n,
                Piece::Copy(n) => {
                    let n = n.min(CHUNK);
                    c.next = at + n;
                    return Ok(Some((at, n)));
                }
            }
        }
    };
    let worker = || async {
        let mut buf = AlignedBuf::new(CHUNK as usize);
        while let Some((offset, n)) = claim().await? {
            progress.borrow_mut().add(n);
            let data = &mut buf.as_mut_slice()[..n as usize];
            src.backend
                .read(offset, data)
                .await
                .map_err(|e| ImgError::failed(format!("error while reading at byte {offset}: {e}")))?;
            for (start, end) in nonzero_runs(data, offset) {
                let pos = offset + start as u64;
                dst.backend
                    .write(pos, &data[start..end])
                    .await
                    .map_err(|e| ImgError::failed(format!("error while writing at byte {pos}: {e}")))?;
            }
        }
        Ok(())
    };
    let results = block_on(join_all((0..DEPTH).map(|_| worker())));
    results.into_iter().collect::<Result<Vec<()>, ImgError>>()?;
    block_on(dst.backend.flush()).map_err(|e| ImgError::failed(format!("error while flushing: {e}")))?;
    progress.into_inner().finish();
    Ok(())
}

/// The runs of `data` (which starts at image offset `offset`) that hold a non-zero byte, in
/// blocks of [`SPARSE`] bytes aligned to the image (the first and last may be shorter), as
/// `(start, end)` indexes into `data`.
fn nonzero_runs(data: &[u8], offset: u64) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let to_boundary = (SPARSE - (offset + at as u64) % SPARSE) as usize;
        let end = (at + to_boundary).min(data.len());
        if !strata_block::io::zero::is_zero(&data[at..end]) {
            match runs.last_mut() {
                Some(last) if last.1 == at => last.1 = end,
                _ => runs.push((at, end)),
            }
        }
        at = end;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::nonzero_runs;

    #[test]
    fn zero_blocks_aligned_to_the_image_are_left_out() {
        let mut data = vec![0u8; 5 * 4096];
        // `data` starts at image offset 6144: its blocks end at indexes 2048, 6144, 10240, ...
        data[100] = 1; // block [0, 2048)
        data[4096 + 3000] = 1; // block [6144, 10240)
        data[10240] = 1; // block [10240, 14336), joining the run before
        data[18432 + 52] = 1; // the last, short block [18432, 20480)
        assert_eq!(nonzero_runs(&data, 6144), vec![(0, 2048), (6144, 14336), (18432, 20480)]);
        assert!(nonzero_runs(&vec![0u8; 8192], 0).is_empty());
    }
}
