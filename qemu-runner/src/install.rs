//! Making sure QEMU and the kernel's Rust target are there, through `scripts/setup.sh`.
//!
//! The script is the one installer: `.ci/run` calls it too, so the two cannot drift apart. It
//! keeps QEMU's packages at one release (a `qemu-utils` backport *Breaks* Debian 12's emulator)
//! and adds rustup targets, printing one line per need on stderr.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::machine::Arch;
use crate::{workspace, RunnerError};

/// The Debian packages that provide `qemu-system-x86_64`, `qemu-img` and `qemu-io` (per
/// architecture: [`Arch::qemu_packages`]).
pub const QEMU_PACKAGES: [&str; 2] = ["qemu-system-x86", "qemu-utils"];

/// The installer script, relative to the workspace root.
pub const SETUP_SCRIPT: &str = "scripts/setup.sh";

/// The command that installs `needs`, as shown to the user.
pub fn setup_command(needs: &[&str]) -> String {
    let script = workspace::root().join(SETUP_SCRIPT);
    format!("{} {}", script.display(), needs.join(" "))
}

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

/// Checks that `program` (QEMU) and, for the default emulator, `qemu-img` and `qemu-io` can be
/// found, installing them with [`SETUP_SCRIPT`] if allowed and possible.
pub fn ensure_qemu(
    program: &OsString,
    allow_install: bool,
    quiet: bool,
) -> Result<(), RunnerError> {
    ensure_qemu_for(Arch::X86_64, program, allow_install, quiet)
}

/// As [`ensure_qemu`] for a guest of `arch`: its emulator's package (`qemu-system-arm` for
/// aarch64) is installed only when such a guest is booted, at the release of `qemu-utils`.
pub fn ensure_qemu_for(
    arch: Arch,
    program: &OsString,
    allow_install: bool,
    quiet: bool,
) -> Result<(), RunnerError> {
    let packages = arch.qemu_packages();
    let tools = [arch.qemu_program(), "qemu-img", "qemu-io"];
    let default = program.as_os_str() == OsStr::new(arch.qemu_program());
    if !default {
        return match find_program(program) {
            Some(_) => Ok(()),
            None => Err(RunnerError::QemuMissing(format!(
                "{} (from QEMU_SYSTEM) not found",
                program.to_string_lossy()
            ))),
        };
    }
    let missing = || {
        tools
            .into_iter()
            .filter(|tool| find_program(OsStr::new(tool)).is_none())
            .collect::<Vec<_>>()
    };
    let absent = missing();
    if absent.is_empty() {
        return Ok(());
    }
    let command = setup_command(&packages);
    let refuse = |why: &str| {
        RunnerError::QemuMissing(format!(
            "{} not found{why}; install QEMU as root with: {command}",
            absent.join(", ")
        ))
    };
    if !allow_install {
        return Err(refuse(" (--no-install)"));
    }
    if !is_root() {
        return Err(refuse(" (not root, so not installing)"));
    }
    if !quiet {
        eprintln!("{} not found: installing QEMU ({command})", absent.join(", "));
    }
    run_setup(&packages).map_err(RunnerError::QemuMissing)?;
    let still = missing();
    if !still.is_empty() {
        return Err(RunnerError::QemuMissing(format!(
            "{} not found after {command}",
            still.join(", ")
        )));
    }
    Ok(())
}

/// Makes sure the Rust toolchain that `rustc` belongs to has `target`'s standard library,
/// adding it with rustup through [`SETUP_SCRIPT`] when it is missing (rustup does not add the
/// `targets` of `rust-toolchain.toml` to a toolchain that is already installed). On failure, the
/// reason and what to run.
pub fn ensure_target(rustc: &OsStr, target: &str) -> Result<(), String> {
    let has_target = || {
        let sysroot = Command::new(rustc)
            .args(["--print", "sysroot"])
            .current_dir(workspace::root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        sysroot.is_some_and(|s| s.join("lib/rustlib").join(target).join("lib").is_dir())
    };
    if has_target() {
        return Ok(());
    }
    let need = format!("target:{target}");
    run_setup(&[&need])?;
    if has_target() {
        Ok(())
    } else {
        Err(format!(
            "the Rust target {target} is still missing after {}",
            setup_command(&[&need])
        ))
    }
}

/// Runs [`SETUP_SCRIPT`] for `needs`, its output on the runner's stderr (stdout stays clean for
/// `--json`); on failure, the reason and the command.
fn run_setup(needs: &[&str]) -> Result<(), String> {
    let command = setup_command(needs);
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let status = Command::new("bash")
        .arg(workspace::root().join(SETUP_SCRIPT))
        .args(needs)
        .stdin(Stdio::null())
        .stdout(stdout)
        .status()
        .map_err(|e| format!("cannot run {command}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command} failed ({status}); see its output above"))
    }
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
