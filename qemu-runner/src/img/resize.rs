//! `img resize`: grows an image's virtual size, like `qemu-img resize FILE [+]SIZE` (qcow2;
//! growing only, as the block layer's `Backend::resize`).

use super::args::{parse_size, Args};
use super::image::{self, block_on, OpenOptions};
use super::ImgError;

/// Runs `img resize [-f FMT] [--image-opts] [-q] FILE [+]SIZE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    let args = Args::parse(argv, &["-f"], &["--image-opts", "-q"])?;
    let given = args.exactly(2, "FILE and SIZE")?;
    let (relative, text) = match given[1].strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, given[1].as_str()),
    };
    if text.starts_with('-') {
        return Err(ImgError::usage("shrinking is not supported".into()));
    }
    let amount = parse_size(text).map_err(|e| ImgError::usage(format!("invalid size {}: {e}", given[1])))?;
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        ..args.image_options()?
    };
    image::with_image(&given[0], &opts, |img| {
        let size = if relative { img.backend.size().saturating_add(amount) } else { amount };
        block_on(img.backend.resize(size)).map_err(|e| ImgError::failed(format!("Could not resize '{}': {e}", given[0])))?;
        if !args.has("-q") {
            println!("Image resized.");
        }
        Ok(())
    })
}
