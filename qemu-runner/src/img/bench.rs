//! `img bench`: qemu-img bench over the block layer, same flags and semantics, so the two run
//! side by side on the same file. `depth` requests in flight, each `bufsize` bytes, at offsets
//! advancing by `step` from `offset` and wrapping at the image's end; optional flushes every
//! `flush-interval` writes. Prints qemu-img's lines, then IOPS, MB/s and latency percentiles.
//! Completions are counted per interval ([`Timeline`]); `--json` carries that series and the
//! latency histogram ([`crate::series`]), `--plot FILE.svg` draws them ([`crate::plot`]).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use strata_block::backend::OpKind;
use strata_block::cmd::timeline::Timeline;

use super::args::Args;
use super::image::{self, AlignedBuf, Image, OpenOptions};
use super::ImgError;
use crate::series::{self, BenchSeries, IopsSeries};

/// Runs `img bench [-c COUNT] [-d DEPTH] [-f FMT] [-s SIZE] [-S STEP] [-o OFFSET] [-w]
/// [-t none|writeback] [-i threads|io_uring] [-n] [--pattern N] [--flush-interval N]
/// [--no-drain] [-q] [--image-opts] [--json] [--plot FILE.svg] [--random SEED] [--cache-size SIZE]
/// FILE`.
///
/// `--random SEED` (Strata's, not qemu-img's): offsets are pseudo-random multiples of the
/// buffer size instead of stepping. `--cache-size` is the qcow2 metadata cache budget. Writes
/// carry `--pattern` (default 0, as qemu-img's), so both tools write the same image. `-i native`
/// (and `-n`, which means `-t none -i native`) is Linux AIO, which Strata does not have: refused
/// with the equivalent that exists, instead of quietly running another engine.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    let args = Args::parse(
        argv,
        &[
            "-c",
            "-d",
            "-f",
            "-s",
            "-S",
            "-o",
            "-t",
            "-i",
            "--pattern",
            "--flush-interval",
            "--random",
            "--plot",
        ],
        &["-w", "-q", "-n", "--no-drain", "--image-opts", "-U", "--json"],
    )?;
    let spec = &args.exactly(1, "one image")?[0];
    let count = args.number("-c", 75_000)?;
    let depth = args.number("-d", 64)?.clamp(1, 1024) as usize;
    let bufsize = args.size("-s", 4096)?;
    let step = args.size("-S", 0)?;
    let step = if step == 0 { bufsize } else { step };
    let start = args.size("-o", 0)?;
    let write = args.has("-w");
    let pattern = args.number("--pattern", 0)? as u8;
    let flush_interval = args.number("--flush-interval", 0)?;
    let native = args.has("-n");
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        read_only: !write,
        force_share: args.has("-U"),
        cache: image::cache_mode(args.value("-t").or(native.then_some("none")))?,
        engine: image::engine(args.value("-i").or(native.then_some("native")))?,
        ..args.image_options()?
    };
    let random = args.value("--random").map(|_| args.number("--random", 1)).transpose()?;
    let quiet = args.has("-q");
    let json = args.has("--json");
    let plot = args.value("--plot").map(PathBuf::from);
    let job = Job {
        count,
        depth,
        bufsize,
        step,
        start,
        write,
        pattern,
        flush_interval,
        random,
    };
    image::with_image(spec, &opts, |img| job.run(img, quiet, json, plot.as_deref().map(|p| (p, spec.as_str()))))
}

/// One benchmark's parameters (qemu-img bench's).
struct Job {
    count: u64,
    depth: usize,
    bufsize: u64,
    step: u64,
    start: u64,
    write: bool,
    pattern: u8,
    flush_interval: u64,
    random: Option<u64>,
}

impl Job {
    fn run(&self, img: &Image<'_, '_>, quiet: bool, json: bool, plot: Option<(&Path, &str)>) -> Result<(), ImgError> {
        let Job {
            count,
            depth,
            bufsize,
            step,
            start,
            write,
            pattern,
            flush_interval,
            random,
        } = *self;
        let rng = Cell::new(random.unwrap_or(1) | 1);
        let size = img.backend.size();
        if bufsize == 0 || bufsize > size || start >= size {
            return Err(ImgError::usage(format!(
                "buffer size {bufsize} and offset {start} must fit in the image ({size} bytes)"
            )));
        }
        if !quiet && !json {
            println!(
            "Sending {count} {} requests, {bufsize} bytes each, {depth} in parallel ({})",
            if write { "write" } else { "read" },
            match random {
                Some(seed) => format!("random offsets, seed {seed}"),
                None => format!("starting at offset {start}, step size {step}"),
            }
        );
        }

        let issued = Cell::new(0u64);
        let next_offset = Cell::new(start);
        let writes_since_flush = Cell::new(0u64);
        let backend = &img.backend;
        // Completions per interval (ns since t0), from intervals of 2^20 ns (about 1 ms; a power
        // of two, so counting one is a shift) up, on the backend's clock.
        let timeline = RefCell::new(Timeline::new(0, 1 << 20));
        let t0_ns = image::now_ns();
        let worker = || async {
            let mut buf = AlignedBuf::new(bufsize as usize);
            buf.as_mut_slice().fill(pattern);
            while issued.get() < count {
                issued.set(issued.get() + 1);
                let mut offset = next_offset.get();
                if offset + bufsize > size {
                    offset = 0;
                }
                next_offset.set(wrap(offset + step, size));
                if random.is_some() {
                    // xorshift64*: a reproducible spread of aligned offsets.
                    let mut x = rng.get();
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    rng.set(x);
                    let slots = ((size - start) / bufsize).max(1);
                    offset = start + (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % slots * bufsize;
                }
                let result = if write {
                    backend.write(offset, buf.as_slice()).await
                } else {
                    backend.read(offset, buf.as_mut_slice()).await
                };
                result.map_err(|e| ImgError::failed(format!("request at byte {offset} failed: {e}")))?;
                // The backend's clock read when the request finished: one clock read fewer per request.
                timeline.borrow_mut().record(backend.last_done().saturating_sub(t0_ns));
                if write && flush_interval > 0 {
                    writes_since_flush.set(writes_since_flush.get() + 1);
                    if writes_since_flush.get() >= flush_interval {
                        writes_since_flush.set(0);
                        backend
                            .flush()
                            .await
                            .map_err(|e| ImgError::failed(format!("flush failed: {e}")))?;
                    }
                }
            }
            Ok::<(), ImgError>(())
        };
        // Each round of polls is one submission batch, as a virtio queue's requests are in QEMU
        // (`blk_io_plug`): devices that queue see the round's requests together.
        let results = super::rounds::run_all((0..depth).map(|_| worker()), || backend.plug(), || backend.unplug());
        let elapsed_ns = image::now_ns().saturating_sub(t0_ns);
        let seconds = elapsed_ns as f64 / 1e9;
        results.into_iter().collect::<Result<Vec<()>, ImgError>>()?;

        let stats = img.backend.stats();
        let kind = stats.kind(if write { OpKind::Write } else { OpKind::Read });
        let iops = count as f64 / seconds.max(1e-9);
        let mbps = iops * bufsize as f64 / 1e6;
        let (p50, p99, p999) = (
            kind.percentile_ns(500),
            kind.percentile_ns(990),
            kind.percentile_ns(999),
        );
        let mut timeline = timeline.into_inner();
        timeline.finish(elapsed_ns);
        let series = BenchSeries {
            latency_histogram: series::log2_buckets(&kind.histogram),
            iops_series: IopsSeries::from_timeline(&timeline, 0, elapsed_ns),
        };
        if let Some((path, image)) = plot {
            let title = format!(
                "qemu-runner img bench {image}: {} {}, {bufsize}-byte requests, depth {depth}, {count} requests",
                if write { "write" } else { "read" },
                if random.is_some() { "random" } else { "sequential" },
            );
            let engine = engine_summary(img);
            let subtitle = format!(
                "{iops:.0} IOPS, {mbps:.1} MB/s in {seconds:.3} s; latency p50 <= {:.1} us, p99 <= {:.1} us, p99.9 <= {:.1} us; {engine}",
                p50 as f64 / 1e3,
                p99 as f64 / 1e3,
                p999 as f64 / 1e3,
            );
            crate::plot::write_bench_svg(path, &title, &subtitle, &series)
                .map_err(|e| ImgError::failed(format!("--plot: cannot write {}: {e}", path.display())))?;
        }
        if json {
            let v = serde_json::json!({
                "rw": if write { "write" } else { "read" }, "count": count, "depth": depth, "bufsize": bufsize,
                "seconds": seconds, "iops": iops, "mb_per_s": mbps,
                "mean_ns": kind.total_ns / kind.ops.max(1), "p50_ns_le": p50, "p99_ns_le": p99, "p999_ns_le": p999,
                "engine": img.files.first().map(|f| format!("{:?}", f.engine())),
                "engine_counts": img.files.first().and_then(|f| f.engine_counts()).map(|c| serde_json::json!({
                    "inline": c.inline, "queued": c.queued, "ran_by_caller": c.ran_by_caller, "merged": c.merged,
                })),
                "latency_histogram": series.latency_histogram, "iops_series": series.iops_series,
            });
            println!("{v}");
        } else if !quiet {
            println!("Run completed in {seconds:.3} seconds.");
            println!(
            "strata: {iops:.0} IOPS, {mbps:.1} MB/s; latency mean {:.1} us, p50 <= {:.1} us, p99 <= {:.1} us, p99.9 <= {:.1} us ({})",
            (kind.total_ns / kind.ops.max(1)) as f64 / 1e3,
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            p999 as f64 / 1e3,
            engine_summary(img),
        );
        }
        Ok(())
    }
}

/// `x % size`, without the division while `x` is already below `size` (every request but the
/// one that wraps).
fn wrap(x: u64, size: u64) -> u64 {
    if x < size {
        x
    } else {
        x % size
    }
}

/// The image file's engine and, for the adaptive one, where its requests ran: "Adaptive: 2%
/// inline, 98% queued (31% of those run by the caller, 40% merged into the read before)".
fn engine_summary(img: &Image<'_, '_>) -> String {
    let Some(file) = img.files.first() else { return String::new() };
    let name = format!("{:?}", file.engine());
    match file.engine_counts() {
        Some(c) if c.inline + c.queued > 0 => {
            let total = (c.inline + c.queued) as f64;
            format!(
                "{name}: {:.0}% inline, {:.0}% queued ({:.0}% of those run by the caller, {:.0}% merged into the read before)",
                c.inline as f64 * 100.0 / total,
                c.queued as f64 * 100.0 / total,
                c.ran_by_caller as f64 * 100.0 / (c.queued.max(1)) as f64,
                c.merged as f64 * 100.0 / (c.queued.max(1)) as f64,
            )
        }
        _ => name,
    }
}
