//! `qemu-runner img`: qemu-img's commands over Strata's block layer, on host files.
//!
//! qemu-img's and qemu-io's commands (the table [`COMMANDS`] lists them), with their syntax where
//! they overlap so the two can be run side by side. Options use the shared grammar (`--image-opts`).
//! Exit statuses follow qemu-img: 0 success, 1 failure (for `compare`: the images differ),
//! 2 usage error (for `compare`: any error).

mod aio;
pub mod amend;
mod args;
mod bench;
pub mod clock;
pub mod blkdebug_config;
pub mod check;
mod commit;
mod compare;
mod compress;
pub mod convert;
mod convert_copy;
mod copy_hooks;
mod create;
mod extents;
mod holes;
mod human;
pub mod crashlog;
pub mod end;
pub mod image;
pub mod info;
pub mod io;
pub mod leaf_logs;
pub mod logcut;
pub mod logwrites;
pub mod map;
pub mod measure;
mod progress;
mod qjson;
pub(crate) mod output;
pub mod resize;
pub mod snapshot;
mod rebase;
pub mod replay;
pub mod rng;
mod rounds;
pub(crate) mod resolve;
mod stress;
pub mod stress_check;

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

/// One `img` command: its name, its usage lines in the help, and what runs it (returning the
/// exit status, or an error that [`main`] prints).
struct Command {
    name: &'static str,
    usage: &'static str,
    run: fn(&[String]) -> Result<i32, ImgError>,
}

/// Every `img` command, in the order the help lists them. The help and the unknown-command
/// message are both made from this table.
const COMMANDS: &[Command] = &[
    Command {
        name: "info",
        usage: "info [-f FMT] [--image-opts] [-U] [--backing-chain] [--output=human|json] FILE",
        run: |a| info::run(a).map(|()| 0),
    },
    Command {
        name: "map",
        usage: "map [-f FMT] [--image-opts] [-U] [--output=human|json] FILE",
        run: |a| map::run(a).map(|()| 0),
    },
    Command {
        name: "convert",
        usage: "convert [-f FMT] [--image-opts] [-t CACHE] [-T SRC_CACHE] [-l snapshot.name=NAME] [-p] [-q] [-O raw|qcow2] [-o OPTIONS] [-B BACKING [-F FMT]] [-c] [-n] [-W] [-m N] [-S SIZE] [-r RATE] [-C] SRC DST",
        run: |a| convert::run(a).map(|()| 0),
    },
    Command {
        name: "resize",
        usage: "resize [-f FMT] [--image-opts] [--shrink] [-q] FILE [+|-]SIZE   (qcow2 and raw files)",
        run: |a| resize::run(a).map(|()| 0),
    },
    Command {
        name: "amend",
        usage: "amend [-f FMT] [--image-opts] [-p] [-q] -o OPTIONS FILE
        (qcow2: lazy_refcounts=on|off, size; compat and refcount_bits only as they are so far)",
        run: |a| amend::run(a).map(|()| 0),
    },
    Command {
        name: "measure",
        usage: "measure [--output=human|json] [-O qcow2|raw] [-o OPTIONS] [-f FMT] [--image-opts] [-l SNAPSHOT] [-U] [--size N | FILE]
        (qemu-img's required, fully allocated and bitmaps sizes of a new image)",
        run: |a| measure::run(a).map(|()| 0),
    },
    Command {
        name: "snapshot",
        usage: "snapshot [-f FMT] [--image-opts] [-U] [-q] [-l | -c NAME | -a NAME | -d NAME] FILE
        (qcow2 internal snapshots: list (the default), create, apply (id or name), delete (name))",
        run: |a| snapshot::run(a).map(|()| 0),
    },
    Command {
        name: "commit",
        usage: "commit [-f FMT] [--image-opts] [-b BASE] [-d] [-p] [-q] [-r RATE] FILE
        (copies what FILE holds above BASE, default its backing file, into BASE; then empties FILE
         unless -d, which -b implies)",
        run: |a| commit::run(a).map(|()| 0),
    },
    Command {
        name: "rebase",
        usage: "rebase [-f FMT] [--image-opts] [-q] [-u] -b BACKING [-F FMT] FILE
        (qcow2: copies into FILE what differs between the old and the new backing file, then
         rewrites the name and format in the header; -u only rewrites them; -b \"\" removes it)",
        run: |a| rebase::run(a).map(|()| 0),
    },
    Command {
        name: "check",
        usage: "check [-f FMT] [--image-opts] [-r leaks|all] [--output=human|json] [-U] [-q] [--budget SIZE] FILE
        (qcow2; exit status as qemu-img check: 0 clean, 1 check failed, 2 corruptions, 3 leaks,
         63 no checks for the format; --budget bounds its memory, default 16M)",
        run: check::run,
    },
    Command {
        name: "compare",
        usage: "compare [-f FMT] [-F FMT] [-s] [-q] [-U] A B",
        // qemu-img compare: 0 equal, 1 different, 2 for any error.
        run: |a| {
            Ok(compare::run(a).unwrap_or_else(|e| {
                eprintln!("qemu-runner img: {e}");
                2
            }))
        },
    },
    Command {
        name: "create",
        usage: "create [-f qcow2|raw] [-b BACKING -F FMT] [-o OPTIONS] [-u] [-q] FILE [SIZE]
        (OPTIONS: cluster_size, extended_l2, lazy_refcounts, refcount_bits, backing_file, backing_fmt)",
        run: |a| create::run(a).map(|()| 0),
    },
    Command {
        name: "bench",
        usage: "bench [-c COUNT] [-d DEPTH] [-f FMT | --image-opts] [-s SIZE] [-S STEP] [-o OFFSET]
        [-w] [-t none|writeback] [-i threads|io_uring] [-n] [-U] [--flush-interval N] [--no-drain]
        [--pattern N (default 0)] [--random SEED] [-q] [--json] [--plot FILE.svg] FILE
        (-i native and -n, Linux AIO in qemu-img, are refused: use -t none -i io_uring;
         --json adds latency_histogram and iops_series, --plot draws them as an SVG)",
        run: |a| bench::run(a).map(|()| 0),
    },
    Command {
        name: "io",
        usage: "io [-f FMT] [--image-opts] [-t CACHE] [-r] [-U] -c CMD [-c CMD ...] FILE
        (qemu-io's read [-P pat] [-q], write [-P pat | -z [-u]] [-q], discard [-q], flush;
         aio_read, aio_write (same options, run while later commands go on), aio_flush;
         with a blkdebug node: break EVENT TAG, remove_break TAG, resume TAG, wait_break TAG;
         exit status as qemu-io: 0 all commands succeeded, 1 otherwise)",
        run: |a| Ok(io::main(a)),
    },
    Command {
        name: "stress",
        usage: "stress [-f FMT] [--image-opts] [-t CACHE] --seed N --ops N --qd N [--max-len SIZE]
        [--block SIZE] [--offset SIZE] [--length SIZE] [--mix R:W:Z:ZU:D:F] [--json] [-v] FILE
        (seeded verified mix at a queue depth; prints 'flush K covers ops 0..N' markers;
         with --check N [--sector SIZE] it runs nothing and checks a crashed disk instead:
         ops 0..N stable, later ones possibly landed, per sector, default 512)",
        run: |a| stress::run(a).map(|()| 0),
    },
    Command {
        name: "replay",
        usage: "replay LOG BASE OUT --cut SEQ [--drop SEED] | replay LOG --plan N [--seed S]
        (crash logs: copy BASE to OUT and apply what a crash at SEQ could leave)",
        run: |a| replay::run(a).map(|()| 0),
    },
];

/// The part of the help after the command list.
const HELP_TAIL: &str = "\
FILE is a file name (format probed unless -f), or with --image-opts an options string in
Strata's grammar, e.g. driver=raw,offset=1M,size=64M,file=disk.img.
-t none opens with O_DIRECT and queues requests (io_uring or threads); writeback (the default)
runs them in the calling thread through the page cache.
qcow2 images open with their backing chains and data files. Backing and data-file names
resolve relative to the image naming them and must stay inside the directory tree of the
image given, unless --allow-backing-anywhere; protocol prefixes (json:, nbd:) are refused.
--cache-size SIZE sets the qcow2 metadata cache budget (default 4M, 4 KiB slices).
--cache-size and --allow-backing-anywhere work with every command, before or after its name.
Exit status: 0 ok, 1 failed (compare: images differ), 2 usage error (compare: any error).
";

/// Help for `img`: every command of [`COMMANDS`] with its usage.
pub fn help() -> String {
    let mut text =
        String::from("qemu-runner img COMMAND [OPTIONS]: qemu-img's commands over Strata's block layer\n\n");
    for command in COMMANDS {
        text.push_str("  ");
        text.push_str(command.usage);
        text.push('\n');
    }
    text.push('\n');
    text.push_str(HELP_TAIL);
    text
}

/// The names of all commands, for the unknown-command message.
fn command_names() -> String {
    COMMANDS.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

/// The image-wide options (`--cache-size SIZE`, `--cache-size=SIZE`, `--allow-backing-anywhere`)
/// at the start of `args` and what follows them; `None` if `args` does not start with one.
fn leading_image_options(args: &[String]) -> Option<(Vec<String>, &[String])> {
    let mut at = 0;
    while let Some(word) = args.get(at) {
        let name = word.split_once('=').map_or(word.as_str(), |(n, _)| n);
        if args::IMAGE_SWITCHES.contains(&word.as_str()) || (args::IMAGE_FLAGS.contains(&name) && word.contains('=')) {
            at += 1;
        } else if args::IMAGE_FLAGS.contains(&word.as_str()) {
            at += 2;
        } else {
            break;
        }
    }
    let at = at.min(args.len());
    (at > 0).then(|| (args[..at].to_vec(), &args[at..]))
}

/// Runs `img ARGS` and returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        print!("{}", help());
        return 2;
    };
    if matches!(cmd.as_str(), "-h" | "--help" | "help") {
        print!("{}", help());
        return 0;
    }
    // The image-wide options may also come before the command (`img --cache-size 64M map x`).
    if let Some((leading, after)) = leading_image_options(args) {
        let mut moved = after.to_vec();
        if moved.is_empty() {
            eprintln!("qemu-runner img: a command is needed after {}", leading.join(" "));
            return 2;
        }
        moved.splice(1..1, leading);
        return main(&moved);
    }
    let result = match COMMANDS.iter().find(|c| c.name == cmd) {
        Some(command) => (command.run)(rest),
        None => Err(ImgError::usage(format!(
            "unknown img command \"{cmd}\" ({})",
            command_names()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_and_unknown_command_name_every_command() {
        let help = help();
        let names = command_names();
        for command in COMMANDS {
            assert!(help.contains(&format!("\n  {} ", command.name)), "{} not in help", command.name);
            assert!(names.contains(command.name));
        }
        assert_eq!(names.split(", ").count(), COMMANDS.len());
    }
}
