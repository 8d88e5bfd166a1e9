//! The help texts of `qemu-runner` and its subcommands.

use crate::{boot, exit_status};

/// The subcommands and their one-line summaries (the help lists them, the parser knows them by
/// these names).
pub const SUBCOMMANDS: &[(&str, &str)] = &[
    ("boot", "boot the Strata kernel in QEMU on virtio-blk disks and report"),
    ("img", "qemu-img's and qemu-io's commands over Strata's block layer on host files (img help)"),
];

/// The top-level help.
pub fn main_help() -> String {
    let mut s = String::from(
        "qemu-runner: build the Strata kernel, boot it in QEMU, decode its logs, report.\n\n\
         Usage: qemu-runner <SUBCOMMAND> [OPTIONS]\n       \
         cargo run -p qemu-runner -- <SUBCOMMAND> [OPTIONS]\n\nSubcommands:\n",
    );
    for (name, summary) in SUBCOMMANDS {
        s.push_str(&format!("  {name:<6} {summary}\n"));
    }
    s.push_str("  help   print this help, or a subcommand's (help boot)\n\n");
    s.push_str("Run 'qemu-runner <SUBCOMMAND> --help' for its options.\n\n");
    s.push_str(exit_status::HELP);
    s.push('\n');
    s
}

/// The help of `boot`.
pub fn boot_help() -> String {
    format!(
        "\
qemu-runner boot: boot the Strata kernel in QEMU on virtio-blk disks and report.

Usage: qemu-runner boot [OPTIONS]

Options:
  --drive OPTS       attach a raw disk (repeatable); OPTS in Strata's options
                     grammar: [file=]F[,serial=S][,read-only=on], or
                     driver=null-co,size=BYTES[,serial=S] for QEMU's null driver
                     (reads zeros, drops writes; for benchmarks). ',,' is a comma
                     inside a value. Serial: 1-20 bytes of printable ASCII without
                     ',' or spaces, unique; default disk0, disk1, ... in --drive
                     order. A missing file is an error (exit 2) before QEMU starts.
                     A qcow2 file brings its backing chain and data files (found
                     as 'img' finds them) as more raw read-only drives S.1, S.2,
                     ..., and '--map NAME=S.n' words on the kernel command line
                     for the names the images write; the guest opens the chain.
                     format=raw|qcow2 names the image format (never probed; the
                     kernel opens it with that driver): a raw disk whose first
                     bytes look like qcow2 stays raw. Without it a writable drive
                     probed as raw gets QEMU's warning, and the guest refuses
                     writes that would put an image header into its block 0.
                     A drive shared with another process (QEMU's image lock)
                     or one file on two drives where one writes is refused.
                     headroom=SIZE (default: the image's fully allocated size
                     + 1/16, at least 256M; 0: none): a writable qcow2 file is
                     extended (sparse) by SIZE for the boot, room for the image
                     to grow, and cut back to the image's end afterwards.
                     log=PATH puts QEMU's blklogwrites under a writable file
                     drive: its writes, write-zeroes, discards and flushes are
                     logged to PATH (emptied first; dm-log-writes format, 512-byte
                     sectors) for crash replay (tests/tests/guest_crash.rs).
                     Without --drive: a 64 MiB scratch disk
                     target/strata/default-disk.img (serial disk0) is made once
                     and reused.
  --cmd CMD          the kernel command line, WORKLOAD [OPTIONS] [--flag value...]
                     (default: 'demo' on the scratch disk; 'devices' when --drive
                     is given, so a user's disk is never written unasked).
                     OPTIONS names the node to open in the options grammar
                     (SERIAL, or driver=raw,offset=1M,size=4M,file=SERIAL).
                     Workloads: devices, sha256 OPTIONS, demo [OPTIONS],
                     bench OPTIONS [--rw randread|randwrite|read|write] [--bs 4k]
                     [--qd 1..64] [--seconds N | --count N], logbench; a bad
                     command line makes the kernel print its usage (exit 2)
  --arch A           x86_64 (default), aarch64 (arm64 `virt` under TCG:
                     qemu-system-aarch64, kernel target aarch64-unknown-none)
                     or riscv64 (`virt` under TCG and OpenSBI, -bios default,
                     -cpu rv64: qemu-system-riscv64, kernel target
                     riscv64gc-unknown-none-elf); their packages are installed
                     only when they are asked for
  --machine M        microvm (default; virtio-mmio, fastest boot), pc or q35
                     (virtio-pci); virt for aarch64 and riscv64 (virtio-mmio
                     from the device tree; the default with either --arch)
  --transport T      mmio or pci: how the disks are attached (default: mmio on
                     microvm and virt, pci on pc and q35). virt takes both; with
                     pci its disks are virtio-blk-pci on the PCIe host bridge,
                     whose BARs the kernel assigns from the device tree
  --accel A          tcg (default), kvm, or auto (kvm if /dev/kvm opens
                     read-write, else tcg). This machine's KVM is nested, where
                     VM exits are slow: KVM is often slower than TCG here, and
                     tests pin tcg. TCG uses -cpu max (rv64 on riscv64), KVM
                     -cpu host.
  --timeout S        kill QEMU after S seconds (default {timeout}; fractions allowed)
  --memory MiB       guest RAM (default {memory})
  --kernel PATH      boot this kernel ELF instead of building one
  --json             print exactly one JSON object on stdout (status, exit_code,
                     kernel_code, machine, accel, qemu_wall_ms,
                     boot_to_first_io_us, entry_us, block_footprint, records,
                     bench_series (after a bench: latency_histogram
                     [{{lo_ns, hi_ns, count}}], iops_series {{interval_ns,
                     elapsed_ns, counts, iops}}), console, log,
                     warnings, qemu_stderr, qemu_command); progress goes to
                     stderr. Errors before the boot print {{status, exit_code,
                     error}}.
  --plot FILE.svg    with --cmd 'bench ...': draw the run's latency histogram
                     (requests per half-octave bucket, log-scale latency) and
                     IOPS over time (at most 64 intervals of 1 ms or more) as an
                     SVG page titled with the run's parameters. Without a bench
                     command: usage error (exit 2); a plot that cannot be
                     drawn is a warning, and exit 5 if the boot succeeded.
  --no-install       do not install QEMU if it is missing
  --allow-backing-anywhere
                     a qcow2 drive's backing and data files may lie outside
                     the directory tree of its file
  -h, --help         print this help

Without --kernel, the kernel is built with
  cargo build -p strata-kernel --release --target x86_64-unknown-none \\
      --target-dir target/kernel
(cargo's output is shown only if the build fails: exit 5). DEFMT_LOG defaults
to 'info' for that build; RUSTFLAGS is not passed on. If the toolchain lacks the
x86_64-unknown-none target, the runner first adds it:
  scripts/setup.sh target:x86_64-unknown-none      (rustup target add)

If qemu-system-x86_64, qemu-img or qemu-io is missing and the runner is root, it
runs (unless --no-install; otherwise it exits 5 and prints that command)
  scripts/setup.sh qemu-system-x86 qemu-utils
which installs Debian's packages with apt-get at one release: the emulator that
matches an installed qemu-utils (from backports if qemu-utils came from there),
else both from the Debian release. For --arch aarch64 the same holds for
qemu-system-aarch64 (package qemu-system-arm) and the aarch64-unknown-none
target (built into target/kernel/aarch64-unknown-none/), and for --arch riscv64
for qemu-system-riscv64 (package qemu-system-misc) and the
riscv64gc-unknown-none-elf target (built with relocation-model=pic, whose GOT
reaches defmt's string indexes from a kernel at 0x8020_0000).

Channels: the console is COM1 on QEMU's stdout; lines starting with '@{{' are
JSON records (boot, footprint, device, sha256, demo, bench, bench_latency,
bench_series, error, exit, ...) collected
for --json and hidden from the human transcript. defmt logs arrive on debugcon
(port 0xe9) and are decoded with the kernel ELF after QEMU exits, printed as
'[   1.234567 INFO ] message'. The kernel exits through isa-debug-exit (port 0xf4;
QEMU exits with 2*code+1). On aarch64 virt: the console is the PL011, defmt goes
to the semihosting console and the exit status through semihosting SYS_EXIT
(-semihosting-config; again 2*code+1). On riscv64 virt: OpenSBI's banner, then
the kernel, on the NS16550A; defmt on the semihosting console; the exit status
through the SiFive test finisher (again 2*code+1).

Environment:
  CARGO             cargo used for the kernel build (default: cargo)
  QEMU_SYSTEM       QEMU binary (default: qemu-system-x86_64; never installed)
  QEMU_SYSTEM_AARCH64 QEMU binary for --arch aarch64 (default:
                    qemu-system-aarch64; never installed)
  QEMU_SYSTEM_RISCV64 QEMU binary for --arch riscv64 (default:
                    qemu-system-riscv64; never installed)
  STRATA_KERNEL     prebuilt kernel ELF, as --kernel
  STRATA_KERNEL_AARCH64 prebuilt aarch64 kernel ELF
  STRATA_KERNEL_RISCV64 prebuilt riscv64 kernel ELF
  STRATA_KEEP_RUN   keep the run directory target/strata/runs/<pid>-<n>/
                    (defmt.bin) after the run
  DEFMT_LOG         defmt filter for the kernel build (default: info)

{status}
",
        timeout = boot::DEFAULT_TIMEOUT.as_secs(),
        memory = boot::DEFAULT_MEMORY_MIB,
        status = exit_status::HELP,
    )
}
