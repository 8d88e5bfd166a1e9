//! `img compare`: are two images' contents the same? Like `qemu-img compare`: exit 0 when
//! identical, 1 on the first difference (reported by offset), 2 on an error. Images of different
//! sizes compare equal when the larger one is all zeros past the smaller's end, unless `-s`.

use super::args::Args;
use super::image::{self, block_on, AlignedBuf, Image, OpenOptions};
use super::ImgError;

/// Bytes compared per step.
const CHUNK: u64 = 1 << 20;

/// Exit status for "the images differ".
pub const DIFFERENT: i32 = 1;

/// Runs `img compare [-f FMT] [-F FMT] [-s] [-q] [-U] A B`; returns the exit status.
pub fn run(argv: &[String]) -> Result<i32, ImgError> {
    let args = Args::parse(argv, &["-f", "-F", "-T"], &["-s", "-q", "-U", "-p", "--image-opts"])?;
    let files = args.exactly(2, "two images")?;
    let quiet = args.has("-q");
    let common = args.image_options()?;
    let opts = |fmt: Option<&str>| OpenOptions {
        format: fmt.map(str::to_string),
        image_opts: args.has("--image-opts"),
        read_only: true,
        force_share: args.has("-U"),
        ..common.clone()
    };
    image::with_image(&files[0], &opts(args.value("-f")), |a| {
        image::with_image(&files[1], &opts(args.value("-F").or(args.value("-f"))), |b| {
            compare(a, b, args.has("-s"), quiet)
        })
    })
}

/// Compares two open images; returns the exit status.
fn compare(a: &Image<'_, '_>, b: &Image<'_, '_>, strict: bool, quiet: bool) -> Result<i32, ImgError> {
    let (size_a, size_b) = (a.backend.size(), b.backend.size());
    if size_a != size_b {
        if strict {
            if !quiet {
                println!("Strict mode: Image size mismatch!");
            }
            return Ok(DIFFERENT);
        }
        if !quiet {
            println!("Warning: Image size mismatch!");
        }
    }
    let (mut buf_a, mut buf_b) = (AlignedBuf::new(CHUNK as usize), AlignedBuf::new(CHUNK as usize));
    let mut offset = 0;
    while offset < size_a.max(size_b) {
        let n = (size_a.max(size_b) - offset).min(CHUNK);
        let (da, db) = (
            &mut buf_a.as_mut_slice()[..n as usize],
            &mut buf_b.as_mut_slice()[..n as usize],
        );
        read_or_zero(a, offset, size_a, da)?;
        read_or_zero(b, offset, size_b, db)?;
        if let Some(i) = da.iter().zip(db.iter()).position(|(x, y)| x != y) {
            if !quiet {
                let at = (offset + i as u64) / 512 * 512;
                println!("Content mismatch at offset {at}!");
            }
            return Ok(DIFFERENT);
        }
        offset += n;
    }
    if !quiet {
        println!("Images are identical.");
    }
    Ok(0)
}

/// Reads `buf` at `offset` of `img`, zeros past its `size`.
fn read_or_zero(img: &Image<'_, '_>, offset: u64, size: u64, buf: &mut [u8]) -> Result<(), ImgError> {
    buf.fill(0);
    if offset < size {
        let n = ((size - offset) as usize).min(buf.len());
        block_on(img.backend.read(offset, &mut buf[..n]))
            .map_err(|e| ImgError::failed(format!("error while reading at byte {offset}: {e}")))?;
    }
    Ok(())
}
