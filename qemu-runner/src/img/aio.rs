//! `img io`'s asynchronous and breakpoint commands, as qemu-io's: `aio_read`, `aio_write`
//! (started, then running while later commands go on; the report printed when they complete),
//! `aio_flush` (waits for every request in flight, as qemu-io's `blk_drain_all`), and the
//! blkdebug commands `break EVENT TAG`, `remove_break TAG`, `resume TAG`, `wait_break TAG`.
//!
//! A [`Session`] holds the requests in flight (at most [`MAX_IN_FLIGHT`]) and polls them
//! whenever it runs anything: a command that waits (any synchronous one, `wait_break`,
//! `aio_flush`) lets every request in flight go on meanwhile, so a request suspended at a
//! breakpoint stays pending while another one is raced against it. Where qemu-io would hang
//! (waiting for a request that nothing will resume), the session gives up after
//! [`STALL_LIMIT`] without progress and says so.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use strata_block::cmd::{self, errno::strerror, Command, Status};

use super::image::{self, AlignedBuf, HostBackend};

/// Most asynchronous requests in flight at once.
pub const MAX_IN_FLIGHT: usize = 16;

/// How long a wait may go without any request completing or being suspended before the
/// session gives up (qemu-io would wait forever).
pub const STALL_LIMIT: Duration = Duration::from_secs(3);

/// Each asynchronous request's data buffer (requests larger than this move in pieces).
const AIO_BUFFER: usize = 1 << 20;

type Pending<'a> = Pin<Box<dyn Future<Output = (Status, String)> + 'a>>;

/// One request in flight: what qemu-io calls it in messages, and the request.
struct InFlight<'a> {
    verb: &'static str,
    fut: Pending<'a>,
}

/// The requests in flight of one `img io` run.
pub struct Session<'b, 'g, 'd> {
    backend: &'b HostBackend<'g, 'd>,
    in_flight: Vec<InFlight<'b>>,
    /// Reports of requests that completed when started, for the next poll.
    done: Vec<String>,
}

fn errno_text(errno: i32) -> String {
    strerror(errno).map_or_else(|| format!("Unknown error {errno}"), str::to_string)
}

impl<'b, 'g, 'd> Session<'b, 'g, 'd> {
    /// A session on `backend`.
    pub fn new(backend: &'b HostBackend<'g, 'd>) -> Self {
        Self {
            backend,
            in_flight: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Runs `line` if it is one of this module's commands: `Some(false)` if it failed (the
    /// message is in `out`), `None` if it is not one of them.
    pub fn try_run(&mut self, line: &str, out: &mut String) -> Option<bool> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (&verb, args) = words.split_first()?;
        let io = self.backend.graph().io();
        let root = self.backend.root();
        let argc = |n: usize, out: &mut String| {
            if args.len() != n {
                let _ = writeln!(
                    out,
                    "bad argument count {} to {verb}, expected {n} arguments",
                    args.len()
                );
                false
            } else {
                true
            }
        };
        Some(match verb {
            "aio_read" | "aio_write" => {
                let sync = &verb[4..];
                let parsed = cmd::parse_words(std::iter::once(sync).chain(args.iter().copied()));
                match parsed {
                    Ok(c) => self.start(
                        if verb == "aio_read" {
                            "aio_read"
                        } else {
                            "aio_write"
                        },
                        c,
                        out,
                    ),
                    Err(e) => {
                        let _ = writeln!(out, "{e}");
                        false
                    }
                }
            }
            "aio_flush" => self.drain(out),
            "break" => {
                if !argc(2, out) {
                    return Some(false);
                }
                match io.debug_breakpoint(root, args[0], args[1]) {
                    Ok(()) => true,
                    Err(e) => {
                        let _ = writeln!(out, "Could not set breakpoint: {}", errno_text(e));
                        false
                    }
                }
            }
            "remove_break" => {
                if !argc(1, out) {
                    return Some(false);
                }
                // QEMU removes the breakpoints, then resumes every request suspended under the
                // tag, saying so for each.
                let tag = args[0];
                while io.debug_is_suspended(root, tag) && io.debug_resume(root, tag).is_ok() {
                    let _ = writeln!(out, "blkdebug: Resuming request '{tag}'");
                }
                // The status is the rules' alone: a request resumed under a breakpoint that
                // already fired still says ENOENT, as qemu-io 10 does.
                match io.debug_remove_breakpoint(root, tag) {
                    Ok(()) => true,
                    Err(e) => {
                        let _ = writeln!(
                            out,
                            "Could not remove breakpoint {}: {}",
                            args[0],
                            errno_text(e)
                        );
                        false
                    }
                }
            }
            "resume" => {
                if !argc(1, out) {
                    return Some(false);
                }
                let tag = args[0];
                if !io.debug_is_suspended(root, tag) {
                    let _ = writeln!(
                        out,
                        "Could not resume request: {}",
                        errno_text(strata_block::io::debug::ENOENT)
                    );
                    return Some(false);
                }
                let _ = writeln!(out, "blkdebug: Resuming request '{tag}'");
                match io.debug_resume(root, tag) {
                    // QEMU enters the request at once and it runs until it next waits for I/O;
                    // here its I/O does not wait, so it is left for the next command to poll
                    // (qemu-io prints its completion then too).
                    Ok(()) => true,
                    Err(e) => {
                        let _ = writeln!(out, "Could not resume request: {}", errno_text(e));
                        false
                    }
                }
            }
            "wait_break" => {
                if !argc(1, out) {
                    return Some(false);
                }
                let tag = args[0].to_string();
                let done = self.wait_until(out, |s| {
                    s.backend.graph().io().debug_is_suspended(root, &tag)
                });
                if !done {
                    let _ = writeln!(out, "wait_break: no request reached breakpoint '{tag}' (qemu-io would wait forever)");
                }
                done
            }
            _ => return None,
        })
    }

    /// Starts an asynchronous request.
    fn start(&mut self, verb: &'static str, c: Command, out: &mut String) -> bool {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            let _ = writeln!(
                out,
                "{verb} failed: more than {MAX_IN_FLIGHT} requests in flight"
            );
            return false;
        }
        let backend = self.backend;
        let fut: Pending<'b> = Box::pin(async move {
            let mut buf = AlignedBuf::new(AIO_BUFFER);
            let mut text = String::new();
            let status = cmd::run(backend, &c, buf.as_mut_slice(), &mut text, image::now_ns).await;
            (status, text)
        });
        // qemu-io starts the request at once: it runs until it first waits (at a breakpoint,
        // say). Its completion is reported when qemu-io next polls, never by the command that
        // started it (its I/O always waits there): a request done at once is kept till then.
        let mut fut = fut;
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready((_status, text)) => self.done.push(Self::renamed(verb, text)),
            Poll::Pending => self.in_flight.push(InFlight { verb, fut }),
        }
        self.notices(out);
        true
    }

    /// `cmd::run`'s report, with an asynchronous command's name in its failure message.
    fn renamed(verb: &'static str, text: String) -> String {
        // cmd::run names the synchronous command; qemu-io's aio callbacks name theirs.
        let sync = &verb[4..];
        match text
            .strip_prefix(sync)
            .filter(|t| t.starts_with(" failed: "))
        {
            Some(rest) => format!("{verb}{rest}"),
            None => text,
        }
    }

    /// Polls every request in flight once, printing the reports of those that complete and
    /// the requests suspended meanwhile; true if anything happened.
    fn poll_round(&mut self, out: &mut String) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut progressed = !self.done.is_empty();
        for text in self.done.drain(..) {
            out.push_str(&text);
        }
        let mut i = 0;
        while i < self.in_flight.len() {
            let polled = self.in_flight[i].fut.as_mut().poll(&mut cx);
            progressed |= self.notices(out);
            match polled {
                Poll::Ready((_status, text)) => {
                    out.push_str(&Self::renamed(self.in_flight[i].verb, text));
                    self.in_flight.remove(i);
                    progressed = true;
                }
                Poll::Pending => i += 1,
            }
        }
        progressed
    }

    /// Prints `blkdebug: Suspended request 'TAG'` for requests suspended since the last look.
    fn notices(&self, out: &mut String) -> bool {
        let io = self.backend.graph().io();
        let mut any = false;
        while let Some(tag) = io.take_suspended_notice() {
            let _ = writeln!(out, "blkdebug: Suspended request '{tag}'");
            any = true;
        }
        any
    }

    /// Polls the requests in flight until `ready`; false if they stall first.
    fn wait_until(&mut self, out: &mut String, mut ready: impl FnMut(&Self) -> bool) -> bool {
        let mut last = Instant::now();
        loop {
            if ready(self) {
                return true;
            }
            if self.poll_round(out) {
                last = Instant::now();
            } else if self.in_flight.is_empty() || last.elapsed() > STALL_LIMIT {
                return ready(self);
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Runs a synchronous command's future while the requests in flight go on; what
    /// completes meanwhile is printed before the command's own report.
    pub fn block_on<T>(&mut self, fut: impl Future<Output = T>, out: &mut String) -> T {
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        let mut last = Instant::now();
        loop {
            // Requests issued earlier complete first, as their I/O does in qemu-io.
            let progressed = self.poll_round(out);
            let polled = fut.as_mut().poll(&mut cx);
            self.notices(out);
            if let Poll::Ready(v) = polled {
                return v;
            }
            if progressed {
                last = Instant::now();
            } else if last.elapsed() > STALL_LIMIT
                && self.backend.graph().io().debug_resume_all() > 0
            {
                // The command waits behind a request suspended at a breakpoint, which nothing
                // will resume while it waits (qemu-io would hang): resume them all.
                let _ = writeln!(
                    out,
                    "blkdebug: a command waited {} s behind suspended requests: resuming them all",
                    STALL_LIMIT.as_secs()
                );
                last = Instant::now();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// qemu-io's `aio_flush`: waits for every request in flight. False (with a message) if
    /// some stay suspended at breakpoints.
    pub fn drain(&mut self, out: &mut String) -> bool {
        let done = self.wait_until(out, |s| s.in_flight.is_empty() && s.done.is_empty());
        if !done {
            let _ = writeln!(out, "aio_flush: {} request(s) still suspended at breakpoints (qemu-io would wait forever)", self.in_flight.len());
        }
        done
    }

    /// Ends the session: every request suspended at a breakpoint is resumed and every request
    /// in flight completes (qemu-io drains at exit). True if nothing had to be forced.
    pub fn finish(&mut self, out: &mut String) -> bool {
        if self.drain_quiet(out) {
            return true;
        }
        self.backend.graph().io().debug_resume_all();
        self.drain_quiet(out);
        false
    }

    fn drain_quiet(&mut self, out: &mut String) -> bool {
        self.wait_until(out, |s| s.in_flight.is_empty() && s.done.is_empty())
    }
}
