//! Running QEMU: spawn, a reader thread per pipe, a hard timeout, and a guard that kills it.
//!
//! QEMU gets a null stdin, runs in its own process group (a Ctrl-C at the terminal reaches only
//! the runner), and is sent SIGKILL by the kernel if the thread that started it dies
//! (`PR_SET_PDEATHSIG`); otherwise a guard kills and reaps it when dropped, whatever path the
//! runner leaves by.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::console::{Line, LineSplitter};
use crate::exit_status::QemuExit;
use crate::RunnerError;

/// How often the exit status is polled while the console is quiet.
const POLL: Duration = Duration::from_millis(2);

/// Owns the QEMU child process: dropping it kills and reaps QEMU if it is still running.
#[derive(Debug)]
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What a finished QEMU process left.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub exit: QemuExit,
    /// Wall time from spawn to exit (or to the kill at the timeout).
    pub wall: Duration,
    /// Everything QEMU wrote to stderr.
    pub stderr: String,
}

/// A console event sent from the stdout reader.
enum Event {
    /// A complete line.
    Line(Line),
    /// Stdout closed (QEMU exited or is exiting).
    Eof,
}

/// Starts `program args`, hands every console line to `on_line` as it arrives, and waits for the
/// exit or the `timeout`.
pub fn run(
    program: &OsString,
    args: &[String],
    timeout: Duration,
    on_line: &mut dyn FnMut(Line),
) -> Result<Finished, RunnerError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and calls only `prctl`, which is
    // async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|source| RunnerError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    let out_reader = stdout.map(|s| spawn_stdout_reader(s, tx));
    let err_reader = stderr.map(spawn_stderr_reader);

    let deadline = start + timeout;
    let mut eof = false;
    let (exit, wall) = loop {
        if let Some(status) = guard
            .0
            .try_wait()
            .map_err(|e| RunnerError::io("waiting for QEMU", e))?
        {
            break (exit_of(status), start.elapsed());
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = guard.0.kill();
            let _ = guard.0.wait();
            break (QemuExit::TimedOut, start.elapsed());
        }
        let wait = POLL.min(deadline - now);
        if eof {
            thread::sleep(wait);
            continue;
        }
        match rx.recv_timeout(wait) {
            Ok(Event::Line(line)) => on_line(line),
            Ok(Event::Eof) | Err(RecvTimeoutError::Disconnected) => eof = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
    };
    drop(guard);
    // QEMU is gone, so both pipes reach EOF; the readers end and the channel drains.
    if let Some(handle) = out_reader {
        let _ = handle.join();
    }
    for event in rx.try_iter() {
        if let Event::Line(line) = event {
            on_line(line);
        }
    }
    let stderr = err_reader.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Finished { exit, wall, stderr })
}

/// Maps a process status to [`QemuExit`].
fn exit_of(status: ExitStatus) -> QemuExit {
    match (status.code(), status.signal()) {
        (Some(code), _) => QemuExit::Exited(code),
        (None, Some(sig)) => QemuExit::Signaled(sig),
        (None, None) => QemuExit::Exited(-1),
    }
}

/// Reads the console, sending each line as soon as it is complete.
fn spawn_stdout_reader(mut stdout: ChildStdout, tx: mpsc::Sender<Event>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut splitter = LineSplitter::default();
        let mut buf = [0u8; 8192];
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for line in splitter.push(buf.get(..n).unwrap_or(&[])) {
                if tx.send(Event::Line(line)).is_err() {
                    return;
                }
            }
        }
        if let Some(line) = splitter.finish() {
            let _ = tx.send(Event::Line(line));
        }
        let _ = tx.send(Event::Eof);
    })
}

/// Collects QEMU's stderr.
fn spawn_stderr_reader(mut stderr: ChildStderr) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> (Finished, Vec<Line>) {
        let mut lines = Vec::new();
        let args = ["-c".to_string(), script.to_string()];
        let res = run(&"sh".into(), &args, timeout, &mut |l| lines.push(l));
        match res {
            Ok(f) => (f, lines),
            Err(e) => panic!("sh failed: {e}"),
        }
    }

    #[test]
    fn collects_lines_stderr_and_status() {
        let (f, lines) = sh(
            "printf 'a\\r\\nb'; echo oops >&2; exit 3",
            Duration::from_secs(10),
        );
        assert_eq!(f.exit, QemuExit::Exited(3));
        assert_eq!(f.stderr, "oops\n");
        assert_eq!(lines, [Line::Text("a".into()), Line::Text("b".into())]);
    }

    #[test]
    fn timeout_kills() {
        let (f, _) = sh("echo hi; exec sleep 30", Duration::from_millis(300));
        assert_eq!(f.exit, QemuExit::TimedOut);
        assert!(f.wall < Duration::from_secs(5));
    }

    #[test]
    fn missing_program_is_spawn_error() {
        let res = run(
            &"/no/such/qemu".into(),
            &[],
            Duration::from_secs(1),
            &mut |_| {},
        );
        assert!(matches!(res, Err(RunnerError::Spawn { .. })));
    }
}
