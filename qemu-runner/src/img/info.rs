//! `img info`: what an image is (format, virtual size, host disk use), like `qemu-img info`.

use std::os::unix::fs::MetadataExt;

use super::args::Args;
use super::image::{self, OpenOptions};
use super::ImgError;

/// Runs `img info [-f FMT] [--image-opts] [-U] [--output=human|json] FILE`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    let args = Args::parse(argv, &["-f", "--output"], &["-U", "--force-share", "--image-opts"])?;
    let spec = &args.exactly(1, "one image")?[0];
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        read_only: true,
        force_share: args.has("-U") || args.has("--force-share"),
        ..OpenOptions::default()
    };
    let (size, format) = image::with_image(spec, &opts, |img| Ok((img.backend.size(), img.format())))?;
    // Host disk use of the named file (not known for an options string).
    let disk = (!opts.image_opts)
        .then(|| std::fs::metadata(spec).map(|m| m.blocks() * 512).ok())
        .flatten();
    match args.value("--output").unwrap_or("human") {
        "json" => {
            let v = serde_json::json!({
                "virtual-size": size,
                "filename": spec,
                "format": format,
                "actual-size": disk,
                "dirty-flag": false,
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        "human" => {
            println!("image: {spec}");
            println!("file format: {format}");
            println!("virtual size: {} ({size} bytes)", human_size(size));
            if let Some(disk) = disk {
                println!("disk size: {}", human_size(disk));
            }
        }
        other => return Err(ImgError::usage(format!("--output={other}: expected human or json"))),
    }
    Ok(())
}

/// QEMU's human sizes (`size_to_str`: three significant digits): `64 MiB`, `1.5 GiB`,
/// `3.01 MiB`, `512 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        let decimals = if value >= 100.0 {
            0
        } else if value >= 10.0 {
            1
        } else {
            2
        };
        let text = format!("{value:.decimals$}");
        let trimmed = text.trim_end_matches('0').trim_end_matches('.');
        format!("{trimmed} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human_size(512), "512 B");
        assert_eq!(super::human_size(64 << 20), "64 MiB");
        assert_eq!(super::human_size(3 << 29), "1.5 GiB");
        assert_eq!(super::human_size(3080 * 1024), "3.01 MiB");
    }
}
