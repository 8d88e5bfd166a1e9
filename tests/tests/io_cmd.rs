//! qemu-io's commands and the stress engine, on the host (`qemu-runner img io`, `img stress`)
//! and in the guest (`io`, `stress` workloads): the same commands through qemu-io on a copy of
//! the same image must print the same lines (timings aside), exit the same way and leave the
//! same contents (`qemu-img compare`); stress runs are deterministic for a seed — at any queue
//! depth, on the host and in the guest — and their model predicts every block.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use qemu_runner::img::block::cmd::stress::{self, Config, Entry};
use util::*;

/// What qemu-io printed on stdout (statistics lines dropped) and its exit status.
fn qemu_io(args: &[&str], cmds: &[&str], file: &Path) -> (i32, Vec<String>) {
    ensure_qemu();
    let mut c = Command::new(qemu_io_bin());
    c.args(args);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.arg(file).output().unwrap();
    (out.status.code().unwrap_or(-1), without_timings(&String::from_utf8_lossy(&out.stdout)))
}

/// The same through `qemu-runner img io`, in this process.
fn strata_io(args: &[&str], cmds: &[&str], file: &Path) -> (i32, Vec<String>) {
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    for cmd in cmds {
        argv.extend(["-c".to_string(), cmd.to_string()]);
    }
    argv.push(file.to_str().unwrap().to_string());
    let out = qemu_runner::img::io::run(&argv);
    (out.status, without_timings(&out.stdout))
}

/// The lines of `text` without qemu-io's statistics lines (`4 KiB, 1 ops; 00.00 sec (...)`),
/// usage lines in qemu-io 9.0+'s spelling: it added `-r` (register the I/O buffer) to read and
/// write, and Strata prints the newer line whichever qemu-io is installed.
fn without_timings(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !(l.contains(" ops; ") && l.ends_with(" ops/sec)")))
        .map(|l| l.replacen("read [-abCqv] ", "read [-abCqrv] ", 1).replacen("write [-bcCfnquz] ", "write [-bcCfnqruz] ", 1))
        .collect()
}

/// Runs `cmds` through qemu-io on one copy of `image` and through `img io` on another; both
/// must print the same and exit the same, and the copies must compare equal. Returns the
/// lines and the status.
fn side_by_side(image: &Path, fmt: &str, cmds: &[&str]) -> (i32, Vec<String>) {
    let (theirs, ours) = (copy_as(image, "theirs"), copy_as(image, "ours"));
    let expected = qemu_io(&["-f", fmt], cmds, &theirs);
    let got = strata_io(&["-f", fmt], cmds, &ours);
    assert_eq!(got, expected, "img io and qemu-io disagree on {cmds:?}");
    let args = ["compare", "-f", fmt, "-F", fmt, theirs.to_str().unwrap(), ours.to_str().unwrap()];
    qimg(&args);
    if fmt == "qcow2" {
        qimg(&["check", ours.to_str().unwrap()]);
    }
    got
}

/// Commands that touch every path: patterns, unaligned and multi-buffer requests, zeroes with
/// and without unmap, discard, flush, quiet, failed verification, out of range, parse errors.
const RAW_CMDS: &[&str] = &[
    "write -P 0xaa 0 64k",
    "write -P 0x55 4k 4k",
    "read -P 0xaa 0 4k",
    "read -P 0x55 4k 4k",
    "read -P 0xaa 8k 56k",
    "write 100001 3333",
    "read -P 0xcd 100001 3333",
    "write -P 7 1M 3M",
    "read -q -P 7 1M 3M",
    "write -z 1M 64k",
    "write -z -u 2M 128k",
    "read -P 0 1M 64k",
    "read -P 0 2M 128k",
    "discard 3M 64k",
    "flush",
    "read -P 0xab 0 6144",
    "write -q -P 1 0 512",
    "read 8M 512",
    "write 8M 1",
    "read -P 0x1aa 0 1",
    "read 1x 2",
    "read -x 0 1",
    "write -z -P 1 0 1",
    "write -u 0 1",
    "read 0 3G",
    "bogus 1 2",
    "r 0 1",
    "w -P 017 512 512",
    "read -P 15 512 512",
    "read 0 0",
];

#[test]
fn raw_images_match_qemu_io() {
    let dir = scratch("io-raw");
    let raw = dir.join("a.raw");
    random_raw_disk(&raw, 8 * MIB, 5);
    let (status, lines) = side_by_side(&raw, "raw", RAW_CMDS);
    assert_eq!(status, 1, "failing commands make the exit status 1");
    assert!(lines.contains(&"wrote 65536/65536 bytes at offset 0".to_string()), "{lines:?}");
    assert!(lines.contains(&"Pattern verification failed at offset 0, 6144 bytes".to_string()), "{lines:?}");
    assert!(lines.contains(&"read failed: Input/output error".to_string()), "{lines:?}");
    // Only successes: exit 0.
    let (status, _) = side_by_side(&raw, "raw", &["write -P 3 0 1k", "read -P 3 0 1k", "flush"]);
    assert_eq!(status, 0);
}

#[test]
fn read_only_and_usage() {
    let dir = scratch("io-ro");
    let raw = dir.join("a.raw");
    random_raw_disk(&raw, MIB, 6);
    let before = sha256sum(&raw);
    let (status, lines) = strata_io(&["-r", "-f", "raw"], &["write -P 1 0 512", "read 0 512"], &raw);
    assert_eq!(status, 1);
    assert_eq!(lines, ["write failed: Operation not permitted", "read 512/512 bytes at offset 0"]);
    assert_eq!(sha256sum(&raw), before, "a read-only session writes nothing");
    let missing = dir.join("missing.raw");
    assert_eq!(strata_io(&["-f", "raw"], &["read 0 1"], &missing).0, 1);
    assert_eq!(strata_io(&["-f", "raw"], &[], &raw).0, 1, "no -c is an error");
    assert_eq!(strata_io(&["--bogus"], &["read 0 1"], &raw).0, 1);
}

/// A qcow2 image whose clusters the commands below only read or overwrite: allocated first
/// by qemu-io.
fn allocated_qcow2(dir: &Path) -> PathBuf {
    let f = dir.join("a.qcow2");
    create(&f, "", &(4 * MIB).to_string(), &[]);
    qio("qcow2", &f, &["write -P 0x11 0 1M", "write -P 0x22 2M 256k"]);
    f
}

#[test]
fn qcow2_reads_match_qemu_io() {
    let dir = scratch("io-qcow2-read");
    let f = allocated_qcow2(&dir);
    let (status, _) = side_by_side(
        &f,
        "qcow2",
        &["read -P 0x11 0 1M", "read -P 0x22 2M 256k", "read -P 0 1M 1M", "read -P 0 3M 1M", "read -P 0x11 512k 1M", "read 4M 1"],
    );
    assert_eq!(status, 1);
}

#[test]
fn qcow2_overwrites_in_place_match_qemu_io() {
    let dir = scratch("io-qcow2-overwrite");
    let f = allocated_qcow2(&dir);
    let (status, _) = side_by_side(
        &f,
        "qcow2",
        &["write -P 0x33 0 64k", "write -P 0x44 100000 5000", "write -P 0x55 2M 256k", "flush", "read -P 0x33 0 64k", "read -P 0x55 2M 256k"],
    );
    assert_eq!(status, 0);
}

#[test]
fn qcow2_allocating_writes_match_qemu_io() {
    let dir = scratch("io-qcow2-alloc");
    let f = dir.join("empty.qcow2");
    create(&f, "", &(4 * MIB).to_string(), &[]);
    let (status, _) = side_by_side(
        &f,
        "qcow2",
        &["write -P 0x66 1M 64k", "write -P 0x77 3M 100k", "write -z 0 64k", "write -z -u 2M 64k", "discard 1M 64k", "flush", "read -P 0x77 3M 100k"],
    );
    assert_eq!(status, 0);
}

#[test]
fn qcow2_stress_completes_and_checks_clean() {
    let dir = scratch("io-qcow2-stress");
    let f = dir.join("s.qcow2");
    create(&f, "", &(16 * MIB).to_string(), &[]);
    let p = f.to_str().unwrap();
    assert_eq!(img(&["stress", "-f", "qcow2", "--seed", "3", "--ops", "2000", "--qd", "16", p]), 0);
    qimg(&["check", p]);
}

/// `img stress` on a fresh raw file of `size` bytes.
fn stress_raw(dir: &Path, name: &str, size: u64, extra: &[&str]) -> PathBuf {
    let f = dir.join(name);
    raw_disk(&f, size);
    let mut args = vec!["stress", "-f", "raw"];
    args.extend_from_slice(extra);
    args.push(f.to_str().unwrap());
    assert_eq!(img(&args), 0, "img {args:?}");
    f
}

/// Every block of `file` holds what the stress model of `cfg` says after all its ops (the
/// host-side replay a crash checker does, with the last marker covering every op).
fn check_model(file: &Path, cfg: &Config) {
    let bytes = std::fs::read(file).unwrap();
    let mut table = vec![0u32; cfg.blocks() as usize];
    stress::replay(cfg, &mut table, 0..cfg.ops);
    let bs = cfg.block as usize;
    let mut known = 0;
    for (b, &raw) in table.iter().enumerate() {
        let offset = cfg.start + (b * bs) as u64;
        let data = &bytes[offset as usize..offset as usize + bs];
        let entry = Entry::decode(raw);
        assert!(stress::block_matches(cfg.seed, entry, offset, data), "block {b} ({entry:?}) differs from the model");
        known += usize::from(stress::expected(entry) != stress::Expected::Unknown);
    }
    assert!(known > table.len() / 4, "the run covered too little of the disk to check: {known} blocks");
}

#[test]
fn stress_on_raw_is_deterministic_at_qd_1_and_16() {
    let dir = scratch("io-stress");
    let common = ["--seed", "77", "--ops", "3000"];
    let qd1 = stress_raw(&dir, "qd1.raw", 16 * MIB, &[&common[..], &["--qd", "1"]].concat());
    let qd16 = stress_raw(&dir, "qd16.raw", 16 * MIB, &[&common[..], &["--qd", "16", "-t", "none"]].concat());
    let again = stress_raw(&dir, "again.raw", 16 * MIB, &[&common[..], &["--qd", "16", "-t", "none", "--json"]].concat());
    let (a, b, c) = (sha256sum(&qd1), sha256sum(&qd16), sha256sum(&again));
    assert_eq!(a, b, "qd 1 and qd 16 leave different files");
    assert_eq!(b, c, "two runs with one seed leave different files");
    let mut cfg = Config::new(77, 3000, 16 * MIB);
    cfg.qd = 16;
    check_model(&qd16, &cfg);
    let other = stress_raw(&dir, "other.raw", 16 * MIB, &["--seed", "78", "--ops", "3000", "--qd", "4"]);
    assert_ne!(sha256sum(&other), a, "another seed, another file");
    // A region, another block size and mix.
    let region = stress_raw(
        &dir,
        "region.raw",
        8 * MIB,
        &["--seed", "5", "--ops", "1500", "--qd", "8", "--block", "512", "--max-len", "20k", "--offset", "1M", "--length", "4M", "--mix", "1:3:1:1:1:1"],
    );
    let cfg = Config { qd: 8, block: 512, max_len: 20 << 10, start: MIB, len: 4 * MIB, mix: stress::Mix::parse("1:3:1:1:1:1").unwrap(), ..Config::new(5, 1500, 0) };
    check_model(&region, &cfg);
    let bytes = std::fs::read(&region).unwrap();
    assert!(bytes[..MIB as usize].iter().chain(&bytes[5 * MIB as usize..]).all(|&b| b == 0), "nothing outside the region");
}

#[test]
fn stress_usage_errors() {
    let dir = scratch("io-stress-usage");
    let f = dir.join("a.raw");
    raw_disk(&f, MIB);
    let p = f.to_str().unwrap();
    assert_eq!(img(&["stress", "--seed", "1", "--ops", "10", p]), 2, "--qd is required");
    assert_eq!(img(&["stress", "--seed", "1", "--ops", "10", "--qd", "65", p]), 2);
    assert_eq!(img(&["stress", "--seed", "1", "--ops", "10", "--qd", "1", "--max-len", "2M", p]), 2);
    assert_eq!(img(&["stress", "--seed", "1", "--ops", "10", "--qd", "1", "--mix", "1:2", p]), 2);
}

#[test]
fn guest_io_on_a_raw_disk() {
    let dir = scratch("io-guest");
    let raw = dir.join("d.raw");
    random_raw_disk(&raw, 8 * MIB, 9);
    let cmd = "io d -c write,-P,0xaa,0,64k -c read,-P,0xaa,0,64k -c write,-z,64k,64k -c write,-P,0x5c,100001,3333 \
               -c discard,1M,64k -c flush -c read,-q,-P,0x5c,100001,3333";
    let r = boot(Machine::Microvm, vec![drive(&raw, "d", false)], cmd);
    assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
    let io = records(&r, "io");
    assert_eq!(io.len(), 7, "{}", r.console);
    assert_eq!(io[0]["cmd"], "write -P 0xaa 0 64k");
    assert!(io[0]["output"].as_str().unwrap().starts_with("wrote 65536/65536 bytes at offset 0\n64 KiB, 1 ops; "), "{}", io[0]);
    assert!(io.iter().all(|r| r["ok"] == true));
    assert!(r.console.contains("read 65536/65536 bytes at offset 0"));
    // The host sees what the guest wrote.
    let (status, _) = qemu_io(&["-f", "raw"], &["read -P 0xaa 0 64k", "read -P 0 64k 34464", "read -P 0x5c 100001 3333", "read -P 0 103334 27738"], &raw);
    assert_eq!(status, 0);

    // A failed verification: exit 1, qemu-io's message; a read-only drive takes reads only.
    let r = boot(Machine::Microvm, vec![drive(&raw, "d", true)], "io d -c read,-P,0xab,0,4k -c read,-P,0xaa,0,4k");
    assert_eq!(r.exit_code, 1, "{}\n{}", r.summary(), r.console);
    assert!(r.console.contains("Pattern verification failed at offset 0, 4096 bytes"), "{}", r.console);
    let io = records(&r, "io");
    assert_eq!((io[0]["ok"].as_bool(), io[1]["ok"].as_bool()), (Some(false), Some(true)));
    // A command that does not parse is a usage error before anything runs.
    let r = boot(Machine::Microvm, vec![drive(&raw, "d", false)], "io d -c write,-z,-P,1,0,1");
    assert_eq!(r.exit_code, 2, "{}\n{}", r.summary(), r.console);
    assert!(r.console.contains("Only one of -z, -P, and -s"), "{}", r.console);
}

#[test]
fn guest_stress_matches_the_host() {
    let dir = scratch("io-guest-stress");
    let raw = dir.join("g.raw");
    raw_disk(&raw, 8 * MIB);
    // No discards: QEMU ignores a guest's discards on a raw file by default (discard=ignore),
    // while the host's punch holes; the model leaves discarded blocks unchecked either way.
    let mix = "30:40:8:7:0:5";
    let r = boot(Machine::Microvm, vec![drive(&raw, "g", false)], &format!("stress g --seed 11 --ops 600 --qd 16 --mix {mix}"));
    assert_eq!(r.exit_code, 0, "{}\n{}", r.summary(), r.console);
    let flushes = records(&r, "stress_flush");
    assert!(flushes.len() > 5, "{}", r.console);
    assert_eq!(flushes.last().unwrap()["ops"], 600);
    assert_eq!(records(&r, "stress_op").len() as u64 + flushes.len() as u64 - 1, 600);
    let done = records(&r, "stress_done");
    assert_eq!(done.len(), 1);
    assert!(done[0]["max_in_flight"].as_u64().unwrap() > 1, "{}", done[0]);
    assert!(r.console.contains(&format!("stress: flush 0 covers ops 0..{}", flushes[0]["ops"])));
    // The same seed on the host leaves the same file.
    let host = stress_raw(&dir, "h.raw", 8 * MIB, &["--seed", "11", "--ops", "600", "--qd", "4", "--mix", mix]);
    assert_eq!(sha256sum(&raw), sha256sum(&host), "guest and host stress runs differ");
    check_model(&raw, &Config { qd: 16, mix: stress::Mix::parse(mix).unwrap(), ..Config::new(11, 600, 8 * MIB) });
}
