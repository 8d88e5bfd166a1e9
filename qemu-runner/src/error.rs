//! The runner's own errors: everything that stops a boot before QEMU's exit can be classified.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::exit_status;

/// Why the runner could not boot the kernel (as opposed to a boot that ran and failed, which is a
/// [`crate::BootResult`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum RunnerError {
    /// Bad arguments or options (exit status 2).
    Usage(String),
    /// A file the user named does not exist or cannot be read (exit status 2).
    MissingFile {
        /// What the file is for: "drive", "kernel", ...
        what: &'static str,
        /// The path as given.
        path: PathBuf,
        /// The error from the file system.
        source: io::Error,
    },
    /// `cargo build` of the kernel failed; `output` is cargo's output (exit status 5).
    Build {
        /// The command that was run.
        command: String,
        /// Cargo's stdout and stderr.
        output: String,
    },
    /// QEMU is not installed and could not be installed (exit status 5).
    QemuMissing(String),
    /// QEMU (or another tool) could not be started (exit status 5).
    Spawn {
        /// The program.
        program: String,
        /// The error from `exec`.
        source: io::Error,
    },
    /// The runner's own I/O failed: run directory, default disk, reading a log (exit status 5).
    Io {
        /// What the runner was doing.
        context: String,
        /// The error.
        source: io::Error,
    },
}

impl RunnerError {
    /// Shorthand for [`RunnerError::Io`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        RunnerError::Io {
            context: context.into(),
            source,
        }
    }

    /// The runner's exit status for this error (see [`crate::exit_status`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            RunnerError::Usage(_) | RunnerError::MissingFile { .. } => exit_status::USAGE,
            RunnerError::Build { .. }
            | RunnerError::QemuMissing(_)
            | RunnerError::Spawn { .. }
            | RunnerError::Io { .. } => exit_status::QEMU_ERROR,
        }
    }

    /// The `status` name of the JSON error object.
    pub fn status(&self) -> &'static str {
        match self {
            RunnerError::Usage(_) | RunnerError::MissingFile { .. } => "usage",
            RunnerError::Build { .. } => "build-error",
            RunnerError::QemuMissing(_) | RunnerError::Spawn { .. } => "qemu-error",
            RunnerError::Io { .. } => "runner-error",
        }
    }

    /// The error as the one JSON object `--json` prints on stdout.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::json!({
            "status": self.status(),
            "exit_code": self.exit_code(),
            "error": self.to_string(),
        });
        if let (RunnerError::Build { output, .. }, Some(map)) = (self, obj.as_object_mut()) {
            map.insert("build_output".into(), output.clone().into());
        }
        obj
    }
}

impl fmt::Display for RunnerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunnerError::Usage(msg) => f.write_str(msg),
            RunnerError::MissingFile { what, path, source } => {
                write!(f, "{what} file {}: {source}", path.display())
            }
            RunnerError::Build { command, output } => {
                write!(f, "kernel build failed: {command}\n{output}")
            }
            RunnerError::QemuMissing(msg) => f.write_str(msg),
            RunnerError::Spawn { program, source } => write!(f, "cannot start {program}: {source}"),
            RunnerError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for RunnerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunnerError::MissingFile { source, .. }
            | RunnerError::Spawn { source, .. }
            | RunnerError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
