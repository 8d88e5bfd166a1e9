//! The guest architecture, the QEMU machine type and the accelerator the guest runs on.
//!
//! `/dev/kvm` on the project's machines is nested KVM, where every VM exit is slow: for a kernel
//! that talks to devices by port and MMIO, TCG is often faster. TCG is the default, and tests pin it.

use std::fmt;
use std::fs::OpenOptions;
use std::str::FromStr;

use serde::Serialize;

use crate::RunnerError;

/// The guest architecture: which kernel target, QEMU binary and packages a boot needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86_64 (`microvm`, `pc`, `q35`).
    #[default]
    X86_64,
    /// aarch64 (`virt`).
    Aarch64,
    /// riscv64 (`virt`, under OpenSBI).
    Riscv64,
}

impl Arch {
    /// Its name (as `--arch` takes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// The kernel's Rust target triple.
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-none",
            Arch::Aarch64 => "aarch64-unknown-none",
            Arch::Riscv64 => "riscv64gc-unknown-none-elf",
        }
    }

    /// The machine used when none is named.
    pub fn default_machine(self) -> Machine {
        match self {
            Arch::X86_64 => Machine::Microvm,
            Arch::Aarch64 => Machine::Virt,
            Arch::Riscv64 => Machine::RiscvVirt,
        }
    }

    /// The QEMU system emulator binary.
    pub fn qemu_program(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::Riscv64 => "qemu-system-riscv64",
        }
    }

    /// The Debian packages of the emulator and of `qemu-img`/`qemu-io`.
    pub fn qemu_packages(self) -> [&'static str; 2] {
        match self {
            Arch::X86_64 => ["qemu-system-x86", "qemu-utils"],
            Arch::Aarch64 => ["qemu-system-arm", "qemu-utils"],
            Arch::Riscv64 => ["qemu-system-misc", "qemu-utils"],
        }
    }

    /// True if this is the host's architecture (so KVM could run it).
    pub fn is_host(self) -> bool {
        std::env::consts::ARCH == self.as_str()
    }
}

impl FromStr for Arch {
    type Err = RunnerError;

    fn from_str(s: &str) -> Result<Self, RunnerError> {
        match s {
            "x86_64" | "x86-64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            "riscv64" | "riscv" => Ok(Arch::Riscv64),
            _ => Err(RunnerError::Usage(format!(
                "unknown architecture \"{s}\" (x86_64, aarch64 or riscv64)"
            ))),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A QEMU machine type.
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
    /// aarch64 `virt`: virtio-mmio found through the device tree, or virtio-pci.
    Virt,
    /// riscv64 `virt` (QEMU's name is `virt` too; `--arch riscv64` picks it): virtio-mmio found
    /// through the device tree, or virtio-pci; OpenSBI as firmware.
    #[serde(rename = "riscv64-virt")]
    RiscvVirt,
}

impl Machine {
    /// QEMU's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Microvm => "microvm",
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
            Machine::Virt | Machine::RiscvVirt => "virt",
        }
    }

    /// The architecture it emulates.
    pub fn arch(self) -> Arch {
        match self {
            Machine::Microvm | Machine::Pc | Machine::Q35 => Arch::X86_64,
            Machine::Virt => Arch::Aarch64,
            Machine::RiscvVirt => Arch::Riscv64,
        }
    }

    /// The machine called `self`'s name on `arch` (`virt` is a machine of aarch64 and of
    /// riscv64), if `arch` has one.
    pub fn on(self, arch: Arch) -> Option<Machine> {
        match (self, arch) {
            (Machine::Virt | Machine::RiscvVirt, Arch::Riscv64) => Some(Machine::RiscvVirt),
            (Machine::Virt | Machine::RiscvVirt, Arch::Aarch64) => Some(Machine::Virt),
            _ => (self.arch() == arch).then_some(self),
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
            "virt" => Ok(Machine::Virt),
            _ => Err(RunnerError::Usage(format!(
                "unknown machine \"{s}\" (microvm, pc or q35; virt for aarch64 and riscv64)"
            ))),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How virtio devices reach the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// virtio-mmio (`virtio-blk-device`): microvm's fixed windows, `virt`'s device tree.
    Mmio,
    /// virtio-pci (`virtio-blk-pci`): pc and q35 (firmware assigns BARs), `virt` (the kernel's
    /// board code assigns them from the device tree's host bridge).
    Pci,
}

impl Transport {
    /// Its name (as `--transport` takes it).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Mmio => "mmio",
            Transport::Pci => "pci",
        }
    }
}

impl FromStr for Transport {
    type Err = RunnerError;

    fn from_str(s: &str) -> Result<Self, RunnerError> {
        match s {
            "mmio" => Ok(Transport::Mmio),
            "pci" => Ok(Transport::Pci),
            _ => Err(RunnerError::Usage(format!(
                "unknown transport \"{s}\" (mmio or pci)"
            ))),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Machine {
    /// The virtio transport used when none is named: PCI on pc and q35, MMIO elsewhere.
    pub fn default_transport(self) -> Transport {
        match self {
            Machine::Pc | Machine::Q35 => Transport::Pci,
            _ => Transport::Mmio,
        }
    }

    /// True if the machine carries `transport`: `virt` (aarch64 and riscv64) has both a
    /// virtio-mmio bus and a PCIe host bridge; microvm has no PCI, pc and q35 no virtio-mmio
    /// bus.
    pub fn supports(self, transport: Transport) -> bool {
        matches!(self, Machine::Virt | Machine::RiscvVirt) || self.default_transport() == transport
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

    /// The `-cpu` model used with it for a guest of `arch`: as [`ResolvedAccel::cpu`], except
    /// riscv64 under TCG, which takes `rv64` (QEMU 7.2 has no riscv64 `max`).
    pub fn cpu_for(self, arch: Arch) -> &'static str {
        match (self, arch) {
            (ResolvedAccel::Tcg, Arch::Riscv64) => "rv64",
            _ => self.cpu(),
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
    /// Picks the accelerator for an x86_64 guest.
    pub fn resolve(self) -> Result<ResolvedAccel, RunnerError> {
        self.resolve_for(Arch::X86_64)
    }

    /// Picks the accelerator for a guest of `arch`: TCG unless the host runs `arch` natively.
    pub fn resolve_for(self, arch: Arch) -> Result<ResolvedAccel, RunnerError> {
        if !arch.is_host() {
            return match self {
                Accel::Kvm => Err(RunnerError::Usage(format!(
                    "--accel kvm: an {arch} guest cannot use KVM on this {} host (use --accel tcg)",
                    std::env::consts::ARCH
                ))),
                Accel::Auto | Accel::Tcg => Ok(ResolvedAccel::Tcg),
            };
        }
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
