//! `qemu-runner img`: qemu-img's commands over Strata's block layer, on host files.
//!
//! `info`, `map`, `convert -O raw`, `compare` and `bench`, with qemu-img's syntax where they overlap so
//! the two can be run side by side. Options use the shared grammar (`--image-opts`).
//! Exit statuses follow qemu-img: 0 success, 1 failure (for `compare`: the images differ),
//! 2 usage error (for `compare`: any error).

mod args;
mod bench;
mod compare;
mod convert;
mod create;
pub mod crashlog;
pub mod image;
mod info;
pub mod io;
pub mod map;
mod resize;
pub mod replay;
pub(crate) mod resolve;
mod stress;

use std::fmt;

/// The block layer the commands run on (for callers that inspect open images).
pub use strata_block as block;

/// An `img` failure with its exit status.
#[derive(Debug)]
pub struct ImgError {
    message: String,
    usage: bool,
}

impl ImgError {
    /// A usage error (exit 2).
    pub fn usage(message: String) -> Self {
        Self { message, usage: true }
    }

    /// An operation that failed (exit 1).
    pub fn failed(message: String) -> Self {
        Self { message, usage: false }
    }
}

impl fmt::Display for ImgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Help for `img`.
pub const HELP: &str = "\
qemu-runner img COMMAND [OPTIONS]: qemu-img's commands over Strata's block layer

  info [-f FMT] [--image-opts] [-U] [--output=human|json] FILE
  map [-f FMT] [--image-opts] [-U] [--output=human|json] FILE
  convert [-f FMT] [--image-opts] [-t CACHE] [-T SRC_CACHE] [-l snapshot.name=NAME] -O raw SRC DST
  resize [-f FMT] [--image-opts] [-q] FILE [+]SIZE   (qcow2, growing)
  compare [-f FMT] [-F FMT] [-s] [-q] [-U] A B
  create [-f qcow2|raw] [-b BACKING -F FMT] [-o OPTIONS] [-u] [-q] FILE [SIZE]
        (OPTIONS: cluster_size, extended_l2, lazy_refcounts, refcount_bits, backing_file, backing_fmt)
  bench [-c COUNT] [-d DEPTH] [-f FMT] [-s SIZE] [-S STEP] [-o OFFSET] [-w]
        [-t none|writeback] [-i threads|native|io_uring] [--flush-interval N]
        [--pattern N] [-q] [--json] FILE
  io [-f FMT] [--image-opts] [-t CACHE] [-r] [-U] -c CMD [-c CMD ...] FILE
        (qemu-io's read [-P pat] [-q], write [-P pat | -z [-u]] [-q], discard [-q], flush;
         exit status as qemu-io: 0 all commands succeeded, 1 otherwise)
  stress [-f FMT] [--image-opts] [-t CACHE] --seed N --ops N --qd N [--max-len SIZE]
        [--block SIZE] [--offset SIZE] [--length SIZE] [--mix R:W:Z:ZU:D:F] [--json] [-v] FILE
        (seeded verified mix at a queue depth; prints 'flush K covers ops 0..N' markers)
  replay LOG BASE OUT --cut SEQ [--drop SEED] | replay LOG --plan N [--seed S]
        (crash logs: copy BASE to OUT and apply what a crash at SEQ could leave)

FILE is a file name (format probed unless -f), or with --image-opts an options string in
Strata's grammar, e.g. driver=raw,offset=1M,size=64M,file=disk.img.
-t none opens with O_DIRECT and queues requests (io_uring or threads); writeback (the default)
runs them in the calling thread through the page cache.
qcow2 images open with their backing chains and data files. Backing and data-file names
resolve relative to the image naming them and must stay inside the directory tree of the
image given, unless --allow-backing-anywhere; protocol prefixes (json:, nbd:) are refused.
--cache-size SIZE sets the qcow2 metadata cache budget (default 4M, 4 KiB slices).
Exit status: 0 ok, 1 failed (compare: images differ), 2 usage error (compare: any error).
";

/// Runs `img ARGS` and returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        print!("{HELP}");
        return 2;
    };
    let result = match cmd.as_str() {
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            return 0;
        }
        "info" => info::run(rest).map(|()| 0),
        "map" => map::run(rest).map(|()| 0),
        "convert" => convert::run(rest).map(|()| 0),
        "resize" => resize::run(rest).map(|()| 0),
        "create" => create::run(rest).map(|()| 0),
        "bench" => bench::run(rest).map(|()| 0),
        "io" => return io::main(rest),
        "stress" => stress::run(rest).map(|()| 0),
        "replay" => replay::run(rest).map(|()| 0),
        "compare" => match compare::run(rest) {
            Ok(status) => return status,
            Err(e) => {
                eprintln!("qemu-runner img: {e}");
                return 2;
            }
        },
        other => Err(ImgError::usage(format!(
            "unknown img command \"{other}\" (info, map, convert, compare, bench)"
        ))),
    };
    match result {
        Ok(status) => status,
        Err(e) => {
            eprintln!("qemu-runner img: {e}");
            if e.usage {
                2
            } else {
                1
            }
        }
    }
}
