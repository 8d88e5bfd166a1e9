//! The workloads every architecture's guest tests boot (issue 17: `sha256` of a raw disk and of
//! a qcow2 chain, `io`, `bench`, on each machine and virtio transport), written once for the
//! `arch_*` test files: each names a [`Guest`] (machine and transport), defines the common
//! tests with [`guest_workload_tests!`](crate::guest_workload_tests) and adds its own.
//!
//! Every boot is under TCG with a 120 s limit, and checks that the runner attached the disks
//! the way the transport says (`virtio-blk-device` for MMIO, `virtio-blk-pci` for PCI) and
//! that the guest saw them on that transport.

use std::path::Path;
use std::process::Command;

use qemu_runner::{Accel, Transport};

use crate::{
    drive, ensure_qemu, random_raw_disk, records, scratch, sha256sum, BootOptions, BootResult,
    Drive, Machine,
};

/// 1 MiB.
pub const MIB: u64 = 1 << 20;

/// The `qemu-io` to use (`QEMU_IO`, default from PATH).
pub fn qemu_io() -> String {
    std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into())
}

/// A machine and the transport its disks are attached by.
#[derive(Clone, Copy, Debug)]
pub struct Guest {
    /// The machine.
    pub machine: Machine,
    /// How its disks are attached.
    pub transport: Transport,
    /// A short name for scratch directories (`riscv64-pci`).
    pub tag: &'static str,
}

impl Guest {
    /// Boots the kernel with `drives` and `cmd`, checking how the disks were attached.
    pub fn boot(&self, drives: Vec<Drive>, cmd: &str) -> BootResult {
        ensure_qemu();
        let opts = BootOptions {
            drives,
            cmd: Some(cmd.into()),
            machine: self.machine,
            transport: Some(self.transport),
            accel: Accel::Tcg,
            timeout: std::time::Duration::from_secs(120),
            quiet: true,
            ..BootOptions::default()
        };
        let r = qemu_runner::boot(&opts).expect("the runner starts QEMU");
        assert_eq!((r.machine, r.transport), (self.machine, self.transport));
        let (ours, other) = match self.transport {
            Transport::Mmio => ("virtio-blk-device,", "virtio-blk-pci,"),
            Transport::Pci => ("virtio-blk-pci,", "virtio-blk-device,"),
        };
        let cmdline = &r.qemu_command;
        assert!(
            cmdline.iter().any(|a| a.starts_with(ours))
                && !cmdline.iter().any(|a| a.starts_with(other)),
            "{cmdline:?}"
        );
        assert!(
            cmdline
                .first()
                .is_some_and(|p| p.ends_with(self.machine.arch().qemu_program())),
            "{cmdline:?}"
        );
        r
    }

    /// A scratch directory for one test of this guest.
    pub fn scratch(&self, test: &str) -> std::path::PathBuf {
        scratch(&format!("{}-{test}", self.tag))
    }

    /// `sha256` of an 8 MiB raw disk (filled from `seed`) against the host's `sha256sum`;
    /// the boot's result for the caller's own checks.
    pub fn sha256_of_a_raw_disk(&self, seed: u64) -> BootResult {
        let disk = self.scratch("raw").join("d.raw");
        random_raw_disk(&disk, 8 * MIB, seed);
        let r = self.boot(vec![drive(&disk, "d", true)], "sha256 d");
        assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
        let digest = records(&r, "sha256");
        assert_eq!(digest.len(), 1, "{}", r.console);
        assert_eq!(
            digest[0]["digest"],
            sha256sum(&disk),
            "guest and host disagree"
        );
        assert_eq!(digest[0]["bytes"], 8 * MIB);
        // The same channels on every board: timings, the defmt log, the footprint, a clock
        // whose rate the board reported (CPUID, CNTFRQ, the device tree's timebase).
        assert!(r.boot_to_first_io_us.is_some(), "first I/O time reported");
        assert!(
            r.log
                .iter()
                .any(|l| l.message.contains("virtio-blk devices")),
            "defmt log: {:?}",
            r.log
        );
        assert!(
            r.block_footprint.is_some_and(|f| f.text > 0),
            "block layer footprint missing"
        );
        assert_eq!(
            records(&r, "boot")[0]["tsc_calibrated"],
            true,
            "clock rate not found: {}",
            r.console
        );
        r
    }

    /// `sha256` of the qcow2 chain whose top is `top` (each file one read-only device) against
    /// `host_digest` (`sha256sum` of `qemu-img convert -O raw`).
    pub fn sha256_of_a_qcow2_chain(&self, top: &Path, host_digest: &str) {
        let r = self.boot(vec![drive(top, "top", false)], "sha256 top");
        assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
        let digest = records(&r, "sha256");
        assert_eq!(digest.len(), 1, "{}", r.console);
        assert_eq!(
            digest[0]["digest"], host_digest,
            "guest and host disagree on the chain"
        );
    }

    /// `io` writes a pattern, reads it back, writes zeroes and flushes on a raw disk (filled
    /// from `seed`); `qemu-io` on the host then reads what the guest wrote.
    pub fn io_writes_what_the_host_reads(&self, seed: u64) {
        let raw = self.scratch("io").join("d.raw");
        random_raw_disk(&raw, 4 * MIB, seed);
        let cmd = "io d -c write,-P,0xaa,0,64k -c read,-P,0xaa,0,64k -c write,-z,64k,64k -c flush";
        let r = self.boot(vec![drive(&raw, "d", false)], cmd);
        assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
        let io = records(&r, "io");
        assert_eq!(io.len(), 4, "{}", r.console);
        assert!(io.iter().all(|r| r["ok"] == true), "{}", r.console);
        let out = Command::new(qemu_io())
            .args([
                "-f",
                "raw",
                "-c",
                "read -P 0xaa 0 64k",
                "-c",
                "read -P 0 64k 64k",
            ])
            .arg(&raw)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("verification failed"),
            "{text}"
        );
    }

    /// A failed verification ends the kernel with code 1, a malformed command line with 2
    /// (usage), and the runner reads both back as its exit status.
    pub fn exit_codes_pass_through(&self, seed: u64) {
        let raw = self.scratch("exit").join("d.raw");
        random_raw_disk(&raw, MIB, seed);
        let r = self.boot(vec![drive(&raw, "d", true)], "io d -c read,-P,0xab,0,4k");
        assert_eq!(
            (r.exit_code, r.kernel_code),
            (1, Some(1)),
            "{}\n{}",
            r.summary(),
            r.console
        );
        let r = self.boot(vec![drive(&raw, "d", true)], "sha256");
        assert_eq!(
            (r.exit_code, r.kernel_code),
            (2, Some(2)),
            "{}\n{}",
            r.summary(),
            r.console
        );
    }

    /// `bench` randread at queue depth 32 on a 1 GiB null-co disk: 5000 requests, 32 of them
    /// in flight at once, sane latency percentiles.
    pub fn bench_holds_32_requests(&self) {
        let r = self.boot(
            vec![Drive::null_co(1 << 30, "null0")],
            "bench null0 --rw randread --bs 4k --qd 32 --count 5000",
        );
        assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
        let b = records(&r, "bench");
        assert_eq!(b.len(), 1, "{}", r.console);
        let b = b[0];
        assert_eq!(b["ios"], 5000);
        assert!(b["iops"].as_u64().unwrap() > 0, "{b}");
        assert!(
            b["max_in_flight"].as_u64().unwrap() >= 32,
            "the device never held 32 requests: {b}"
        );
        let (p50, p99) = (
            b["lat_p50_ns"].as_u64().unwrap(),
            b["lat_p99_ns"].as_u64().unwrap(),
        );
        assert!(0 < p50 && p50 <= p99, "{b}");
    }

    /// `n` raw disks of distinct sizes: the guest lists each once, on this transport, with
    /// its serial and capacity read from the device in order; then the last one moves data.
    pub fn every_disk_answers(&self, n: u64) {
        let dir = self.scratch("many");
        let drives = || {
            (0..n)
                .map(|i| drive(&dir.join(format!("d{i}.raw")), &format!("d{i:02}"), true))
                .collect::<Vec<_>>()
        };
        for i in 0..n {
            random_raw_disk(&dir.join(format!("d{i}.raw")), MIB + i * 4096, 100 + i);
        }
        let r = self.boot(drives(), "devices");
        assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
        let devices = records(&r, "device");
        assert_eq!(devices.len() as u64, n, "{}", r.console);
        let mut locations = std::collections::BTreeSet::new();
        for (i, d) in devices.iter().enumerate() {
            assert_eq!(d["serial"], format!("d{i:02}"), "{d}");
            assert_eq!(
                d["capacity"],
                MIB + i as u64 * 4096,
                "{d}: the device's config space read back wrong"
            );
            locations.insert(d["location"].as_str().unwrap().to_string());
        }
        assert_eq!(locations.len() as u64, n, "{locations:?}");
        self.check_transport(&r);
        let last = n - 1;
        let r = self.boot(drives(), &format!("sha256 d{last:02}"));
        assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
        assert_eq!(
            records(&r, "sha256")[0]["digest"],
            sha256sum(&dir.join(format!("d{last}.raw")))
        );
    }

    /// Every device the guest listed (`devices`) was found on this transport.
    fn check_transport(&self, r: &BootResult) {
        let want = match self.transport {
            Transport::Mmio => "virtio-mmio",
            Transport::Pci => "virtio-pci",
        };
        for d in records(r, "device") {
            assert_eq!(d["transport"], want, "{d}");
        }
    }
}

/// Defines the tests every guest runs, in the calling test file: `sha256` of a raw disk and of
/// a 3-deep qcow2 chain, `io` read back by the host, `bench` at queue depth 32.
///
/// `guest_workload_tests!(GUEST, SEED, chain, host_digest)`: the [`Guest`], a seed for the
/// disks' contents, and the caller's chain builder `chain(dir, depth, seed) -> PathBuf` and
/// host digest `host_digest(file) -> String` (`tests/tests/qcow2_util`).
#[macro_export]
macro_rules! guest_workload_tests {
    ($guest:expr, $seed:expr, $chain:path, $host_digest:path) => {
        #[test]
        fn sha256_of_a_raw_disk_matches_the_host() {
            $guest.sha256_of_a_raw_disk($seed);
        }

        #[test]
        fn sha256_of_a_qcow2_chain_matches_qemu_img_convert() {
            let top = $chain(&$guest.scratch("chain"), 3, $seed + 1);
            $guest.sha256_of_a_qcow2_chain(&top, &$host_digest(&top));
        }

        #[test]
        fn io_writes_what_the_host_reads() {
            $guest.io_writes_what_the_host_reads($seed + 2);
        }

        #[test]
        fn bench_holds_32_requests() {
            $guest.bench_holds_32_requests();
        }
    };
}
