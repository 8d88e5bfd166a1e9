//! The QEMU machine type and accelerator the guest runs on.
//!
//! `/dev/kvm` on the project's machines is nested KVM, where every VM exit is slow: for a kernel
//! that talks to devices by port and MMIO, TCG is often faster. TCG is the default, and tests pin it.

use std::fmt;
use std::fs::OpenOptions;
use std::str::FromStr;

use serde::Serialize;

use crate::RunnerError;

/// A QEMU x86_64 machine type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    /// `microvm`: no firmware, virtio-mmio, the fastest boot.
    #[default]
    Microvm,
    /// `pc` (i440FX): virtio-pci.
    Pc,
    /// `q35`: virtio-pci on PCIe.
    Q35,
}

impl Machine {
    /// QEMU's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
        }
    }
}

impl FromStr for Machine {
    type Err = RunnerError;

    fn from_str(s: &str) -> Result<Self, RunnerError> {
        match s {
            "microvm" => Ok(Machine::Microvm),
            "pc" => Ok(Machine::Pc),
            "q35" => Ok(Machine::Q35),
            _ => Err(RunnerError::Usage(format!(
                "unknown machine \"{s}\" (microvm, pc or q35)"
            ))),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The accelerator the user asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accel {
    /// KVM if `/dev/kvm` opens read-write, else TCG.
    Auto,
    /// KVM; an error if `/dev/kvm` cannot be opened.
    Kvm,
    /// TCG (software emulation): the default.
    #[default]
    Tcg,
}

impl FromStr for Accel {
    type Err = RunnerError;

    fn from_str(s: &str) -> Result<Self, RunnerError> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(RunnerError::Usage(format!(
                "unknown accelerator \"{s}\" (auto, kvm or tcg)"
            ))),
        }
    }
}

/// The accelerator QEMU actually gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResolvedAccel {
    /// `-accel kvm -cpu host`.
    Kvm,
    /// `-accel tcg -cpu max`.
    Tcg,
}

impl ResolvedAccel {
    /// QEMU's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        }
    }

    /// The `-cpu` model used with it.
    pub fn cpu(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "host",
            ResolvedAccel::Tcg => "max",
        }
    }
}

impl fmt::Display for ResolvedAccel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResolvedAccel::Kvm => "KVM",
            ResolvedAccel::Tcg => "TCG",
        })
    }
}

/// The KVM device.
const KVM_DEVICE: &str = "/dev/kvm";

/// Whether `/dev/kvm` opens read-write, and why not.
fn kvm_usable() -> Result<(), std::io::Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
        .map(drop)
}

impl Accel {
    /// Picks the accelerator for this machine.
    pub fn resolve(self) -> Result<ResolvedAccel, RunnerError> {
        match self {
            Accel::Tcg => Ok(ResolvedAccel::Tcg),
            Accel::Auto => Ok(match kvm_usable() {
                Ok(()) => ResolvedAccel::Kvm,
                Err(_) => ResolvedAccel::Tcg,
            }),
            Accel::Kvm => kvm_usable().map(|()| ResolvedAccel::Kvm).map_err(|e| {
                RunnerError::Usage(format!(
                    "--accel kvm: cannot open {KVM_DEVICE} read-write: {e} (use --accel tcg)"
                ))
            }),
        }
    }
}
