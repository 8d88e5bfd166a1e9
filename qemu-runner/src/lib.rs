//! `qemu-runner`: builds the Strata kernel, lays out disks as virtio-blk devices, boots QEMU,
//! decodes the kernel's logs and reports.
//!
//! The binary is a thin CLI over this library; integration tests call [`boot`] directly:
//!
//! ```no_run
//! use qemu_runner::{boot, BootOptions, Drive};
//!
//! let opts = BootOptions {
//!     drives: vec![Drive::new("/tmp/a.img", "disk0")],
//!     cmd: Some("sha256 disk0".into()),
//!     quiet: true,
//!     ..BootOptions::default()
//! };
//! let result = boot(&opts)?;
//! assert!(result.is_ok(), "{}", result.summary());
//! # Ok::<(), qemu_runner::RunnerError>(())
//! ```
//!
//! Modules, one concern each: [`cli`] (arguments), [`help`], [`drives`], [`kernel`] (the build),
//! [`machine`], [`qemu`] (the command line), [`process`] (spawn, timeout, kill), [`console`]
//! (records), [`defmt_log`], [`exit_status`], [`footprint`] (the block layer's share), [`headroom`] (room for qcow2 images to grow), [`result`], [`series`] (a benchmark's latency histogram and IOPS over time), [`plot`] (their SVG picture), [`install`], [`workspace`] (paths).
//!
//! Unsafe code: two blocks, each with a `// SAFETY:` comment — `prctl(PR_SET_PDEATHSIG)` before
//! QEMU's exec, and `geteuid`.

mod boot;
pub mod chain;
pub mod cli;
pub mod console;
pub mod defmt_log;
pub mod drives;
mod error;
pub mod exit_status;
pub mod footprint;
pub mod headroom;
pub mod help;
pub mod img;
pub mod install;
pub mod kernel;
pub mod machine;
pub mod plot;
pub mod process;
pub mod qemu;
pub mod result;
pub mod series;
pub mod stack_check;
pub mod workspace;
pub mod write_log;

pub use boot::{
    boot, BootOptions, DEFAULT_CMD_SCRATCH, DEFAULT_CMD_USER_DRIVES, DEFAULT_MEMORY_MIB,
    DEFAULT_TIMEOUT,
};
pub use drives::Drive;
pub use error::RunnerError;
pub use exit_status::Status;
pub use kernel::build_kernel;
pub use machine::{Accel, Arch, Machine, ResolvedAccel, Transport};
pub use result::BootResult;

/// Makes sure `qemu-system-x86_64`, `qemu-img` and `qemu-io` (or `QEMU_SYSTEM`) can be found; if
/// they cannot and `install` is true, installs Debian's `qemu-system-x86` and `qemu-utils` at one
/// release with `scripts/setup.sh` when running as root (see [`install`]). Progress goes to stderr.
pub fn ensure_qemu(install: bool) -> Result<(), RunnerError> {
    install::ensure_qemu(&qemu::program(), install, false)
}
