//! `img io`: qemu-io's data commands (`read`, `write`, `discard`, `flush`; the block layer's
//! `strata_block::cmd`) on an image, with qemu-io's syntax, messages and exit status, so the two
//! run side by side on copies of the same image.
//!
//! `qemu-runner img io [-f FMT] [--image-opts] [-t CACHE] [-n] [-r] [-U] -c CMD [-c CMD ...] FILE`.
//! `-t` as qemu-io's: writethrough (the default, as qemu-io's: each write and write-zeroes flushes
//! before it completes), writeback, unsafe, none (`-n`), directsync.
//! Commands run in order; a failing one does not stop the others. Exit status as qemu-io:
//! 0 when every command succeeded, 1 otherwise (bad arguments and failed opens too).

use std::fmt::Write as _;

use strata_block::cmd::{self, Status};

use super::aio;
use super::args::Args;
use super::image::{self, block_on, AlignedBuf, Image, OpenOptions};
use super::ImgError;

/// The data buffer: requests larger than this move in pieces.
const BUFFER: usize = 1 << 20;

/// What one `img io` run printed, and its exit status.
#[derive(Debug, Default)]
pub struct Output {
    /// Exit status (qemu-io's: 0 or 1).
    pub status: i32,
    /// What qemu-io prints on stdout.
    pub stdout: String,
    /// What qemu-io prints on stderr.
    pub stderr: String,
}

/// Runs `img io ARGS`, printing as qemu-io; returns the exit status.
pub fn main(argv: &[String]) -> i32 {
    let out = run(argv);
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    out.status
}

/// Runs `img io ARGS` and returns what it printed.
pub fn run(argv: &[String]) -> Output {
    let mut out = Output::default();
    let (commands, rest) = split_commands(argv);
    let result = match commands {
        Ok(commands) => open_and_run(&commands, &rest, &mut out),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let _ = writeln!(out.stderr, "qemu-runner img io: {e}");
        out.status = 1;
    }
    out
}

/// Takes the `-c CMD` / `--cmd CMD` / `-cCMD` pairs out of `argv` (Args keeps one value per
/// flag); returns them and the other arguments.
fn split_commands(argv: &[String]) -> (Result<Vec<String>, ImgError>, Vec<String>) {
    let (mut commands, mut rest) = (Vec::new(), Vec::new());
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            rest.push(arg.clone());
            rest.extend(it.by_ref().cloned());
            break;
        }
        if arg == "-c" || arg == "--cmd" {
            match it.next() {
                Some(c) => commands.push(c.clone()),
                None => return (Err(ImgError::usage(format!("{arg} needs a value"))), rest),
            }
        } else if let Some(c) = arg.strip_prefix("--cmd=").or_else(|| arg.strip_prefix("-c").filter(|c| !c.is_empty())) {
            commands.push(c.to_string());
        } else {
            rest.push(arg.clone());
        }
    }
    (Ok(commands), rest)
}

fn open_and_run(commands: &[String], argv: &[String], out: &mut Output) -> Result<(), ImgError> {
    let args = Args::parse(argv, &["-f", "-t", "-i"], &["-r", "-n", "-U", "--image-opts"])?;
    let spec = &args.exactly(1, "one image")?[0];
    if commands.is_empty() {
        return Err(ImgError::usage("no -c command given (interactive mode is not supported)".into()));
    }
    let cache = args.value("-t").or(args.has("-n").then_some("none"));
    // qemu-io's default cache mode is writethrough (its backend's write cache off): every
    // write and write-zeroes flushes before it completes, so a failing metadata write-back
    // fails that request, as in qemu-io.
    let write_through = matches!(cache, None | Some("writethrough") | Some("directsync"));
    let opts = OpenOptions {
        format: args.value("-f").map(str::to_string),
        image_opts: args.has("--image-opts"),
        read_only: args.has("-r"),
        force_share: args.has("-U"),
        cache: image::cache_mode(cache.filter(|c| *c != "writethrough"))?,
        engine: image::engine(args.value("-i"))?,
        ..args.image_options()?
    };
    image::with_image(spec, &opts, |img| {
        img.backend.set_write_through(write_through);
        let mut buf = AlignedBuf::new(BUFFER);
        let mut failed = false;
        let mut session = aio::Session::new(&img.backend);
        for line in commands {
            if let Some(ok) = session.try_run(line, &mut out.stdout) {
                failed |= !ok;
                continue;
            }
            match cmd::parse(line) {
                Ok(c) => {
                    let mut report = String::new();
                    let status = session.block_on(cmd::run(&img.backend, &c, buf.as_mut_slice(), &mut report, image::now_ns), &mut out.stdout);
                    out.stdout.push_str(&report);
                    failed |= status == Status::Failed;
                }
                Err(e) => {
                    let sink = if e.to_stderr() { &mut out.stderr } else { &mut out.stdout };
                    let _ = writeln!(sink, "{e}");
                    if let Some(usage) = e.usage_after() {
                        let _ = writeln!(out.stdout, "{usage}");
                    }
                    failed = true;
                }
            }
        }
        failed |= !session.finish(&mut out.stdout);
        drop(session);
        if let Err(e) = close(img, opts.read_only) {
            let _ = writeln!(out.stderr, "qemu-runner img io: {e}");
            failed = true;
        }
        out.status = i32::from(failed);
        Ok(())
    })
}

/// Ends a session that may have written: flushes the image. **The one place `img io` and
/// `img stress` close an image** (the rest of the close happens when `with_image` returns);
/// a clean close of the format (qcow2's dirty bit, cache write-back) belongs here.
pub(super) fn close(img: &Image<'_, '_>, read_only: bool) -> Result<(), ImgError> {
    if read_only {
        return Ok(());
    }
    block_on(img.backend.flush()).map_err(|e| ImgError::failed(format!("flush at close failed: {e}")))
}
