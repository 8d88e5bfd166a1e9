//! The runner's exit statuses, and how QEMU's exit status maps to them.
//!
//! The kernel ends the machine through `isa-debug-exit` (I/O port 0xf4), which makes QEMU exit with
//! `2 * code + 1`; the kernel's codes live in `kernel/src/exit_code.rs` — keep both lists in step.
//! QEMU's own errors (bad option, missing file) also exit with status 1, the same as kernel code 0,
//! so a status of 1 counts as success only if the kernel's `exit` record was seen on the console.

use serde::Serialize;

/// The kernel's workload succeeded.
pub const OK: i32 = 0;
/// The workload ran and failed (I/O error, verification mismatch, ...), or the kernel exited with a
/// code the runner does not know.
pub const FAILED: i32 = 1;
/// A usage error: the runner's arguments, a missing file, or the kernel's command line.
pub const USAGE: i32 = 2;
/// The kernel panicked.
pub const PANIC: i32 = 3;
/// The kernel could not boot, or the machine reset without an exit status (triple fault).
pub const BOOT_ERROR: i32 = 4;
/// QEMU is missing, did not start, or failed on its own; or the kernel build failed; or the runner
/// hit an I/O error of its own.
pub const QEMU_ERROR: i32 = 5;
/// QEMU was killed after `--timeout` seconds.
pub const TIMEOUT: i32 = 124;

/// The kernel's own exit codes (`kernel/src/exit_code.rs`).
pub mod kernel {
    /// The workload succeeded.
    pub const SUCCESS: u32 = 0;
    /// The workload failed.
    pub const FAILURE: u32 = 1;
    /// Bad kernel command line.
    pub const USAGE: u32 = 2;
    /// The kernel panicked.
    pub const PANIC: u32 = 3;
    /// The kernel was not booted the way it needs.
    pub const BOOT_ERROR: u32 = 4;
}

/// Text for `--help`: every exit status of `qemu-runner boot`.
pub const HELP: &str = "\
Exit status:
  0    ok          the kernel's workload succeeded
  1    failed      the workload failed (or the kernel exited with an unknown code)
  2    usage       bad arguments, a missing file, or a bad kernel command line
  3    panic       the kernel panicked
  4    boot-error  the kernel could not boot, or the machine reset without an exit
                   status (triple fault?)
  5    qemu-error  QEMU missing, not started, or failed on its own (its stderr is
                   shown); also a failed kernel build (build-error) or runner I/O error
  124  timeout     QEMU was killed after --timeout seconds";

/// The outcome of a boot, as reported in [`crate::BootResult::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Kernel code 0.
    Ok,
    /// Kernel code 1, or an unknown kernel code.
    Failed,
    /// Kernel code 2.
    Usage,
    /// Kernel code 3.
    Panic,
    /// Kernel code 4, or a reset without an exit status.
    BootError,
    /// QEMU was killed by the runner's timeout.
    Timeout,
    /// QEMU failed on its own.
    QemuError,
}

impl Status {
    /// The name used in JSON and in the summary line.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Usage => "usage",
            Status::Panic => "panic",
            Status::BootError => "boot-error",
            Status::Timeout => "timeout",
            Status::QemuError => "qemu-error",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Status {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How the QEMU process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuExit {
    /// QEMU exited with this status.
    Exited(i32),
    /// QEMU was killed by this signal (not by the runner).
    Signaled(i32),
    /// The runner killed QEMU at the timeout.
    TimedOut,
}

/// What a boot amounts to: see [`classify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The status name.
    pub status: Status,
    /// The runner's exit status.
    pub exit_code: i32,
    /// The kernel's exit code, if it sent one through `isa-debug-exit`.
    pub kernel_code: Option<u32>,
    /// A sentence for the human when the status alone does not explain it.
    pub message: Option<String>,
}

/// Maps how QEMU ended to the runner's outcome.
///
/// `exit_record` is the `code` of the kernel's `exit` console record, if one was seen; `stderr` is
/// what QEMU wrote to its stderr.
pub fn classify(exit: QemuExit, exit_record: Option<u64>, stderr: &str) -> Outcome {
    let outcome = |status, exit_code, kernel_code, message: Option<String>| Outcome {
        status,
        exit_code,
        kernel_code,
        message,
    };
    match exit {
        QemuExit::TimedOut => outcome(
            Status::Timeout,
            TIMEOUT,
            None,
            Some("QEMU killed at the timeout".into()),
        ),
        QemuExit::Signaled(sig) => outcome(
            Status::QemuError,
            QEMU_ERROR,
            None,
            Some(format!("QEMU was killed by signal {sig}")),
        ),
        QemuExit::Exited(0) if stderr.contains("terminating on signal") => outcome(
            Status::QemuError,
            QEMU_ERROR,
            None,
            Some("QEMU was stopped by a signal".into()),
        ),
        QemuExit::Exited(0) => outcome(
            Status::BootError,
            BOOT_ERROR,
            None,
            Some("kernel reset without an exit status (triple fault?)".into()),
        ),
        // QEMU's own errors exit with 1, like kernel code 0: only the exit record tells them apart.
        QemuExit::Exited(1) if exit_record.is_none() => outcome(
            Status::QemuError,
            QEMU_ERROR,
            None,
            Some("QEMU exited with status 1 before the kernel reported an exit".into()),
        ),
        QemuExit::Exited(s) if s > 0 && s % 2 == 1 => {
            let code = u32::try_from((s - 1) / 2).unwrap_or(u32::MAX);
            let (status, exit_code) = kernel_outcome(code);
            let message = match exit_record {
                Some(r) if r != u64::from(code) => Some(format!(
                    "the kernel's exit record says code {r}, QEMU's status says {code}"
                )),
                _ if status == Status::Failed && code != kernel::FAILURE => {
                    Some(format!("unknown kernel exit code {code}"))
                }
                _ => None,
            };
            outcome(status, exit_code, Some(code), message)
        }
        QemuExit::Exited(s) => outcome(
            Status::QemuError,
            QEMU_ERROR,
            None,
            Some(format!("QEMU failed with status {s}")),
        ),
    }
}

/// The status and runner exit status for kernel exit code `code`.
pub fn kernel_outcome(code: u32) -> (Status, i32) {
    match code {
        kernel::SUCCESS => (Status::Ok, OK),
        kernel::FAILURE => (Status::Failed, FAILED),
        kernel::USAGE => (Status::Usage, USAGE),
        kernel::PANIC => (Status::Panic, PANIC),
        kernel::BOOT_ERROR => (Status::BootError, BOOT_ERROR),
        _ => (Status::Failed, FAILED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(exit: QemuExit, record: Option<u64>) -> (Status, i32, Option<u32>) {
        let o = classify(exit, record, "");
        (o.status, o.exit_code, o.kernel_code)
    }

    #[test]
    fn kernel_codes_map_through_debug_exit() {
        use QemuExit::Exited;
        assert_eq!(code_of(Exited(1), Some(0)), (Status::Ok, 0, Some(0)));
        assert_eq!(code_of(Exited(3), Some(1)), (Status::Failed, 1, Some(1)));
        assert_eq!(code_of(Exited(5), Some(2)), (Status::Usage, 2, Some(2)));
        assert_eq!(code_of(Exited(7), Some(3)), (Status::Panic, 3, Some(3)));
        assert_eq!(code_of(Exited(9), Some(4)), (Status::BootError, 4, Some(4)));
        assert_eq!(code_of(Exited(11), None), (Status::Failed, 1, Some(5)));
        // A record is not needed for codes other than 0.
        assert_eq!(code_of(Exited(7), None), (Status::Panic, 3, Some(3)));
    }

    #[test]
    fn status_one_without_exit_record_is_qemu_error() {
        let o = classify(
            QemuExit::Exited(1),
            None,
            "qemu: -machine bogus: unsupported",
        );
        assert_eq!((o.status, o.exit_code), (Status::QemuError, QEMU_ERROR));
    }

    #[test]
    fn reset_timeout_signal_and_even_statuses() {
        let reset = classify(QemuExit::Exited(0), None, "");
        assert_eq!(
            (reset.status, reset.exit_code),
            (Status::BootError, BOOT_ERROR)
        );
        assert!(reset.message.unwrap_or_default().contains("triple fault"));
        let stopped = classify(
            QemuExit::Exited(0),
            None,
            "terminating on signal 15 from pid 1",
        );
        assert_eq!(stopped.exit_code, QEMU_ERROR);
        assert_eq!(
            code_of(QemuExit::TimedOut, None),
            (Status::Timeout, 124, None)
        );
        assert_eq!(
            code_of(QemuExit::Signaled(9), None),
            (Status::QemuError, 5, None)
        );
        assert_eq!(
            code_of(QemuExit::Exited(2), None),
            (Status::QemuError, 5, None)
        );
        assert_eq!(
            code_of(QemuExit::Exited(-1), None),
            (Status::QemuError, 5, None)
        );
    }

    #[test]
    fn status_compares_with_its_name() {
        assert_eq!(Status::BootError, "boot-error");
        assert!(Status::QemuError == *"qemu-error");
        assert_eq!(Status::Ok.to_string(), "ok");
    }

    #[test]
    fn mismatched_exit_record_is_reported() {
        let o = classify(QemuExit::Exited(3), Some(0), "");
        assert_eq!(o.status, Status::Failed);
        assert!(o.message.is_some());
    }
}
