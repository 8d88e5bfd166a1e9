//! `img resize`: changes an image's virtual size, like `qemu-img resize [--shrink] FILE
//! [+|-]SIZE`.
//!
//! qcow2 grows and shrinks through the block layer (`Backend::resize`; a shrink drops every
//! cluster past the new end, as QEMU's `qcow2_co_truncate`), after which the file's tail past
//! its last cluster in use is cut off as QEMU cuts it. A raw file is truncated or extended on
//! the host (QEMU's file driver does the same). A smaller size without `--shrink` is refused
//! with qemu-img's message and warning.

use std::path::PathBuf;

use super::args::{parse_size, Args};
use super::image::{self, block_on, OpenOptions};
use super::end;
use super::ImgError;

/// qemu-img's warning beside the refusal of a shrink without `--shrink`.
const SHRINK_WARNING: &str = "Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.";

/// What a resize did that needs a step after the image is closed.
enum After {
    Nothing,
    /// A qcow2 file that shrank: cut its tail past the last cluster in use.
    CutTail(PathBuf),
}

/// Runs `img resize [-f FMT] [--image-opts] [--shrink] [-q] FILE [+|-]SIZE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    // As qemu-img: a size starting with '-' is taken off before the options are parsed.
    let mut argv = argv.to_vec();
    let negative = argv.last().filter(|a| a.len() > 1 && a.starts_with('-') && a.as_bytes().get(1).is_some_and(u8::is_ascii_digit)).cloned();
    if negative.is_some() {
        argv.pop();
    }
    let args = Args::parse(&argv, &["-f", "--preallocation"], &["--image-opts", "-q", "--shrink"])?;
    let mut given: Vec<String> = args.positional.clone();
    given.extend(negative);
    let [file, size_text] = given.as_slice() else { return Err(ImgError::usage("expected FILE and SIZE".into())) };
    let (sign, text) = match size_text.as_bytes().first() {
        Some(b'+') => (1i8, &size_text[1..]),
        Some(b'-') => (-1, &size_text[1..]),
        _ => (0, size_text.as_str()),
    };
    let amount = parse_size(text).map_err(|_| ImgError::failed("Invalid size specified. You may use k, M, G, T, P or E suffixes for".to_string() + "\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."))?;
    if let Some(p) = args.value("--preallocation").filter(|p| *p != "off") {
        return Err(ImgError::failed(format!("--preallocation={p} is not supported (only off)")));
    }
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        ..args.image_options()?
    };
    let after = image::with_image(file, &opts, |img| {
        let current = img.backend.size();
        let size = match sign {
            1 => current.saturating_add(amount),
            -1 => current.saturating_sub(amount),
            _ => amount,
        };
        if size == 0 || size > i64::MAX as u64 {
            return Err(ImgError::failed("New image size must be positive.".into()));
        }
        if size < current && !args.has("--shrink") {
            return Err(ImgError::failed(format!("Use the --shrink option to perform a shrink operation.\nqemu-runner img: warning: {SHRINK_WARNING}")));
        }
        let fail = |e: String| ImgError::failed(format!("Could not resize '{file}': {e}"));
        if img.format() == "raw" && !args.has("--image-opts") {
            let path = img.paths.first().cloned().ok_or_else(|| fail("no host file".into()))?;
            let f = std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| fail(e.to_string()))?;
            f.set_len(size).map_err(|e| fail(e.to_string()))?;
            return Ok(After::Nothing);
        }
        let graph = img.backend.graph();
        if let Some(q) = graph.state(img.root()).ok().flatten().and_then(|s| s.qcow2()) {
            if q.header().version < 3 && q.header().nb_snapshots > 0 {
                return Err(ImgError::failed("Can't resize a v2 image which has snapshots".into()));
            }
        }
        block_on(img.backend.resize(size)).map_err(|e| fail(e.to_string()))?;
        let path = img.paths.first().cloned();
        Ok(match path {
            Some(p) if size < current && img.format() == "qcow2" => After::CutTail(p),
            _ => After::Nothing,
        })
    })?;
    if let After::CutTail(path) = after {
        cut_tail(&path);
    }
    if !args.has("-q") {
        println!("Image resized.");
    }
    Ok(())
}

/// Cuts the qcow2 file `path` after its last cluster in use, as QEMU does after a shrink (a
/// failure is only a warning there too).
fn cut_tail(path: &std::path::Path) {
    let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else { return };
    match end::image_end(path, 0, len) {
        Ok(end) if end < len => {
            if let Err(e) = std::fs::OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(end)) {
                eprintln!("qemu-runner img: warning: Failed to truncate the tail of the image: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("qemu-runner img: warning: Failed to truncate the tail of the image: {e}"),
    }
}
