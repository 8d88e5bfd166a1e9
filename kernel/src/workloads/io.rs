//! `io OPTIONS -c CMD [-c CMD ...]`: qemu-io's data commands (`strata_block::cmd`) on a node,
//! one after the other, printing qemu-io's lines; one `@{"type":"io",...}` record per command
//! (its text, whether it succeeded, and what it printed).
//!
//! QEMU's `-append` keeps no quotes, so a command is one word whose commas separate qemu-io's
//! words: `io disk0 -c write,-P,0xaa,0,64k -c read,-P,0xaa,0,64k -c flush`. A failing command
//! does not stop the others; the exit code is 1 if any failed (as qemu-io).

use core::fmt::{self, Write};

use strata_block::cmd::{self, Command, Status};
use strata_block::BackendOptions;

use super::data;
use crate::cmdline::IoCmds;
use crate::devices::Catalog;
use crate::report::Record;
use crate::stack::{self, KBackend};
use crate::{console, executor, exit_code, println};

/// What one command printed, kept for its record (cut at the capacity).
type Transcript = heapless::String<512>;

/// Writes to the console and keeps a copy.
struct Tee<'a>(&'a mut Transcript);

impl Write for Tee<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        console::write_fmt(format_args!("{}", s));
        let room = self.0.capacity() - self.0.len();
        let cut = (0..=s.len().min(room)).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        let _ = self.0.push_str(&s[..cut]);
        Ok(())
    }
}

/// Runs `cmds` on the node `options` describes.
pub fn run(catalog: &Catalog, maps: &crate::cmdline::Maps<'_>, options: &str, cmds: IoCmds<'_>) -> u32 {
    let (Some(mut graph), Some(buf)) = (stack::graph(), data()) else { return exit_code::FAILURE };
    // Only reads: open read-only, so read-only drives and dirty images work too and nothing is
    // written (qemu-io would need -r).
    let parsed = |c: &str| cmd::parse_words(c.split(',')).ok();
    let read_only = cmds.iter().all(|c| matches!(parsed(c), Some(Command::Read { .. }))) && !copies_on_read(options);
    let opened = if read_only { stack::open_read_only(&mut graph, catalog, maps, options) } else { stack::open(&mut graph, catalog, maps, options) };
    let (node, _leaves) = match opened {
        Ok(v) => v,
        Err(code) => return code,
    };
    let opts = BackendOptions { read_only, clock: stack::clock_ns, ..BackendOptions::default() };
    let backend = match KBackend::new(&graph, node, opts) {
        Ok(b) => b,
        Err(e) => return stack::fail("io", options, e),
    };
    let platform = stack::Io::new(&graph, catalog);
    let mut failed = false;
    for text in cmds.iter() {
        // The command line parsed every command already.
        let Some(command) = parsed(text) else { continue };
        let mut transcript = Transcript::new();
        let status = executor::block_on(cmd::run(&backend, &command, buf, &mut Tee(&mut transcript), stack::clock_ns), &platform);
        let ok = status == Some(Status::Ok);
        failed |= !ok;
        Record::new("io").str("cmd", Words(text)).bool("ok", ok).str("output", transcript.as_str()).emit();
        stack::report_write_thresholds(&graph);
    }
    // The one place the node is closed: a clean close (caches written back, flushed, a qcow2
    // image marked clean).
    if !read_only {
        if let Err(code) = stack::close(backend, &platform, "io", options) {
            return code;
        }
    }
    if failed {
        println!("io: a command failed");
        exit_code::FAILURE
    } else {
        exit_code::SUCCESS
    }
}

/// A comma-separated command shown with spaces, as qemu-io's `-c` would take it.
struct Words<'a>(&'a str);

impl fmt::Display for Words<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, w) in self.0.split(',').enumerate() {
            if i > 0 {
                f.write_char(' ')?;
            }
            f.write_str(w)?;
        }
        Ok(())
    }
}

/// True if a node of `options` is a `copy-on-read` filter, which writes what it reads (so the
/// stack opens read-write even for reads only).
fn copies_on_read(options: &str) -> bool {
    let Ok(parsed) = strata_block::options::Options::<'_, 32>::parse(options, Some("file")) else { return false };
    let mut view = Some(parsed.root());
    while let Some(v) = view {
        if v.get("driver").is_some_and(|d| d.eq_str("copy-on-read")) {
            return true;
        }
        view = v.child("file");
    }
    false
}
