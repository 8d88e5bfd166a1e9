//! The `throttle` filter against QEMU's, in real time: the same `--object throttle-group,…`
//! and `--image-opts` given to `qemu-io` and to `qemu-runner img io`, the same commands, and
//! the two runs must take the same time within 5% — an average IOPS limit, a bytes-per-second
//! write limit, a burst (`*-max`, `*-max-length`) that runs out, and a group of two members
//! (blkverify's two children, each throttled in one group) whose total is the group's limit; a
//! throttled guest `bench` reports the limit. The members' turns under concurrent load and the
//! drain rules are checked on a hand-moved clock in `block/tests/throttle.rs` (qemu-io issues
//! one request at a time, so it cannot show turns).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use util::*;

/// Seconds `qemu-io ARGS -c CMD…` takes, and its exit status.
fn qemu_io_time(args: &[String], cmds: &[String]) -> (f64, i32) {
    ensure_qemu();
    let mut c = Command::new(qemu_io_bin());
    c.args(args);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let start = Instant::now();
    let out = c.output().unwrap();
    let status = out.status.code().unwrap_or(-1);
    assert!(out.status.success(), "qemu-io {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (start.elapsed().as_secs_f64(), status)
}

/// Seconds the same takes through `qemu-runner img io` (in this process).
fn strata_io_time(args: &[String], cmds: &[String]) -> f64 {
    let mut argv = args.to_vec();
    for cmd in cmds {
        argv.extend(["-c".to_string(), cmd.clone()]);
    }
    let start = Instant::now();
    let out = qemu_runner::img::io::run(&argv);
    assert_eq!(out.status, 0, "img io {argv:?}: {}{}", out.stdout, out.stderr);
    start.elapsed().as_secs_f64()
}

/// Runs both, and checks each against the other (within 5%) and against `expect` seconds
/// (within 10%: the schedule QEMU's arithmetic predicts, so both are not equally wrong). A
/// throttled run can only be slowed by a busy machine, never sped up, so a pair that disagrees
/// is run again (three times at most) before the test fails.
fn same_pace(what: &str, object: &str, image_opts: &str, cmds: &[String], expect: f64) {
    let args = vec!["--object".to_string(), object.to_string(), "--image-opts".to_string(), image_opts.to_string()];
    let mut last = String::new();
    for _ in 0..3 {
        let (qemu, _) = qemu_io_time(&args, cmds);
        let strata = strata_io_time(&args, cmds);
        last = format!("{what}: qemu-io {qemu:.3} s, strata {strata:.3} s, expected {expect:.3} s");
        eprintln!("{last}");
        if (0.95..=1.05).contains(&(strata / qemu)) && (strata / expect - 1.0).abs() < 0.10 {
            return;
        }
    }
    panic!("{last}");
}

fn repeat(cmd: &str, n: usize) -> Vec<String> {
    vec![cmd.to_string(); n]
}

fn raw_file(dir: &Path) -> String {
    let f = dir.join("disk.raw");
    qimg(&["create", "-q", "-f", "raw", f.to_str().unwrap(), "16M"]);
    f.to_str().unwrap().to_string()
}

#[test]
fn an_iops_limit_paces_reads_as_qemu_does() {
    let dir = scratch("throttle-iops");
    let file = raw_file(&dir);
    // 500/s with a tenth of a second's slack: 51 go at once, 949 at 500/s.
    same_pace(
        "iops-total=500",
        "throttle-group,id=tg,limits.iops-total=500",
        &format!("driver=throttle,throttle-group=tg,file.driver=file,file.filename={file}"),
        &repeat("read -q 0 4k", 1000),
        949.0 / 500.0,
    );
}

#[test]
fn a_bytes_limit_paces_writes_as_qemu_does() {
    let dir = scratch("throttle-bps");
    let file = raw_file(&dir);
    // A tenth of a second's bytes (0.4 MiB) is slack: 7 writes of 64 KiB go at once, 93 wait.
    same_pace(
        "bps-write=4M",
        "throttle-group,id=tg,limits.bps-write=4194304",
        &format!("driver=throttle,throttle-group=tg,file.driver=file,file.filename={file}"),
        &repeat("write -q 0 64k", 100),
        93.0 * 65536.0 / 4194304.0,
    );
}

#[test]
fn a_burst_runs_at_max_then_the_average_takes_over() {
    let dir = scratch("throttle-burst");
    let file = raw_file(&dir);
    // avg 100, max 500 for 2 s: the bucket holds 1000 and fills at 400/s from a slack of 50,
    // so the burst lasts 2.375 s (1237 requests); the last 63 go at 100/s.
    same_pace(
        "iops-total=100, max 500 for 2 s",
        "throttle-group,id=tg,limits.iops-total=100,limits.iops-total-max=500,limits.iops-total-max-length=2",
        &format!("driver=throttle,throttle-group=tg,file.driver=file,file.filename={file}"),
        &repeat("read -q 0 512", 1300),
        2.375 + 63.0 / 100.0,
    );
}

#[test]
fn two_members_of_a_group_share_its_limit() {
    let dir = scratch("throttle-group2");
    let (a, b) = (dir.join("a.raw"), dir.join("b.raw"));
    for f in [&a, &b] {
        qimg(&["create", "-q", "-f", "raw", f.to_str().unwrap(), "16M"]);
    }
    // blkverify reads both children: each read is one request at each of two members of one
    // group, so 500 reads are 1000 requests at 500/s (51 at once, 949 paced).
    let opts = format!(
        "driver=blkverify,test.driver=throttle,test.throttle-group=tg,test.file.driver=file,test.file.filename={},\
         raw.driver=throttle,raw.throttle-group=tg,raw.file.driver=file,raw.file.filename={}",
        a.display(),
        b.display()
    );
    same_pace("two members at 500/s", "throttle-group,id=tg,limits.iops-total=500", &opts, &repeat("read -q 0 4k", 500), 949.0 / 500.0);
}

#[test]
fn a_throttled_guest_bench_reports_the_limit() {
    // 1000 reads at 500/s (51 at once, 949 paced): 527 IOPS over the run, on a null device.
    let r = boot(
        Machine::Microvm,
        vec![Drive::null_co(64 * MIB, "null0")],
        "bench driver=throttle,throttle-group=tg,file=null0 --object throttle-group,id=tg,limits.iops-total=500 --rw randread --qd 8 --count 1000",
    );
    assert_eq!(r.exit_code, 0, "console:\n{}", r.console);
    let bench = records(&r, "bench");
    let iops = bench[0]["iops"].as_u64().unwrap() as f64;
    let expect = 1000.0 / (949.0 / 500.0);
    assert!((iops / expect - 1.0).abs() < 0.05, "guest bench {iops} IOPS, expected {expect:.0}");
    // A node naming a group the command line does not define is a usage error.
    let r = boot(Machine::Microvm, vec![Drive::null_co(64 * MIB, "null0")], "bench driver=throttle,throttle-group=tg,file=null0 --count 10");
    assert_eq!(r.exit_code, 2, "console:\n{}", r.console);
}

#[test]
fn a_node_naming_no_group_is_refused_as_qemu_refuses_it() {
    let dir = scratch("throttle-nogroup");
    let file = raw_file(&dir);
    let opts = format!("driver=throttle,throttle-group=nope,file.driver=file,file.filename={file}");
    let q = Command::new(qemu_io_bin()).args(["--image-opts", &opts, "-c", "read 0 512"]).output().unwrap();
    let s = qemu_runner::img::io::run(&["--image-opts".to_string(), opts.clone(), "-c".into(), "read 0 512".into()]);
    assert_eq!(q.status.code(), Some(1));
    assert_eq!(s.status, 1, "{}", s.stderr);
    assert!(s.stderr.contains("throttle-group"), "{}", s.stderr);
    // A bad limit is refused before anything opens, by both.
    let bad = "throttle-group,id=tg,limits.iops-total=10,limits.iops-read=5";
    let q = Command::new(qemu_io_bin()).args(["--object", bad, "--image-opts", &opts, "-c", "read 0 512"]).output().unwrap();
    let s = qemu_runner::img::io::run(&["--object".into(), bad.into(), "--image-opts".into(), opts, "-c".into(), "read 0 512".into()]);
    assert_eq!(q.status.code(), Some(1));
    assert_eq!(s.status, 1);
    assert!(String::from_utf8_lossy(&q.stderr).contains("cannot be used at the same time"));
    assert!(s.stderr.contains("cannot be used at the same time"), "{}", s.stderr);
}

#[test]
fn a_throttle_below_a_format_holds_its_metadata_reads_too() {
    let dir = scratch("throttle-below");
    // 512-byte clusters: an L2 table covers 32 KiB. One 512-byte cluster written every
    // 32 KiB, so each read below needs an L2 table no other read loaded: one metadata read
    // and one data read, both through the throttle node under the format (QEMU's formats do
    // all their I/O through their file child).
    let f = dir.join("small.qcow2");
    qimg(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", f.to_str().unwrap(), "16M"]);
    let n = 400u64;
    let mut w = Command::new(qemu_io_bin());
    w.args(["-t", "writeback", "-f", "qcow2"]);
    for i in 0..n {
        w.args(["-c", &format!("write -q -P 0x5a {} 512", i * 32768)]);
    }
    assert!(w.arg(&f).status().unwrap().success());
    let reads: Vec<String> = (0..n).map(|i| format!("read -q -P 0x5a {} 512", i * 32768)).collect();
    // 2 requests per read at 500/s, 51 of them free: metadata included, not 400 at 500/s.
    same_pace(
        "qcow2 over throttle, iops-total=500",
        "throttle-group,id=tg,limits.iops-total=500",
        &format!("driver=qcow2,file.driver=throttle,file.throttle-group=tg,file.file.driver=file,file.file.filename={}", f.display()),
        &reads,
        (2.0 * n as f64 - 51.0) / 500.0,
    );
}
