//! The block layer on real virtio-blk devices at queue depth: `bench` (record shape, the device
//! really holding 32 requests at qd 32 on virtio-mmio and virtio-pci), `sha256` of a raw window
//! against the host, and command-line errors of the new workloads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::process::Command;

use strata_tests::*;

const MIB: u64 = 1024 * 1024;

/// The one `bench` record of a successful run.
fn bench_record(r: &BootResult) -> serde_json::Value {
    assert_eq!(r.exit_code, 0, "console:\n{}", r.console);
    let recs = records(r, "bench");
    assert_eq!(recs.len(), 1, "console:\n{}", r.console);
    recs[0].clone()
}

fn assert_holds_32(machine: Machine) {
    let r = boot(machine, vec![Drive::null_co(GIB, "null0")], "bench null0 --rw randread --bs 4k --qd 32 --count 20000");
    let b = bench_record(&r);
    for key in [
        "ios", "ns", "iops", "bytes_per_sec", "lat_p50_ns", "lat_p99_ns", "lat_p999_ns", "lat_max_ns", "submit_cycles", "device_cycles",
        "completion_cycles", "cycles_per_io", "max_in_flight", "doorbells", "tsc_hz",
    ] {
        assert!(b[key].is_u64(), "{key} missing or not a number in {b}");
    }
    assert_eq!(b["rw"], "randread");
    assert_eq!(b["bs"], 4096);
    assert_eq!(b["qd"], 32);
    assert_eq!(b["ios"], 20000);
    assert_eq!(b["device"], "null0");
    assert!(b["max_in_flight"].as_u64().unwrap() >= 32, "the device never held 32 requests: {b}");
    assert!(b["iops"].as_u64().unwrap() > 0);
    let (p50, p99, p999) = (b["lat_p50_ns"].as_u64().unwrap(), b["lat_p99_ns"].as_u64().unwrap(), b["lat_p999_ns"].as_u64().unwrap());
    assert!(0 < p50 && p50 <= p99 && p99 <= p999, "{b}");
    // Batching: far fewer doorbells than requests.
    assert!(b["doorbells"].as_u64().unwrap() < 20000 / 4, "{b}");
    assert!(r.block_footprint.is_some_and(|f| f.text > 0), "block layer footprint missing");
}

const GIB: u64 = 1024 * MIB;

#[test]
fn bench_holds_32_requests_microvm() {
    assert_holds_32(Machine::Microvm);
}

#[test]
fn bench_holds_32_requests_pc() {
    assert_holds_32(Machine::Pc);
}

#[test]
fn bench_qd1_holds_one_and_writes_reach_the_file() {
    let dir = scratch("bench-write");
    let disk = dir.join("w.img");
    raw_disk(&disk, 16 * MIB);
    let r = boot(Machine::Microvm, vec![drive(&disk, "w", false)], "bench w --rw write --bs 64k --qd 1 --count 64");
    let b = bench_record(&r);
    assert_eq!(b["max_in_flight"], 1);
    assert_eq!(b["ios"], 64);
    // 64 sequential writes of 64 KiB cover the first 4 MiB with the bench's pattern.
    let bytes = std::fs::read(&disk).unwrap();
    assert!(bytes[..(4 * MIB) as usize].chunks(4096).all(|c| c.iter().any(|&x| x != 0)));
    assert!(bytes[(4 * MIB) as usize..].iter().all(|&x| x == 0));
}

#[test]
fn bench_refuses_writes_to_a_read_only_disk() {
    let dir = scratch("bench-ro");
    let disk = dir.join("ro.img");
    raw_disk(&disk, MIB);
    let r = boot(Machine::Microvm, vec![drive(&disk, "ro", true)], "bench ro --rw randwrite --count 10");
    assert_eq!(r.exit_code, 1, "console:\n{}", r.console);
    assert!(r.console.contains("read-only"), "console:\n{}", r.console);
    assert!(std::fs::read(&disk).unwrap().iter().all(|&b| b == 0));
}

/// The host's SHA-256 of `len` bytes at `offset` of `path` (`dd | sha256sum`).
fn host_window_sha256(path: &std::path::Path, offset: u64, len: u64) -> String {
    let cmd = format!("dd if='{}' bs=1M skip={} count={} status=none | sha256sum", path.display(), offset / MIB, len / MIB);
    let out = Command::new("sh").args(["-c", &cmd]).output().expect("sh runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

#[test]
fn sha256_of_a_raw_window_matches_host() {
    let dir = scratch("sha256-window");
    let disk = dir.join("w.img");
    random_raw_disk(&disk, 16 * MIB, 7);
    for machine in [Machine::Microvm, Machine::Pc] {
        let r = boot(machine, vec![drive(&disk, "win", true)], "sha256 driver=raw,offset=1M,size=4M,file=win");
        assert_eq!(r.exit_code, 0, "console:\n{}", r.console);
        let rec = records(&r, "sha256");
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0]["bytes"], 4 * MIB);
        assert_eq!(rec[0]["device"], "win");
        assert_eq!(rec[0]["digest"], host_window_sha256(&disk, MIB, 4 * MIB), "{machine:?}");
    }
}

#[test]
fn bench_and_sha256_usage_errors() {
    let dir = scratch("bench-usage");
    let disk = dir.join("d.img");
    raw_disk(&disk, MIB);
    for (cmd, expect) in [
        ("bench d0,colour=red --count 1", "colour"),
        ("bench nosuch --count 1", "no device with serial \"nosuch\""),
        ("sha256 driver=raw,file=nosuch", "no device with serial \"nosuch\""),
        ("bench d0 --qd 0", "--qd"),
        ("bench d0 --qd 65", "--qd"),
        ("bench d0 --qd lots", "--qd"),
        ("bench d0 --rw sideways", "--rw"),
        ("bench d0 --bs 1000", "--bs"),
        ("bench d0 --seconds 1 --count 1", "not both"),
        ("bench d0 --frobnicate 1", "unknown flag"),
        ("bench --qd 1", "needs options"),
        ("sha256 driver=qcow9,file=d0", "unknown driver"),
        ("sha256 driver=raw,offset=2M,file=d0", "offset"),
    ] {
        let r = boot(Machine::Microvm, vec![drive(&disk, "d0", false)], cmd);
        assert_eq!(r.exit_code, 2, "{cmd:?}: console:\n{}", r.console);
        assert_eq!(r.status, "usage");
        assert!(r.console.contains(expect), "{cmd:?}: expected {expect:?} in console:\n{}", r.console);
    }
}
