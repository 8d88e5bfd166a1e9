//! The QEMU command line for one boot.
//!
//! Channels: the console is the first serial port on QEMU's stdout (`-serial stdio`: COM1, or
//! the PL011 on aarch64 `virt`); defmt logs go to a file: from the debugcon port 0xe9 on x86,
//! from the semihosting console on `virt`; the kernel ends the machine through `isa-debug-exit`
//! at port 0xf4 on x86 and semihosting SYS_EXIT on `virt` (QEMU's status is `2 * code + 1` on
//! both). Disks are raw `-drive if=none` backends (opened through `file.filename`, so a
//! name with a `:` is never taken for a protocol), or `-blockdev driver=null-co` nodes, behind
//! virtio-blk devices: `virtio-blk-device` (virtio-mmio) on microvm and virt, `virtio-blk-pci`
//! on pc and q35 and on virt (aarch64 and riscv64) with `--transport pci`. A drive with `log=` is three `-blockdev` nodes instead: file, log file and the
//! `blklogwrites` filter (see [`crate::write_log`]).

use std::ffi::OsString;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::machine::{Arch, Machine, ResolvedAccel, Transport};
use crate::drives::Backing;
use crate::write_log;
use crate::Drive;

/// The default QEMU binary; `QEMU_SYSTEM` overrides it.
pub const DEFAULT_QEMU: &str = "qemu-system-x86_64";

/// The environment variable naming another QEMU binary.
pub const QEMU_ENV: &str = "QEMU_SYSTEM";

/// `isa-debug-exit`'s I/O port, where the kernel writes its exit code.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The debugcon I/O port of the defmt channel.
pub const DEBUGCON_PORT: u16 = 0xe9;

/// microvm's properties: a PIT for TSC calibration, no PIC or RTC, and no virtio-mmio entries
/// appended to our command line. All exist in QEMU 7.2 through 10.x. Option ROMs stay on: QEMU
/// 10's microvm boots a PVH kernel through its `pvh.bin` option ROM, and with
/// `x-option-roms=off` the guest never starts (7.2's qboot loaded it without one).
const MICROVM: &str = "microvm,pit=on,pic=off,rtc=off,auto-kernel-cmdline=off";

/// The environment variable naming another QEMU binary for aarch64 guests.
pub const QEMU_AARCH64_ENV: &str = "QEMU_SYSTEM_AARCH64";

/// The environment variable naming another QEMU binary for riscv64 guests.
pub const QEMU_RISCV64_ENV: &str = "QEMU_SYSTEM_RISCV64";

/// The QEMU binary to run for x86_64: `QEMU_SYSTEM` or `qemu-system-x86_64`.
pub fn program() -> OsString {
    std::env::var_os(QEMU_ENV).unwrap_or_else(|| DEFAULT_QEMU.into())
}

/// The QEMU binary to run for `arch`: for x86_64 as [`program`]; for aarch64
/// `QEMU_SYSTEM_AARCH64` or `qemu-system-aarch64`.
pub fn program_for(arch: Arch) -> OsString {
    match arch {
        Arch::X86_64 => program(),
        Arch::Aarch64 => std::env::var_os(QEMU_AARCH64_ENV).unwrap_or_else(|| arch.qemu_program().into()),
        Arch::Riscv64 => std::env::var_os(QEMU_RISCV64_ENV).unwrap_or_else(|| arch.qemu_program().into()),
    }
}

/// Everything that goes into one QEMU command line.
#[derive(Clone, Debug)]
pub struct QemuConfig<'a> {
    /// The kernel ELF (`-kernel`).
    pub kernel: &'a Path,
    /// The kernel command line (`-append`).
    pub cmdline: &'a str,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// The machine type.
    pub machine: Machine,
    /// The virtio transport (one the machine supports).
    pub transport: Transport,
    /// The accelerator.
    pub accel: ResolvedAccel,
    /// The disks, in order; validated already.
    pub drives: &'a [Drive],
    /// Where debugcon (the defmt stream) is written.
    pub defmt_file: &'a Path,
}

/// Escapes a value for a QEMU option string (`,` becomes `,,`).
pub fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// A path as text for QEMU, escaped.
fn path_value(path: &Path) -> String {
    escape(&path.to_string_lossy())
}

/// QEMU's block protocol driver for a host path: `host_device` for block devices, else `file`.
fn protocol_driver(path: &Path) -> &'static str {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => "host_device",
        _ => "file",
    }
}

impl QemuConfig<'_> {
    /// The arguments after the program name.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| (*s).to_string()));
        let kernel = self.kernel.to_string_lossy();
        let memory = self.memory_mib.to_string();
        let machine = match self.machine {
            Machine::Microvm => MICROVM,
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
            Machine::Virt | Machine::RiscvVirt => "virt",
        };
        push(&["-machine", machine, "-accel", self.accel.as_str()]);
        push(&["-cpu", self.accel.cpu_for(self.machine.arch()), "-m", &memory]);
        if self.machine == Machine::RiscvVirt {
            // OpenSBI (QEMU's own build) starts the kernel in S-mode with the device tree in a1.
            push(&["-bios", "default"]);
        }
        push(&["-kernel", &kernel, "-append", self.cmdline]);
        push(&[
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
        ]);
        push(&["-serial", "stdio"]);
        let chardev = format!("file,id=defmt,path={}", path_value(self.defmt_file));
        if self.machine.arch() == Arch::X86_64 {
            let exit = format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04");
            push(&["-device", &exit]);
            let debugcon = format!("isa-debugcon,iobase={DEBUGCON_PORT:#x},chardev=defmt");
            push(&["-chardev", &chardev, "-device", &debugcon]);
        } else {
            // Semihosting: SYS_EXIT for the status, its console (the chardev) for defmt.
            push(&["-chardev", &chardev]);
            push(&["-semihosting-config", "enable=on,target=native,chardev=defmt"]);
        }
        let device = match self.transport {
            Transport::Mmio => "virtio-blk-device",
            Transport::Pci => "virtio-blk-pci",
        };
        for (i, drive) in self.drives.iter().enumerate() {
            let frontend = format!("{device},drive=d{i},serial={}", escape(&drive.serial));
            match drive.backing {
                Backing::File if drive.log.is_some() => {
                    let log = drive.log.as_deref().map(path_value).unwrap_or_default();
                    let node = format!("d{i}");
                    for dev in write_log::blockdevs(&node, protocol_driver(&drive.file), &path_value(&drive.file), &log) {
                        push(&["-blockdev", &dev]);
                    }
                    push(&["-device", &frontend]);
                }
                Backing::File => {
                    let mut backend = format!(
                        "if=none,id=d{i},format=raw,file.driver={},file.filename={}",
                        protocol_driver(&drive.file),
                        path_value(&drive.file)
                    );
                    if drive.read_only {
                        backend.push_str(",readonly=on");
                    }
                    push(&["-drive", &backend, "-device", &frontend]);
                }
                Backing::NullCo { size } => {
                    let mut node =
                        format!("driver=null-co,node-name=d{i},size={size},read-zeroes=on");
                    if drive.read_only {
                        node.push_str(",read-only=on");
                    }
                    push(&["-blockdev", &node, "-device", &frontend]);
                }
            }
        }
        args
    }
}

/// The full command as text: program then arguments (for the result and error messages).
pub fn command_line(program: &OsString, args: &[String]) -> Vec<String> {
    let mut all = vec![PathBuf::from(program).to_string_lossy().into_owned()];
    all.extend(args.iter().cloned());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config<'a>(machine: Machine, drives: &'a [Drive]) -> QemuConfig<'a> {
        QemuConfig {
            kernel: Path::new("/k/strata-kernel"),
            cmdline: "sha256 disk0",
            memory_mib: 256,
            machine,
            transport: machine.default_transport(),
            accel: ResolvedAccel::Tcg,
            drives,
            defmt_file: Path::new("/run,1/defmt.bin"),
        }
    }

    /// The value after each occurrence of `flag`.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w.first().map(String::as_str) == Some(flag))
            .filter_map(|w| w.get(1).map(String::as_str))
            .collect()
    }

    #[test]
    fn microvm_uses_virtio_mmio() {
        let drives = [
            Drive::new("/img/a,b.img", "disk0"),
            Drive {
                read_only: true,
                ..Drive::new("/img/base.img", "base")
            },
        ];
        let args = config(Machine::Microvm, &drives).args();
        assert_eq!(values(&args, "-machine"), [MICROVM]);
        assert_eq!(values(&args, "-accel"), ["tcg"]);
        assert_eq!(values(&args, "-cpu"), ["max"]);
        assert_eq!(values(&args, "-m"), ["256"]);
        assert_eq!(values(&args, "-kernel"), ["/k/strata-kernel"]);
        assert_eq!(values(&args, "-append"), ["sha256 disk0"]);
        assert_eq!(values(&args, "-serial"), ["stdio"]);
        assert_eq!(
            values(&args, "-chardev"),
            ["file,id=defmt,path=/run,,1/defmt.bin"]
        );
        assert_eq!(
            values(&args, "-drive"),
            [
                "if=none,id=d0,format=raw,file.driver=file,file.filename=/img/a,,b.img",
                "if=none,id=d1,format=raw,file.driver=file,file.filename=/img/base.img,readonly=on",
            ]
        );
        assert_eq!(
            values(&args, "-device"),
            [
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "isa-debugcon,iobase=0xe9,chardev=defmt",
                "virtio-blk-device,drive=d0,serial=disk0",
                "virtio-blk-device,drive=d1,serial=base",
            ]
        );
        for flag in ["-nodefaults", "-no-reboot"] {
            assert!(args.iter().any(|a| a == flag), "{flag} missing");
        }
    }

    #[test]
    fn pc_and_q35_use_virtio_pci() {
        let drives = [Drive::new("/img/a.img", "disk0")];
        for (machine, name) in [(Machine::Pc, "pc"), (Machine::Q35, "q35")] {
            let mut cfg = config(machine, &drives);
            cfg.accel = ResolvedAccel::Kvm;
            let args = cfg.args();
            assert_eq!(values(&args, "-machine"), [name]);
            assert_eq!(values(&args, "-accel"), ["kvm"]);
            assert_eq!(values(&args, "-cpu"), ["host"]);
            assert_eq!(
                values(&args, "-device").last().copied(),
                Some("virtio-blk-pci,drive=d0,serial=disk0")
            );
        }
    }

    #[test]
    fn virt_uses_semihosting_and_virtio_mmio() {
        let drives = [Drive::new("/img/a.img", "disk0")];
        let args = config(Machine::Virt, &drives).args();
        assert_eq!(values(&args, "-machine"), ["virt"]);
        assert_eq!(values(&args, "-cpu"), ["max"]);
        assert_eq!(values(&args, "-semihosting-config"), ["enable=on,target=native,chardev=defmt"]);
        assert_eq!(values(&args, "-chardev"), ["file,id=defmt,path=/run,,1/defmt.bin"]);
        assert_eq!(values(&args, "-device"), ["virtio-blk-device,drive=d0,serial=disk0"]);
    }

    #[test]
    fn riscv64_virt_boots_opensbi_with_rv64_semihosting_and_virtio_mmio() {
        let drives = [Drive::new("/img/a.img", "disk0")];
        let args = config(Machine::RiscvVirt, &drives).args();
        assert_eq!(values(&args, "-machine"), ["virt"]);
        assert_eq!(values(&args, "-cpu"), ["rv64"]);
        assert_eq!(values(&args, "-bios"), ["default"]);
        assert_eq!(values(&args, "-semihosting-config"), ["enable=on,target=native,chardev=defmt"]);
        assert_eq!(values(&args, "-device"), ["virtio-blk-device,drive=d0,serial=disk0"]);
        assert!(values(&config(Machine::Virt, &drives).args(), "-bios").is_empty());
    }

    #[test]
    fn virt_with_pci_uses_virtio_blk_pci() {
        let drives = [Drive::new("/img/a.img", "disk0"), Drive::new("/img/b.img", "disk1")];
        let mut cfg = config(Machine::Virt, &drives);
        cfg.transport = Transport::Pci;
        let args = cfg.args();
        assert_eq!(values(&args, "-machine"), ["virt"]);
        assert_eq!(
            values(&args, "-device"),
            ["virtio-blk-pci,drive=d0,serial=disk0", "virtio-blk-pci,drive=d1,serial=disk1"]
        );
    }

    #[test]
    fn riscv64_virt_with_pci_uses_virtio_blk_pci() {
        let drives = [Drive::new("/img/a.img", "disk0")];
        let mut cfg = config(Machine::RiscvVirt, &drives);
        cfg.transport = Transport::Pci;
        let args = cfg.args();
        assert_eq!(values(&args, "-bios"), ["default"]);
        assert_eq!(values(&args, "-device"), ["virtio-blk-pci,drive=d0,serial=disk0"]);
    }

    #[test]
    fn null_co_is_a_blockdev() {
        let mut null = Drive::null_co(1 << 30, "null0");
        null.read_only = true;
        let drives = [null];
        let args = config(Machine::Microvm, &drives).args();
        assert_eq!(
            values(&args, "-blockdev"),
            ["driver=null-co,node-name=d0,size=1073741824,read-zeroes=on,read-only=on"]
        );
        assert!(values(&args, "-drive").is_empty());
        assert_eq!(
            values(&args, "-device").last().copied(),
            Some("virtio-blk-device,drive=d0,serial=null0")
        );
    }

    #[test]
    fn logged_drive_is_a_blklogwrites_filter() {
        let drives = [Drive { log: Some("/img/w,1.log".into()), ..Drive::new("/img/a.qcow2", "top") }];
        let args = config(Machine::Microvm, &drives).args();
        assert_eq!(
            values(&args, "-blockdev"),
            [
                "driver=file,node-name=d0-file,filename=/img/a.qcow2",
                "driver=file,node-name=d0-log,filename=/img/w,,1.log",
                "driver=blklogwrites,node-name=d0,file=d0-file,log=d0-log,log-sector-size=512",
            ]
        );
        assert!(values(&args, "-drive").is_empty());
        assert_eq!(values(&args, "-device").last().copied(), Some("virtio-blk-device,drive=d0,serial=top"));
    }

    #[test]
    fn no_drives_no_block_devices() {
        let args = config(Machine::Microvm, &[]).args();
        assert!(values(&args, "-drive").is_empty());
    }
}
