//! Finding the kernel ELF: `--kernel`, `STRATA_KERNEL`, or a `cargo build` of `strata-kernel`.
//!
//! The build uses its own target directory, `target/kernel/`, so it never waits for the lock a
//! running `cargo test` holds on `target/`. Concurrent callers share one build per process (a
//! `OnceLock`), and cargo's own lock serialises processes.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::machine::Arch;
use crate::{install, workspace, RunnerError};

/// The environment variable naming a prebuilt kernel ELF.
pub const KERNEL_ENV: &str = "STRATA_KERNEL";

/// The environment variable naming a prebuilt aarch64 kernel ELF.
pub const KERNEL_AARCH64_ENV: &str = "STRATA_KERNEL_AARCH64";

/// The environment variable naming a prebuilt riscv64 kernel ELF.
pub const KERNEL_RISCV64_ENV: &str = "STRATA_KERNEL_RISCV64";

/// What the riscv64 kernel is compiled with: position-independent code, whose GOT reaches
/// defmt's string indexes (symbols at 1..65534 in the `.defmt` info section). The kernel runs
/// at 0x8020_0000, more than 2 GiB away from them, out of reach of the `auipc` the default
/// (medany, static) code uses to take a symbol's address; the large code model is refused by
/// LTO against the prebuilt `core`. Passed only for the kernel's own build (its own target
/// directory), not through `.cargo/config.toml`, so other riscv64 builds keep their codegen.
pub const RISCV64_KERNEL_CONFIG: &str =
    "target.riscv64gc-unknown-none-elf.rustflags=[\"-C\", \"relocation-model=pic\"]";

/// The x86_64 kernel's target triple (per architecture: [`Arch::target`]).
pub const TARGET: &str = "x86_64-unknown-none";

/// The kernel's package name.
pub const PACKAGE: &str = "strata-kernel";

/// The defmt log filter the kernel is built with unless `DEFMT_LOG` is set (defmt's own default
/// is `error`, which would leave the log channel almost silent).
pub const DEFAULT_DEFMT_LOG: &str = "info";

/// The kernel's target directory.
pub fn target_dir() -> PathBuf {
    workspace::target_dir().join("kernel")
}

/// Where `cargo build` leaves the x86_64 kernel ELF.
pub fn elf_path() -> PathBuf {
    elf_path_for(Arch::X86_64)
}

/// Where `cargo build` leaves the kernel ELF for `arch`.
pub fn elf_path_for(arch: Arch) -> PathBuf {
    target_dir()
        .join(arch.target())
        .join("release")
        .join(PACKAGE)
}

/// The x86_64 kernel to boot: `explicit` if given, else `STRATA_KERNEL`, else [`build_kernel`].
pub fn resolve(explicit: Option<&Path>, quiet: bool) -> Result<PathBuf, RunnerError> {
    resolve_for(Arch::X86_64, explicit, quiet)
}

/// The kernel to boot for `arch`: `explicit` if given, else `STRATA_KERNEL` (x86_64) or
/// `STRATA_KERNEL_AARCH64` or `STRATA_KERNEL_RISCV64`, else [`build_kernel_for`].
pub fn resolve_for(
    arch: Arch,
    explicit: Option<&Path>,
    quiet: bool,
) -> Result<PathBuf, RunnerError> {
    let env = match arch {
        Arch::X86_64 => KERNEL_ENV,
        Arch::Aarch64 => KERNEL_AARCH64_ENV,
        Arch::Riscv64 => KERNEL_RISCV64_ENV,
    };
    let given = explicit.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(env)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    match given {
        Some(path) => match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(path),
            Ok(_) => Err(RunnerError::MissingFile {
                what: "kernel",
                path,
                source: std::io::Error::other("not a regular file"),
            }),
            Err(source) => Err(RunnerError::MissingFile {
                what: "kernel",
                path,
                source,
            }),
        },
        None => {
            if !quiet {
                eprintln!("strata: building {PACKAGE} ({}, release)", arch.target());
            }
            build_kernel_for(arch)
        }
    }
}

/// Builds the kernel (once per process; later calls return the first result) and returns the
/// ELF's path. Cargo's output is shown only in the error.
pub fn build_kernel() -> Result<PathBuf, RunnerError> {
    build_kernel_for(Arch::X86_64)
}

/// As [`build_kernel`] for `arch` (once per process and architecture).
pub fn build_kernel_for(arch: Arch) -> Result<PathBuf, RunnerError> {
    static X86_64: OnceLock<Result<PathBuf, (String, String)>> = OnceLock::new();
    static AARCH64: OnceLock<Result<PathBuf, (String, String)>> = OnceLock::new();
    static RISCV64: OnceLock<Result<PathBuf, (String, String)>> = OnceLock::new();
    let built = match arch {
        Arch::X86_64 => &X86_64,
        Arch::Aarch64 => &AARCH64,
        Arch::Riscv64 => &RISCV64,
    };
    built
        .get_or_init(|| run_cargo_build(arch))
        .clone()
        .map_err(|(command, output)| RunnerError::Build { command, output })
}

/// The `rustc` that `cargo` builds with: `RUSTC`, else the one in `cargo`'s folder (a toolchain's
/// own cargo, as `CARGO` names it under rustup), else `rustc` on `PATH`.
fn rustc_beside(cargo: &OsStr) -> OsString {
    if let Some(rustc) = std::env::var_os("RUSTC").filter(|v| !v.is_empty()) {
        return rustc;
    }
    let cargo = Path::new(cargo);
    match cargo.parent() {
        Some(dir) if cargo.is_absolute() && dir.join("rustc").is_file() => {
            dir.join("rustc").into_os_string()
        }
        _ => "rustc".into(),
    }
}

/// Runs `cargo build` for the kernel; on failure, the command and cargo's output.
fn run_cargo_build(arch: Arch) -> Result<PathBuf, (String, String)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = target_dir();
    let mut args: Vec<&OsStr> = vec![
        "build".as_ref(),
        "-p".as_ref(),
        PACKAGE.as_ref(),
        "--release".as_ref(),
        "--target".as_ref(),
        arch.target().as_ref(),
        "--target-dir".as_ref(),
        target_dir.as_os_str(),
    ];
    if arch == Arch::Riscv64 {
        args.extend([OsStr::new("--config"), OsStr::new(RISCV64_KERNEL_CONFIG)]);
    }
    let shown = std::iter::once(cargo.as_os_str())
        .chain(args.iter().copied())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    install::ensure_target(&rustc_beside(&cargo), arch.target()).map_err(|e| (shown.clone(), e))?;
    let mut cmd = Command::new(&cargo);
    cmd.args(&args).current_dir(workspace::root());
    // Flags meant for host builds would replace the kernel's `target.x86_64-unknown-none.rustflags`
    // (`.cargo/config.toml`), so they are not passed on.
    cmd.env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if std::env::var_os("DEFMT_LOG").is_none() {
        cmd.env("DEFMT_LOG", DEFAULT_DEFMT_LOG);
    }
    let output = cmd.output().map_err(|e| {
        (
            shown.clone(),
            format!("cannot run {}: {e}", cargo.to_string_lossy()),
        )
    })?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err((shown, text));
    }
    let elf = elf_path_for(arch);
    if !elf.is_file() {
        let msg = format!("cargo succeeded but {} is missing", elf.display());
        return Err((shown, msg));
    }
    Ok(elf)
}
