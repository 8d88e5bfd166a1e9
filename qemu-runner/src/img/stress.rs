//! `img stress`: the block layer's seeded stress engine (`strata_block::cmd::stress`) on an
//! image: a reproducible mix of reads (verified), writes, write-zeroes, discards and flushes at a
//! queue depth, printing a marker after every flush (`flush K covers ops 0..N`, or with
//! `--json` one `{"type":"stress_flush","flush":K,"ops":N}` line) for a crash checker to replay.
//!
//! `qemu-runner img stress [-f FMT] [--image-opts] [-t CACHE] --seed N --ops N --qd N
//! [--max-len SIZE] [--block SIZE] [--offset SIZE] [--length SIZE] [--mix R:W:Z:ZU:D:F] [--json]
//! [-v] FILE`. Exit status: 0 done and verified, 1 an op failed or a read differed from the
//! model, 2 usage error.
//!
//! `--check N [--sector SIZE]` runs nothing: it reads the disk and checks it as a crash left it
//! after `flush K covers ops 0..N` (see [`super::stress_check`]), with the same options naming
//! the run (`--qd` is not needed).

use futures::future::join_all;
use strata_block::cmd::stress::{Config, Event, Mix, Stress, Summary};

use super::args::Args;
use super::image::{self, block_on, AlignedBuf, Image, OpenOptions};
use super::ImgError;

/// Largest data buffer per worker (longer ops move in pieces).
const MAX_WORKER_BUFFER: u64 = 1 << 20;

/// Runs `img stress ARGS`.
pub fn run(argv: &[String]) -> Result<(), ImgError> {
    let args = Args::parse(
        argv,
        &["-f", "-t", "-i", "--seed", "--ops", "--qd", "--max-len", "--block", "--offset", "--length", "--mix", "--check", "--sector"],
        &["--image-opts", "--json", "-v"],
    )?;
    let spec = &args.exactly(1, "one image")?[0];
    let check = args.value("--check").map(|_| args.number("--check", 0)).transpose()?;
    for required in ["--seed", "--ops", "--qd"] {
        if args.value(required).is_none() && !(required == "--qd" && check.is_some()) {
            return Err(ImgError::usage(format!("{required} is required")));
        }
    }
    let ops = u32::try_from(args.number("--ops", 0)?).map_err(|_| ImgError::usage("--ops: too many".into()))?;
    let qd = u32::try_from(args.number("--qd", 1)?).map_err(|_| ImgError::usage("--qd: expected 1 to 64".into()))?;
    let mix = match args.value("--mix") {
        None => Mix::default(),
        Some(m) => Mix::parse(m).ok_or_else(|| ImgError::usage(format!("--mix {m}: expected R:W:Z:ZU:D:F weights")))?,
    };
    let job = Job {
        seed: args.number("--seed", 0)?,
        ops,
        qd,
        max_len: args.value("--max-len").map(|_| args.size("--max-len", 0)).transpose()?,
        block: args.size("--block", 4096)?,
        offset: args.size("--offset", 0)?,
        length: args.value("--length").map(|_| args.size("--length", 0)).transpose()?,
        mix,
        json: args.has("--json"),
        verbose: args.has("-v"),
        check: check.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        sector: usize::try_from(args.size("--sector", 512)?).map_err(|_| ImgError::usage("--sector: too large".into()))?,
    };
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        cache: image::cache_mode(args.value("-t"))?,
        engine: image::engine(args.value("-i"))?,
        ..args.image_options()?
    };
    image::with_image(spec, &opts, |img| {
        let result = job.run(img);
        // Close (flush) even after a failed op, so what was written is on the disk.
        super::io::close(img, false)?;
        result
    })
}

struct Job {
    seed: u64,
    ops: u32,
    qd: u32,
    max_len: Option<u64>,
    block: u64,
    offset: u64,
    length: Option<u64>,
    mix: Mix,
    json: bool,
    verbose: bool,
    check: Option<u32>,
    sector: usize,
}

impl Job {
    fn run(&self, img: &Image<'_, '_>) -> Result<(), ImgError> {
        let size = img.backend.size();
        let block = u32::try_from(self.block).map_err(|_| ImgError::usage("--block: too large".into()))?;
        let len = self.length.unwrap_or(size.saturating_sub(self.offset) / self.block.max(1) * self.block);
        let max_len = self.max_len.unwrap_or((64 << 10).min(len));
        let cfg = Config { seed: self.seed, ops: self.ops, qd: self.qd, max_len, block, start: self.offset, len, mix: self.mix };
        cfg.check(size, usize::MAX).map_err(|e| ImgError::usage(e.to_string()))?;
        if let Some(covered) = self.check {
            return check_disk(img, &cfg, covered, self.sector);
        }
        let mut table = vec![0u32; cfg.blocks() as usize];
        let per_worker = max_len.min(MAX_WORKER_BUFFER) as usize;
        let mut buffers: Vec<AlignedBuf> = (0..self.qd).map(|_| AlignedBuf::new(per_worker)).collect();
        let (json, verbose) = (self.json, self.verbose);
        let mut sink = |event: Event| print_event(&event, json, verbose);
        let engine = Stress::new(&img.backend, cfg, &mut table, &mut sink).map_err(|e| ImgError::usage(e.to_string()))?;
        block_on(join_all(buffers.iter_mut().map(|b| engine.worker(b.as_mut_slice()))));
        let summary = block_on(engine.finish());
        match summary {
            Ok(s) => {
                print_summary(&cfg, &s, json);
                Ok(())
            }
            Err(e) => Err(ImgError::failed(format!("stress: {e}"))),
        }
    }
}

/// `--check`: reads the whole disk and checks it (see [`super::stress_check`]).
fn check_disk(img: &Image<'_, '_>, cfg: &Config, covered: u32, sector: usize) -> Result<(), ImgError> {
    let size = usize::try_from(img.backend.size()).map_err(|_| ImgError::usage("the disk is too large to check in memory".into()))?;
    let mut disk = vec![0u8; size];
    for (i, chunk) in disk.chunks_mut(1 << 20).enumerate() {
        block_on(img.backend.read((i as u64) << 20, chunk)).map_err(|e| ImgError::failed(format!("reading at {}: {e}", (i as u64) << 20)))?;
    }
    let done = super::stress_check::check(cfg, covered, &disk, sector).map_err(|e| ImgError::failed(format!("stress --check {covered}: {e}")))?;
    println!("stress --check {covered}: {} sectors as the model says ({} of them from later ops)", done.sectors, done.later);
    Ok(())
}

fn print_event(event: &Event, json: bool, verbose: bool) {
    match event {
        Event::Flush(m) if json => {
            let mut line = String::new();
            let _ = m.write_json(&mut line);
            println!("{line}");
        }
        Event::Flush(m) => println!("{m}"),
        Event::Op { op, verified } if verbose => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"type": "stress_op", "op": op.index, "kind": op.kind.name(), "offset": op.offset, "len": op.len, "verified": verified})
                );
            } else {
                println!("op {} {} {} bytes at offset {} ({verified} bytes verified)", op.index, op.kind.name(), op.len, op.offset);
            }
        }
        Event::Op { .. } => {}
    }
}

fn print_summary(cfg: &Config, s: &Summary, json: bool) {
    let [reads, writes, zeroes, discards, flushes] = s.by_kind;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "type": "stress_done", "seed": cfg.seed, "ops": s.ops, "qd": cfg.qd, "reads": reads, "writes": writes,
                "zeroes": zeroes, "discards": discards, "flushes": flushes, "bytes_read": s.bytes_read,
                "bytes_written": s.bytes_written, "verified": s.verified, "max_in_flight": s.max_in_flight,
            })
        );
    } else {
        println!(
            "stress: seed {} qd {}: {} ops ({reads} reads, {writes} writes, {zeroes} write-zeroes, {discards} discards, {flushes} flushes); {} bytes verified, at most {} in flight",
            cfg.seed, cfg.qd, s.ops, s.verified, s.max_in_flight
        );
    }
}
