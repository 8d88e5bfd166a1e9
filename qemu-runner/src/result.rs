//! The result of one boot: what `--json` prints and what the library returns.

use std::fmt::Write as _;

use serde::Serialize;

use crate::defmt_log::LogLine;
use crate::exit_status::Status;
use crate::footprint::BlockShare;
use crate::machine::{Machine, ResolvedAccel, Transport};
use crate::series::BenchSeries;

/// Everything one boot produced.
#[derive(Clone, Debug, Serialize)]
pub struct BootResult {
    /// What happened: `ok`, `failed`, `usage`, `panic`, `boot-error`, `timeout` or `qemu-error`.
    pub status: Status,
    /// The runner's exit status (see [`crate::exit_status`]).
    pub exit_code: i32,
    /// The kernel's exit code, if it sent one.
    pub kernel_code: Option<u32>,
    /// A sentence explaining the status when it needs one (reset, timeout, QEMU failure).
    pub message: Option<String>,
    /// The machine type.
    pub machine: Machine,
    /// The virtio transport the disks were attached with.
    pub transport: Transport,
    /// The accelerator used.
    pub accel: ResolvedAccel,
    /// QEMU's wall time, from spawn to exit, measured by the runner.
    pub qemu_wall_ms: u64,
    /// Microseconds from kernel entry to the first device I/O (the `exit` record's
    /// `first_io_us`).
    pub boot_to_first_io_us: Option<u64>,
    /// Microseconds from VM start to kernel entry (the `boot` record's `entry_us`).
    pub entry_us: Option<u64>,
    /// The block layer's share of the kernel's static footprint, from the ELF's symbols (the
    /// kernel's own sections are in its `footprint` record).
    pub block_footprint: Option<BlockShare>,
    /// The kernel command line.
    pub cmdline: String,
    /// The console records, in order.
    pub records: Vec<serde_json::Value>,
    /// The `bench` workload's series decoded from its `bench_latency` and `bench_series`
    /// records (left out of the JSON when no bench ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bench_series: Option<BenchSeries>,
    /// The human console transcript (records left out).
    pub console: String,
    /// The decoded defmt log.
    pub log: Vec<LogLine>,
    /// Problems worth knowing that did not change the status (malformed records, defmt).
    pub warnings: Vec<String>,
    /// What QEMU wrote to stderr.
    pub qemu_stderr: String,
    /// The QEMU command, program first.
    pub qemu_command: Vec<String>,
}

impl BootResult {
    /// True if the kernel's workload succeeded.
    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    /// All records of type `kind`, in order.
    pub fn records_of<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
        self.records
            .iter()
            .filter(move |r| r.get("type").and_then(serde_json::Value::as_str) == Some(kind))
    }

    /// The one-line summary ending human output, e.g.
    /// `strata: ok (exit 0) — QEMU wall 812 ms, boot-to-first-I/O 3.1 ms, TCG, microvm`.
    pub fn summary(&self) -> String {
        let mut s = format!("strata: {} (exit {})", self.status.as_str(), self.exit_code);
        if let Some(msg) = &self.message {
            let _ = write!(s, ": {msg}");
        }
        let _ = write!(s, " — QEMU wall {} ms", self.qemu_wall_ms);
        if let Some(us) = self.boot_to_first_io_us {
            let _ = write!(s, ", boot-to-first-I/O {:.1} ms", us as f64 / 1000.0);
        }
        let _ = write!(s, ", {}, {}", self.accel, self.machine);
        s
    }

    /// What human mode prints after the live console: the defmt log, warnings, QEMU's stderr
    /// when it matters, and the summary line.
    pub fn human_tail(&self) -> String {
        let mut s = String::new();
        for line in &self.log {
            let _ = writeln!(s, "{}", line.human());
        }
        if let Some(b) = &self.block_footprint {
            let _ = writeln!(
                s,
                "footprint: block layer (strata_block symbols) text {} KiB, rodata {} KiB, data {} KiB, bss {} KiB",
                b.text / 1024,
                b.rodata / 1024,
                b.data / 1024,
                b.bss / 1024
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "strata: warning: {w}");
        }
        let stderr = self.qemu_stderr.trim_end();
        if !stderr.is_empty() {
            let _ = writeln!(s, "QEMU stderr:\n{stderr}");
        }
        if self.status == Status::QemuError {
            let _ = writeln!(s, "QEMU command: {}", self.qemu_command.join(" "));
        }
        s.push_str(&self.summary());
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootResult {
        BootResult {
            status: Status::Ok,
            exit_code: 0,
            kernel_code: Some(0),
            message: None,
            machine: Machine::Microvm,
            transport: Transport::Mmio,
            accel: ResolvedAccel::Tcg,
            qemu_wall_ms: 812,
            boot_to_first_io_us: Some(3100),
            entry_us: Some(11000),
            block_footprint: None,
            cmdline: "devices".into(),
            records: vec![serde_json::json!({"type": "exit", "code": 0})],
            bench_series: None,
            console: "hello\n".into(),
            log: vec![],
            warnings: vec![],
            qemu_stderr: String::new(),
            qemu_command: vec!["qemu-system-x86_64".into()],
        }
    }

    #[test]
    fn summary_line() {
        assert_eq!(
            sample().summary(),
            "strata: ok (exit 0) — QEMU wall 812 ms, boot-to-first-I/O 3.1 ms, TCG, microvm"
        );
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample()).unwrap_or_default();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["machine"], "microvm");
        assert_eq!(v["accel"], "tcg");
        assert_eq!(v["boot_to_first_io_us"], 3100);
        assert_eq!(v["records"][0]["type"], "exit");
        assert!(v.get("bench_series").is_none());
    }
}
