//! One boot, start to finish: disks, kernel, QEMU, console, defmt log, result.

use std::path::PathBuf;
use std::time::Duration;

use crate::console::{Line, Transcript};
use crate::exit_status::{self, classify, Outcome, Status};
use crate::machine::{Accel, Machine, Transport};
use crate::qemu::QemuConfig;
use crate::workspace::RunDir;
use crate::{chain, defmt_log, drives, footprint, headroom, install, kernel, process, qemu, series, stack_check, write_log};
use crate::{BootResult, Drive, RunnerError};

/// The workload when the runner makes the default disk.
pub const DEFAULT_CMD_SCRATCH: &str = "demo";
/// The workload when the user gives disks: read-only, never writes a user's disk unasked.
pub const DEFAULT_CMD_USER_DRIVES: &str = "devices";
/// Default guest RAM in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 256;
/// Default hard timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What to boot and how.
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// The disks, in order. Empty: the default 64 MiB scratch disk `target/strata/default-disk.img`
    /// as `disk0`.
    pub drives: Vec<Drive>,
    /// The kernel command line. `None`: `demo` on the default disk, `devices` with user disks.
    pub cmd: Option<String>,
    /// The machine type.
    pub machine: Machine,
    /// The virtio transport; `None`: the machine's default ([`Machine::default_transport`]).
    pub transport: Option<Transport>,
    /// The accelerator.
    pub accel: Accel,
    /// Kill QEMU after this long.
    pub timeout: Duration,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// A prebuilt kernel ELF. `None`: `STRATA_KERNEL`, else build it.
    pub kernel: Option<PathBuf>,
    /// Install QEMU with `scripts/setup.sh` if it is missing (root only).
    pub install: bool,
    /// Print nothing (no progress on stderr, no console echo).
    pub quiet: bool,
    /// Echo human console lines to stdout as they arrive (unless `quiet`).
    pub echo_console: bool,
    /// A qcow2 drive's backing and data files may lie outside its directory tree.
    pub allow_backing_anywhere: bool,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            drives: Vec::new(),
            cmd: None,
            machine: Machine::default(),
            transport: None,
            accel: Accel::default(),
            timeout: DEFAULT_TIMEOUT,
            memory_mib: DEFAULT_MEMORY_MIB,
            kernel: None,
            install: true,
            quiet: false,
            echo_console: false,
            allow_backing_anywhere: false,
        }
    }
}

/// The most guest RAM the kernel can use, in MiB.
pub const MAX_MEMORY_MIB: u32 = 3072;

/// Boots the kernel in QEMU and waits for it (or the timeout).
///
/// `Err` means the boot could not be attempted or QEMU could not start; a boot that ran and
/// failed, panicked or timed out is an `Ok(BootResult)` with that status.
pub fn boot(opts: &BootOptions) -> Result<BootResult, RunnerError> {
    if opts.timeout.is_zero() {
        return Err(RunnerError::Usage("the timeout must be positive".into()));
    }
    // The kernel's image with its static memory (a 4 MiB stack among it) is about 17 MiB.
    if opts.memory_mib < 32 {
        return Err(RunnerError::Usage("the guest needs at least 32 MiB".into()));
    }
    // riscv64 virt: OpenSBI's 2 MiB and the kernel's image start RAM, and QEMU 7.2 puts the
    // device tree on the 16 MiB line below RAM's end: with 32 MiB it would land in the `.bss`.
    if opts.machine == Machine::RiscvVirt && opts.memory_mib < 64 {
        return Err(RunnerError::Usage("--arch riscv64: the guest needs at least 64 MiB".into()));
    }
    // The kernel identity-maps the first 4 GiB, and the x86 machines put RAM past 3 GiB above
    // the 4 GiB line (below it are the PCI and virtio-mmio windows); aarch64 virt's RAM starts at
    // 1 GiB, so 3 GiB of it ends at the same line.
    if opts.memory_mib > MAX_MEMORY_MIB {
        return Err(RunnerError::Usage(format!("--memory {}: the guest uses at most {MAX_MEMORY_MIB} MiB", opts.memory_mib)));
    }
    let transport = opts.transport.unwrap_or(opts.machine.default_transport());
    if !opts.machine.supports(transport) {
        return Err(RunnerError::Usage(format!("--transport {transport}: the {} machine has no {transport} transport", opts.machine)));
    }
    let (drives, default_cmd) = if opts.drives.is_empty() {
        (vec![drives::default_disk()?], DEFAULT_CMD_SCRATCH)
    } else {
        (drives::validate(&opts.drives)?, DEFAULT_CMD_USER_DRIVES)
    };
    // qcow2 drives bring their backing and data files as more raw drives, with name maps for
    // the kernel (see `chain`).
    // Warnings (a writable drive probed as raw) are reported with the result, as every other.
    // Pack disks (a chain deeper than the slots) live until QEMU is gone: `_packs` removes them.
    let chain::Expanded { drives, words, warnings: probe_warnings, packs: _packs } = chain::expand(&drives, opts.machine, transport, opts.allow_backing_anywhere)?;
    let mut cmdline = opts.cmd.as_deref().unwrap_or(default_cmd).to_string();
    for word in &words {
        cmdline.push(' ');
        cmdline.push_str(word);
    }
    let arch = opts.machine.arch();
    let accel = opts.accel.resolve_for(arch)?;
    let program = qemu::program_for(arch);
    install::ensure_qemu_for(arch, &program, opts.install, opts.quiet)?;
    let kernel = kernel::resolve_for(arch, opts.kernel.as_deref(), opts.quiet)?;

    // Write logs start empty; none may be a file a drive (or its chain) reads.
    write_log::prepare_all(&drives)?;
    // Writable qcow2 images get room to grow; given back when QEMU is gone (the guard also
    // does it on every early return).
    let grown = headroom::grow(&drives)?;
    // The extension reads as zeros: the guest need not write zeros there.
    for word in grown.zeroed_words() {
        cmdline.push(' ');
        cmdline.push_str(&word);
    }
    let cmdline = cmdline.as_str();
    let run_dir = RunDir::create()?;
    let defmt_file = run_dir.path().join("defmt.bin");
    let config = QemuConfig {
        kernel: &kernel,
        cmdline,
        memory_mib: opts.memory_mib,
        machine: opts.machine,
        transport,
        accel,
        drives: &drives,
        defmt_file: &defmt_file,
    };
    let args = config.args();
    let qemu_command = qemu::command_line(&program, &args);

    let echo = opts.echo_console && !opts.quiet;
    let mut transcript = Transcript::default();
    let finished = process::run(&program, &args, opts.timeout, &mut |line| {
        if echo {
            if let Line::Text(t) | Line::BadRecord { text: t, .. } = &line {
                println!("{t}");
            }
        }
        transcript.push(line);
    });
    let shrink_warnings = grown.shrink();
    let finished = finished?;

    let exit_record = transcript.record_u64("exit", "code");
    let mut outcome = classify(finished.exit, exit_record, &finished.stderr);
    if outcome.message.is_none() && outcome.status != Status::Ok {
        outcome.message = kernel_error(&transcript);
    }
    let mut warnings = probe_warnings;
    match stack_check::judge(transcript.record_u64("stack", "deepest_bytes"), transcript.record_u64("stack", "painted_bytes")) {
        stack_check::Verdict::Fine => {}
        stack_check::Verdict::Tight(w) => warnings.push(w),
        // A workload that reported success after nearly running off its stack cannot be trusted.
        stack_check::Verdict::Exhausted(m) if outcome.status == Status::Ok => {
            outcome = Outcome { status: Status::Panic, exit_code: exit_status::PANIC, kernel_code: outcome.kernel_code, message: Some(m) };
        }
        stack_check::Verdict::Exhausted(m) => warnings.push(m),
    }
    warnings.append(&mut transcript.warnings);
    warnings.extend(shrink_warnings);
    let log = read_log(&kernel, &defmt_file, &mut warnings);
    let block_footprint = match std::fs::read(&kernel).map_err(|e| e.to_string()).and_then(|elf| footprint::block_share(&elf)) {
        Ok(share) => Some(share),
        Err(e) => {
            warnings.push(format!("block layer footprint: {e}"));
            None
        }
    };
    if run_dir.kept() && !opts.quiet {
        eprintln!("strata: run directory kept: {}", run_dir.path().display());
    }
    Ok(BootResult {
        status: outcome.status,
        exit_code: outcome.exit_code,
        kernel_code: outcome.kernel_code,
        message: outcome.message,
        machine: opts.machine,
        transport,
        accel,
        qemu_wall_ms: u64::try_from(finished.wall.as_millis()).unwrap_or(u64::MAX),
        boot_to_first_io_us: transcript.record_u64("exit", "first_io_us"),
        entry_us: transcript.record_u64("boot", "entry_us"),
        block_footprint,
        cmdline: cmdline.to_string(),
        bench_series: series::from_records(&transcript.records),
        records: transcript.records,
        console: transcript.text,
        log,
        warnings,
        qemu_stderr: finished.stderr,
        qemu_command,
    })
}

/// The message of the kernel's first `error` record.
fn kernel_error(transcript: &Transcript) -> Option<String> {
    let message = transcript.record("error")?.get("message")?.as_str()?;
    Some(message.to_string())
}

/// Reads and decodes the defmt stream; problems become warnings.
fn read_log(
    kernel: &std::path::Path,
    defmt_file: &std::path::Path,
    warnings: &mut Vec<String>,
) -> Vec<defmt_log::LogLine> {
    let bytes = match std::fs::read(defmt_file) {
        Ok(b) => b,
        // QEMU that failed early never created it.
        Err(_) => return Vec::new(),
    };
    if bytes.is_empty() {
        return Vec::new();
    }
    let elf = match std::fs::read(kernel) {
        Ok(e) => e,
        Err(e) => {
            warnings.push(format!("cannot read {} for defmt: {e}", kernel.display()));
            return Vec::new();
        }
    };
    let decoded = defmt_log::decode(&elf, &bytes);
    warnings.extend(decoded.warnings);
    decoded.lines
}
