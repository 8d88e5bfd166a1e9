//! Making sure QEMU is there: installing Debian's packages when running as root with `apt-get`.
//!
//! Both `qemu-system-x86` and `qemu-utils` are installed together: on Debian 12 installing
//! `qemu-system-x86` alone removes a newer `qemu-utils` backport, taking `qemu-img` with it.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::qemu::DEFAULT_QEMU;
use crate::RunnerError;

/// The packages that provide `qemu-system-x86_64` and `qemu-img`.
pub const PACKAGES: [&str; 2] = ["qemu-system-x86", "qemu-utils"];

/// The install command, as shown to the user.
pub const INSTALL_COMMAND: &str = "apt-get update && apt-get install -y qemu-system-x86 qemu-utils";

/// The first executable called `program` on `PATH`, or `program` itself if it has a `/`.
pub fn find_program(program: &OsStr) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let as_path = Path::new(program);
    if as_path.components().count() > 1 {
        return is_exec(as_path).then(|| as_path.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_exec(p))
}

/// True if the runner runs as root.
fn is_root() -> bool {
    // SAFETY: `geteuid` takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Checks that `program` (QEMU) can be found, installing it if allowed and possible.
pub fn ensure_qemu(
    program: &OsString,
    allow_install: bool,
    quiet: bool,
) -> Result<(), RunnerError> {
    if find_program(program).is_some() {
        return Ok(());
    }
    let name = program.to_string_lossy();
    let default = program.as_os_str() == OsStr::new(DEFAULT_QEMU);
    let missing = |why: &str| {
        RunnerError::QemuMissing(format!(
            "{name} not found{why}; install QEMU as root with: {INSTALL_COMMAND}"
        ))
    };
    if !default {
        return Err(RunnerError::QemuMissing(format!(
            "{name} (from QEMU_SYSTEM) not found"
        )));
    }
    if !allow_install {
        return Err(missing(" (--no-install)"));
    }
    if !is_root() {
        return Err(missing(" (not root, so not installing)"));
    }
    if find_program(OsStr::new("apt-get")).is_none() {
        return Err(missing(" and apt-get is not available"));
    }
    if !quiet {
        eprintln!(
            "{name} not found: installing Debian's {} and {} ({INSTALL_COMMAND})",
            PACKAGES[0], PACKAGES[1]
        );
    }
    apt_get(&["update"])?;
    apt_get(&["install", "-y", PACKAGES[0], PACKAGES[1]])?;
    if find_program(program).is_none() {
        return Err(missing(" after installing"));
    }
    Ok(())
}

/// Runs `apt-get args` non-interactively, its output on the runner's stderr (stdout stays clean
/// for `--json`).
fn apt_get(args: &[&str]) -> Result<(), RunnerError> {
    let shown = format!("apt-get {}", args.join(" "));
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(stdout)
        .status()
        .map_err(|source| RunnerError::Spawn {
            program: "apt-get".into(),
            source,
        })?;
    if !status.success() {
        return Err(RunnerError::QemuMissing(format!(
            "{shown} failed ({status}); install QEMU by hand: {INSTALL_COMMAND}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs() {
        assert!(find_program(OsStr::new("sh")).is_some());
        assert!(find_program(OsStr::new("/bin/sh")).is_some());
        assert!(find_program(OsStr::new("no-such-program-strata")).is_none());
        assert!(find_program(OsStr::new("/no/such/qemu")).is_none());
    }

    #[test]
    fn custom_qemu_is_never_installed() {
        let res = ensure_qemu(&"/no/such/qemu".into(), true, true);
        assert!(matches!(res, Err(RunnerError::QemuMissing(m)) if m.contains("QEMU_SYSTEM")));
    }
}
