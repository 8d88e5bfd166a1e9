//! qemu-io's data commands over a [`crate::Backend`], and a seeded stress engine.
//!
//! - [`parse`]: `read [-P pattern] [-q] OFFSET LEN`, `write [-P pattern | -z [-u]] [-q] OFFSET
//!   LEN`, `discard [-q] OFFSET LEN` and `flush`, with qemu-io's getopt rules (grouped switches
//!   `-zu`, attached values `-P0xaa`, options anywhere before `--`), sizes with its suffixes and
//!   typed errors that carry the offending word and print qemu-io's messages;
//! - [`run`]: executes a parsed command through a caller-provided data buffer and prints what
//!   qemu-io prints (`wrote 4096/4096 bytes at offset 0` and the statistics line, `Pattern
//!   verification failed at offset N, M bytes`) to any [`core::fmt::Write`];
//! - [`stress`]: a seeded, verifiable mix of requests at a queue depth, with flush markers a
//!   crash checker can replay;
//! - [`copy`]: the one copy loop (block-status aware, bounded buffers, progress and rate
//!   hooks, extent policies) under `img convert`, and `commit`/`rebase` to come;
//! - [`timeline`]: a benchmark's completions per time interval in a fixed array (the kernel's
//!   `bench` and `img bench` plot IOPS over time with it).
//!
//! Nothing here allocates; every buffer comes from the caller.

pub mod copy;
pub mod errno;
mod parse;
mod report;
mod run;
mod size;
pub mod stress;
pub mod timeline;

#[cfg(test)]
mod tests;

pub use parse::{parse, parse_words, Command, Fill, ParseError, MAX_REQUEST_BYTES};
pub use report::{Rate, Stats};
pub use run::{run, Status};
pub use size::{parse_pattern, parse_size};
