//! The command line: `qemu-runner <SUBCOMMAND> [OPTIONS]`, parsed by hand, and its help texts.
//!
//! Subcommands are listed in [`crate::help::SUBCOMMANDS`]; a new one (such as `img`) adds an entry there, a
//! variant to [`Command`], a parse function and a run function.

use std::path::PathBuf;
use std::time::Duration;

use crate::help::{boot_help, main_help, SUBCOMMANDS};
use crate::machine::{Arch, Machine};
use crate::{boot, exit_status, BootOptions, Drive, RunnerError};

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print this help text and exit 0.
    Help(String),
    /// `boot`.
    Boot(BootArgs),
}

/// The arguments of `boot`.
#[derive(Debug)]
pub struct BootArgs {
    /// What to boot.
    pub options: BootOptions,
    /// Print one JSON object on stdout instead of the human report.
    pub json: bool,
    /// `--plot FILE.svg`: draw the guest `bench` run's latency histogram and IOPS over time.
    pub plot: Option<PathBuf>,
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, RunnerError> {
    let Some((sub, rest)) = args.split_first() else {
        return Ok(Command::Help(main_help()));
    };
    match sub.as_str() {
        "-h" | "--help" => Ok(Command::Help(main_help())),
        "help" => match rest.first().map(String::as_str) {
            None => Ok(Command::Help(main_help())),
            Some("boot") => Ok(Command::Help(boot_help())),
            Some(other) => Err(unknown_subcommand(other)),
        },
        "boot" => parse_boot(rest),
        other => Err(unknown_subcommand(other)),
    }
}

/// The error for an unknown subcommand.
fn unknown_subcommand(name: &str) -> RunnerError {
    let names: Vec<&str> = SUBCOMMANDS.iter().map(|(n, _)| *n).collect();
    RunnerError::Usage(format!(
        "unknown subcommand \"{name}\" (known: {}); try --help",
        names.join(", ")
    ))
}

/// Walks `--flag value` and `--flag=value` arguments.
struct Flags<'a> {
    /// The arguments not yet read.
    rest: std::slice::Iter<'a, String>,
}

impl<'a> Flags<'a> {
    /// The next flag and its inline `=value`, if any.
    fn next_flag(&mut self) -> Option<(&'a str, Option<&'a str>)> {
        let arg = self.rest.next()?;
        Some(match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (arg.as_str(), None),
        })
    }

    /// The value of `flag`: inline, or the next argument.
    fn value(&mut self, flag: &str, inline: Option<&'a str>) -> Result<&'a str, RunnerError> {
        match inline {
            Some(v) => Ok(v),
            None => self
                .rest
                .next()
                .map(String::as_str)
                .ok_or_else(|| RunnerError::Usage(format!("{flag} needs a value"))),
        }
    }
}

/// Parses the options of `boot`.
fn parse_boot(args: &[String]) -> Result<Command, RunnerError> {
    let mut options = BootOptions {
        echo_console: true,
        ..BootOptions::default()
    };
    let mut json = false;
    let mut plot = None;
    let mut machine: Option<Machine> = None;
    let mut arch: Option<Arch> = None;
    let mut flags = Flags { rest: args.iter() };
    while let Some((flag, inline)) = flags.next_flag() {
        match flag {
            "-h" | "--help" => return Ok(Command::Help(boot_help())),
            "--drive" => {
                let text = flags.value(flag, inline)?;
                let index = options.drives.len();
                options.drives.push(Drive::parse(text, index)?);
            }
            "--cmd" => options.cmd = Some(flags.value(flag, inline)?.to_string()),
            "--machine" => machine = Some(flags.value(flag, inline)?.parse()?),
            "--arch" => arch = Some(flags.value(flag, inline)?.parse()?),
            "--transport" => options.transport = Some(flags.value(flag, inline)?.parse()?),
            "--accel" => options.accel = flags.value(flag, inline)?.parse()?,
            "--timeout" => options.timeout = parse_timeout(flags.value(flag, inline)?)?,
            "--memory" => options.memory_mib = parse_memory(flags.value(flag, inline)?)?,
            "--kernel" => options.kernel = Some(PathBuf::from(flags.value(flag, inline)?)),
            "--json" => {
                no_value(flag, inline)?;
                json = true;
            }
            "--plot" => plot = Some(PathBuf::from(flags.value(flag, inline)?)),
            "--no-install" => {
                no_value(flag, inline)?;
                options.install = false;
            }
            "--allow-backing-anywhere" => {
                no_value(flag, inline)?;
                options.allow_backing_anywhere = true;
            }
            other => {
                return Err(RunnerError::Usage(format!(
                    "boot: unknown argument \"{other}\"; try 'qemu-runner boot --help'"
                )))
            }
        }
    }
    options.machine = match (arch, machine) {
        (Some(a), Some(m)) => m.on(a).ok_or_else(|| {
            RunnerError::Usage(format!("--machine {m} is not an {a} machine"))
        })?,
        (None, Some(m)) => m,
        (Some(a), None) => a.default_machine(),
        (None, None) => Machine::default(),
    };
    if let Some(t) = options.transport {
        if !options.machine.supports(t) {
            return Err(RunnerError::Usage(format!("--transport {t}: the {} machine has no {t} transport", options.machine)));
        }
    }
    options.echo_console = !json;
    let workload = options
        .cmd
        .as_deref()
        .and_then(|c| c.split_whitespace().next());
    if plot.is_some() && workload != Some("bench") {
        return Err(RunnerError::Usage(
            "--plot draws the bench workload: it needs --cmd 'bench OPTIONS ...'".into(),
        ));
    }
    Ok(Command::Boot(BootArgs {
        options,
        json,
        plot,
    }))
}

/// Fails if a flag without a value was written `--flag=value`.
fn no_value(flag: &str, inline: Option<&str>) -> Result<(), RunnerError> {
    match inline {
        Some(_) => Err(RunnerError::Usage(format!("{flag} takes no value"))),
        None => Ok(()),
    }
}

/// `--timeout S`: positive seconds, fractions allowed.
fn parse_timeout(text: &str) -> Result<Duration, RunnerError> {
    let bad = || RunnerError::Usage(format!("--timeout {text}: expected positive seconds"));
    let secs: f64 = text.parse().map_err(|_| bad())?;
    if secs.is_nan() || secs <= 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// `--memory MiB`.
fn parse_memory(text: &str) -> Result<u32, RunnerError> {
    text.parse()
        .map_err(|_| RunnerError::Usage(format!("--memory {text}: expected MiB as a whole number")))
}

/// Runs the command line (`args` without the program name) and returns the exit status.
pub fn main(args: &[String]) -> i32 {
    if let Some(("img", rest)) = args.split_first().map(|(a, r)| (a.as_str(), r)) {
        return crate::img::main(rest);
    }
    let json = args.iter().any(|a| a == "--json");
    let command = match parse(args) {
        Ok(c) => c,
        Err(e) => return report_error(&e, json),
    };
    match command {
        Command::Help(text) => {
            print!("{text}");
            exit_status::OK
        }
        Command::Boot(b) => run_boot(&b),
    }
}

/// Runs `boot`, draws its `--plot`, and prints its report. A plot that cannot be drawn is a
/// warning in the report, and a runner error (exit 5) when the boot itself succeeded.
fn run_boot(args: &BootArgs) -> i32 {
    let mut result = match boot(&args.options) {
        Ok(result) => result,
        Err(e) => return report_error(&e, args.json),
    };
    let mut exit_code = result.exit_code;
    if let Some(path) = &args.plot {
        if let Err(e) = crate::plot::boot::write(&result, path) {
            if args.json {
                eprintln!("strata: error: {e}");
            }
            result.warnings.push(e);
            if exit_code == exit_status::OK {
                exit_code = exit_status::QEMU_ERROR;
            }
        }
    }
    if args.json {
        match serde_json::to_string(&result) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                return report_error(&RunnerError::io("writing the JSON result", e.into()), false)
            }
        }
    } else {
        print!("{}", result.human_tail());
    }
    exit_code
}

/// Prints an error (as the one JSON object in `--json` mode, and always on stderr) and returns its
/// exit status.
fn report_error(e: &RunnerError, json: bool) -> i32 {
    eprintln!("strata: error: {e}");
    if json {
        println!("{}", e.to_json());
    }
    e.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Accel, Machine};

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    fn boot_args(list: &[&str]) -> Result<BootArgs, String> {
        let mut all = args(&["boot"]);
        all.extend(args(list));
        match parse(&all) {
            Ok(Command::Boot(b)) => Ok(b),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn full_boot_line() {
        let b = boot_args(&[
            "--drive",
            "a.img,serial=base,read-only=on",
            "--drive=b.img",
            "--cmd",
            "bench base --count 10",
            "--machine=pc",
            "--accel",
            "auto",
            "--timeout",
            "2.5",
            "--memory",
            "512",
            "--kernel",
            "/k",
            "--json",
            "--no-install",
            "--plot",
            "p.svg",
        ]);
        let Ok(b) = b else {
            panic!("{b:?}");
        };
        let o = &b.options;
        assert!(b.json && !o.echo_console && !o.install);
        assert_eq!(b.plot.as_deref(), Some(std::path::Path::new("p.svg")));
        assert_eq!(o.drives.len(), 2);
        assert_eq!(o.drives.get(1).map(|d| d.serial.as_str()), Some("disk1"));
        assert_eq!(o.cmd.as_deref(), Some("bench base --count 10"));
        assert_eq!((o.machine, o.accel), (Machine::Pc, Accel::Auto));
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.memory_mib, 512);
        assert_eq!(o.kernel.as_deref(), Some(std::path::Path::new("/k")));
    }

    #[test]
    fn defaults() {
        let Ok(b) = boot_args(&[]) else {
            panic!("boot without options failed");
        };
        assert!(!b.json && b.options.echo_console && b.options.install);
        assert!(b.options.drives.is_empty() && b.options.cmd.is_none());
        assert_eq!(b.options.machine, Machine::Microvm);
        assert_eq!(b.options.accel, Accel::Tcg);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--machine", "sparc"][..],
            &["--arch", "sparc"],
            &["--arch", "x86_64", "--machine", "virt"],
            &["--arch", "aarch64", "--machine", "q35"],
            &["--accel", "hvf"],
            &["--timeout", "0"],
            &["--timeout", "-1"],
            &["--timeout", "nan"],
            &["--memory", "lots"],
            &["--drive"],
            &["--json=yes"],
            &["--frobnicate"],
            &["--drive", "a.img,bogus=1"],
            &["--plot", "p.svg"],
            &["--plot", "p.svg", "--cmd", "sha256 disk0"],
            &["--cmd", "bench disk0", "--plot"],
        ] {
            assert!(boot_args(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(parse(&args(&["img"])), Err(RunnerError::Usage(_))));
    }

    #[test]
    fn arch_picks_its_machine() -> Result<(), String> {
        let b = boot_args(&["--arch", "aarch64"])?;
        assert_eq!(b.options.machine, Machine::Virt);
        let b = boot_args(&["--machine", "virt"])?;
        assert_eq!(b.options.machine, Machine::Virt);
        let b = boot_args(&["--arch", "riscv64"])?;
        assert_eq!(b.options.machine, Machine::RiscvVirt);
        let b = boot_args(&["--arch", "riscv64", "--machine", "virt"])?;
        assert_eq!(b.options.machine, Machine::RiscvVirt);
        let b = boot_args(&["--arch=x86_64", "--machine", "pc"])?;
        assert_eq!(b.options.machine, Machine::Pc);
        Ok(())
    }

    #[test]
    fn transport_is_checked_against_the_machine() -> Result<(), String> {
        let b = boot_args(&["--arch", "aarch64", "--transport", "pci"])?;
        assert_eq!((b.options.machine, b.options.transport), (Machine::Virt, Some(crate::Transport::Pci)));
        let b = boot_args(&["--machine=q35", "--transport=pci"])?;
        assert_eq!(b.options.transport, Some(crate::Transport::Pci));
        let b = boot_args(&["--arch", "riscv64", "--transport", "pci"])?;
        assert_eq!((b.options.machine, b.options.transport), (Machine::RiscvVirt, Some(crate::Transport::Pci)));
        for bad in [&["--transport", "pci"][..], &["--machine", "pc", "--transport", "mmio"], &["--arch", "aarch64", "--transport", "isa"]] {
            assert!(boot_args(bad).is_err(), "{bad:?} accepted");
        }
        Ok(())
    }

    #[test]
    fn help() {
        assert!(matches!(parse(&[]), Ok(Command::Help(_))));
        assert!(
            matches!(parse(&args(&["boot", "--help"])), Ok(Command::Help(h)) if h.contains("--drive"))
        );
        assert!(
            matches!(parse(&args(&["help", "boot"])), Ok(Command::Help(h)) if h.contains("124"))
        );
    }
}
