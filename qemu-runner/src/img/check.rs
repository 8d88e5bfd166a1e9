//! `img check`: qemu-img's consistency check and repair of a qcow2 image, on the block
//! layer's heap-free check (`strata_block::driver::qcow2::check`).
//!
//! Output and exit status as `qemu-img check` (`img_check` in qemu-img.c): per-problem
//! messages on stderr, the report on stdout (human or JSON with ImageCheck's fields in the
//! order qemu-img prints them), 0 clean, 1 the check could not complete (or internal errors),
//! 2 corruptions, 3 leaks only, 63 a format without checks (raw). With `-r`, the image is
//! checked again after the repair and the report and status describe it as it now is.
//! `--budget SIZE` (Strata's; default 16M) bounds the check's memory: refcounts are recomputed
//! over windows of the file in as many passes as the budget needs.

use std::io::{Read, Write};

use strata_block::driver::qcow2::check::{self, CheckResult, Finding, Mode};
use strata_block::graph::Role;

use super::args::Args;
use super::image::{self, block_on, Image, OpenOptions};
use super::ImgError;

/// Default memory of a check.
pub const DEFAULT_BUDGET: u64 = 16 << 20;
/// Exit status for a format without checks.
const NO_CHECKS: i32 = 63;

/// Runs `img check [-f FMT] [-r leaks|all] [--output human|json] [-U] [-q] [--image-opts]
/// [--budget SIZE] FILE`; returns the exit status.
pub fn run(argv: &[String]) -> Result<i32, ImgError> {
    run_to(
        argv,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// [`run`] with the report written to `out` and the per-problem messages to `err`.
pub fn run_to(argv: &[String], out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, ImgError> {
    let args = Args::parse(
        argv,
        &["-f", "-r", "--output", "-T", "--budget"],
        &["-U", "--force-share", "-q", "--image-opts"],
    )?;
    let spec = &args.exactly(1, "one image")?[0];
    let mode = match args.value("-r") {
        None => Mode::CHECK,
        Some("leaks") => Mode::LEAKS,
        Some("all") => Mode::ALL,
        Some(other) => {
            return Err(ImgError::usage(format!(
                "Unknown option value for -r (expecting 'leaks' or 'all'): {other}"
            )))
        }
    };
    let json = match args.value("--output").unwrap_or("human") {
        "human" => false,
        "json" => true,
        other => {
            return Err(ImgError::usage(format!(
                "--output={other}: expected human or json"
            )))
        }
    };
    let quiet = args.has("-q");
    let budget = args.size("--budget", DEFAULT_BUDGET)?;
    let budget =
        usize::try_from(budget).map_err(|_| ImgError::usage("--budget too large".into()))?;
    if budget < check::MIN_BUDGET {
        return Err(ImgError::usage(format!(
            "--budget: at least {} bytes",
            check::MIN_BUDGET
        )));
    }
    let image_opts = args.has("--image-opts");
    // A qcow2 file is opened as raw bytes: the check reads and repairs the image itself, so a
    // corrupt or dirty image opens too (qemu-img opens it with BDRV_O_CHECK).
    let format = match (image_opts, args.value("-f")) {
        (true, _) => None,
        (false, Some(f)) => Some(f.to_string()),
        (false, None) => Some(probe(spec)?.to_string()),
    };
    let checkable = format.as_deref().is_none_or(|f| f == "qcow2");
    let opts = OpenOptions {
        format: if checkable && !image_opts {
            Some("raw".into())
        } else {
            format.clone()
        },
        image_opts,
        read_only: !mode.repairs(),
        force_share: args.has("-U") || args.has("--force-share"),
        no_backing: true,
        ..args.image_options()?
    };
    let mut memory = vec![0u8; budget];
    let io_err = |e: std::io::Error| ImgError::failed(format!("writing the report: {e}"));
    image::with_image(spec, &opts, |img| {
        let Some(file) = image_file(img, checkable, image_opts)? else {
            writeln!(
                err,
                "qemu-runner img: This image format does not support checks"
            )
            .map_err(io_err)?;
            return Ok(NO_CHECKS);
        };
        let mut result = match run_check(img, file, mode, &mut memory, err) {
            Ok(r) => r,
            Err(e) => {
                writeln!(err, "qemu-runner img: Check failed: {e}").map_err(io_err)?;
                return Ok(1);
            }
        };
        if result.corruptions_fixed != 0 || result.leaks_fixed != 0 {
            if !json && !quiet {
                writeln!(
                    out,
                    "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} corruptions\n\nDouble checking the fixed image now...",
                    result.leaks_fixed, result.corruptions_fixed
                )
                .map_err(io_err)?;
            }
            let (leaks_fixed, corruptions_fixed) = (result.leaks_fixed, result.corruptions_fixed);
            result = match run_check(img, file, Mode::CHECK, &mut memory, err) {
                Ok(r) => r,
                Err(e) => {
                    writeln!(err, "qemu-runner img: Check failed: {e}").map_err(io_err)?;
                    return Ok(1);
                }
            };
            result.leaks_fixed = leaks_fixed;
            result.corruptions_fixed = corruptions_fixed;
        }
        if !quiet {
            if json {
                writeln!(out, "{}", json_report(spec, &result)).map_err(io_err)?;
            } else {
                write!(out, "{}", human_report(&result)).map_err(io_err)?;
            }
        }
        if result.check_errors != 0 {
            writeln!(err, "qemu-runner img: Check failed").map_err(io_err)?;
        }
        Ok(status(&result))
    })
}

/// The node holding the qcow2 bytes: the raw root's file (a file name, opened raw because it
/// is qcow2), or the file of a qcow2 root (`--image-opts`); `None` for an image of a format
/// without checks.
fn image_file(
    img: &Image<'_, '_>,
    checkable: bool,
    image_opts: bool,
) -> Result<Option<strata_block::NodeId>, ImgError> {
    if !checkable {
        return Ok(None);
    }
    let graph = img.backend.graph();
    let node = graph
        .node(img.root())
        .map_err(|e| ImgError::failed(e.to_string()))?;
    Ok(match (node.driver, image_opts) {
        ("qcow2", _) | ("raw", false) => node.child(Role::File),
        _ => None,
    })
}

/// One check, its findings written to `err`.
fn run_check(
    img: &Image<'_, '_>,
    file: strata_block::NodeId,
    mode: Mode,
    memory: &mut [u8],
    err: &mut dyn Write,
) -> Result<CheckResult, String> {
    let graph = img.backend.graph();
    let mut sink = |f: &Finding| {
        let _ = writeln!(err, "{f}");
    };
    block_on(check::check(&graph.io(), file, mode, memory, &mut sink)).map_err(|e| e.to_string())
}

/// qemu-img's exit status for a result.
pub fn status(r: &CheckResult) -> i32 {
    if r.check_errors != 0 {
        1
    } else if r.corruptions != 0 {
        2
    } else if r.leaks != 0 {
        3
    } else {
        0
    }
}

/// qemu-img's human report (`dump_human_image_check`).
pub fn human_report(r: &CheckResult) -> String {
    let mut s = String::new();
    if r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0 {
        s.push_str("No errors were found on the image.\n");
    } else {
        if r.corruptions != 0 {
            s.push_str(&format!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
                r.corruptions
            ));
        }
        if r.leaks != 0 {
            s.push_str(&format!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
                r.leaks
            ));
        }
        if r.check_errors != 0 {
            s.push_str(&format!(
                "\n{} internal errors have occurred during the check.\n",
                r.check_errors
            ));
        }
    }
    let f = &r.frag;
    if f.total_clusters != 0 && f.allocated_clusters != 0 {
        s.push_str(&format!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters\n",
            f.allocated_clusters,
            f.total_clusters,
            f.allocated_clusters as f64 * 100.0 / f.total_clusters as f64,
            f.fragmented_clusters as f64 * 100.0 / f.allocated_clusters as f64,
            f.compressed_clusters as f64 * 100.0 / f.allocated_clusters as f64
        ));
    }
    if r.image_end_offset != 0 {
        s.push_str(&format!("Image end offset: {}\n", r.image_end_offset));
    }
    s
}

/// qemu-img's JSON report: ImageCheck's fields, optional ones only when non-zero, in the order
/// qemu-img prints them (its dictionary's hash order, the same in QEMU 7.2 and 10).
pub fn json_report(filename: &str, r: &CheckResult) -> String {
    let f = &r.frag;
    let text = serde_json::Value::String(filename.to_string()).to_string();
    let fields: [(&str, Option<String>); 12] = [
        ("image-end-offset", nonzero(r.image_end_offset)),
        ("compressed-clusters", nonzero(f.compressed_clusters)),
        ("total-clusters", nonzero(f.total_clusters)),
        ("corruptions", nonzero(r.corruptions)),
        ("corruptions-fixed", nonzero(r.corruptions_fixed)),
        ("check-errors", Some(r.check_errors.to_string())),
        ("leaks", nonzero(r.leaks)),
        ("leaks-fixed", nonzero(r.leaks_fixed)),
        ("allocated-clusters", nonzero(f.allocated_clusters)),
        ("filename", Some(text)),
        ("format", Some("\"qcow2\"".into())),
        ("fragmented-clusters", nonzero(f.fragmented_clusters)),
    ];
    let body: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("    \"{k}\": {v}")))
        .collect();
    format!("{{\n{}\n}}", body.join(",\n"))
}

fn nonzero(v: u64) -> Option<String> {
    (v != 0).then(|| v.to_string())
}

/// The format `spec` probes as.
fn probe(spec: &str) -> Result<&'static str, ImgError> {
    let mut head = [0u8; strata_block::driver::PROBE_BYTES];
    let mut file = std::fs::File::open(spec)
        .map_err(|e| ImgError::failed(format!("Could not open '{spec}': {e}")))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(ImgError::failed(format!("Could not read '{spec}': {e}"))),
        }
    }
    Ok(strata_block::driver::probe(&head[..n]).name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_as_qemu_img() {
        let mut r = CheckResult::default();
        r.frag.total_clusters = 1024;
        r.frag.allocated_clusters = 16;
        r.image_end_offset = 1376256;
        assert_eq!(
            human_report(&r),
            "No errors were found on the image.\n16/1024 = 1.56% allocated, 0.00% fragmented, 0.00% compressed clusters\nImage end offset: 1376256\n"
        );
        assert_eq!(
            json_report("a.qcow2", &r),
            "{\n    \"image-end-offset\": 1376256,\n    \"total-clusters\": 1024,\n    \"check-errors\": 0,\n    \"allocated-clusters\": 16,\n    \"filename\": \"a.qcow2\",\n    \"format\": \"qcow2\"\n}"
        );
        r.leaks = 2;
        assert_eq!(status(&r), 3);
        r.corruptions = 1;
        assert_eq!(status(&r), 2);
    }
}
