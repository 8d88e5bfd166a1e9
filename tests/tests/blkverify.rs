//! The `blkverify` filter against QEMU's, on copies of one pair of images (a qcow2 under test,
//! a raw reference): matching reads pass and writes reach both children, as with qemu-io; a
//! byte planted in the reference fails the read with QEMU's words naming the first differing
//! offset; the children's options follow QEMU's (`test.*`, `raw.*`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::*;

/// A raw reference of a pattern and a qcow2 converted from it, in `dir/NAME/`.
fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let (raw, test) = (d.join("ref.raw"), d.join("test.qcow2"));
    random_raw_disk(&raw, 4 * MIB, 5);
    qimg(&["convert", "-O", "qcow2", raw.to_str().unwrap(), test.to_str().unwrap()]);
    (test, raw)
}

fn opts(test: &Path, raw: &Path) -> String {
    format!(
        "driver=blkverify,test.driver=qcow2,test.file.driver=file,test.file.filename={},raw.driver=raw,raw.file.driver=file,raw.file.filename={}",
        test.display(),
        raw.display()
    )
}

/// Exit status and stdout + stderr of qemu-io.
fn qemu_io(image_opts: &str, cmds: &[&str]) -> (i32, String) {
    let mut c = Command::new(qemu_io_bin());
    c.args(["--image-opts", image_opts]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The same through `img io`.
fn strata_io(image_opts: &str, cmds: &[&str]) -> (i32, String) {
    let mut argv = vec!["--image-opts".to_string(), image_opts.to_string()];
    for cmd in cmds {
        argv.extend(["-c".to_string(), cmd.to_string()]);
    }
    let out = qemu_runner::img::io::run(&argv);
    (out.status, format!("{}{}", out.stdout, out.stderr))
}

fn identical(a: &Path, b: &Path) -> bool {
    Command::new(qemu_img()).args(["compare", "-q", a.to_str().unwrap(), b.to_str().unwrap()]).status().unwrap().success()
}

#[test]
fn matching_reads_pass_and_writes_reach_both_children() {
    let dir = scratch("blkverify-ok");
    let cmds = ["read -q 0 4M", "write -q -P 0x5a 64k 4k", "write -q -P 0xa5 1000 3000", "read -q -P 0x5a 64k 4k", "read -q 0 4M"];
    let (t1, r1) = pair(&dir, "ours");
    let (t2, r2) = pair(&dir, "theirs");
    let (ours, out) = strata_io(&opts(&t1, &r1), &cmds);
    assert_eq!(ours, 0, "{out}");
    let (theirs, out) = qemu_io(&opts(&t2, &r2), &cmds);
    assert_eq!(theirs, 0, "{out}");
    assert!(identical(&t1, &r1), "both children hold the writes");
    assert!(identical(&t1, &t2), "as qemu-io left them");
    // Write-zeroes and discard reach both children too. (qemu-io 10.0.2 stops on an assertion
    // in bdrv_co_do_pwrite_zeroes for `write -z` through blkverify, so these are not compared.)
    let (ours, out) = strata_io(&opts(&t1, &r1), &["write -q -z 1M 64k", "discard -q 2M 64k", "read -q 0 4M"]);
    assert_eq!(ours, 0, "{out}");
    assert!(identical(&t1, &r1), "both children hold the zeroes");
    let check = Command::new(qemu_img()).args(["check", t1.to_str().unwrap()]).output().unwrap();
    assert!(check.status.success());
}

#[test]
fn a_planted_mismatch_is_reported_with_its_offset() {
    let dir = scratch("blkverify-bad");
    let (test, raw) = pair(&dir, "p");
    let byte = std::fs::read(&raw).unwrap()[100_000];
    patch(&raw, 100_000, &[byte ^ 0xff]);
    let o = opts(&test, &raw);
    let (theirs, qemu_out) = qemu_io(&o, &["read 0 1M"]);
    let (ours, our_out) = strata_io(&o, &["read 0 1M"]);
    assert_eq!((ours, theirs), (1, 1), "qemu-io: {qemu_out}\nimg io: {our_out}");
    let line = "blkverify: read offset=0 bytes=1048576 contents mismatch at offset 100000";
    assert!(qemu_out.contains(line), "{qemu_out}");
    assert!(our_out.contains(line), "{our_out}");
    // Reads that miss the planted byte still pass.
    assert_eq!(strata_io(&o, &["read -q 1M 1M"]).0, 0);
    // Without its reference, or with two, the node is refused.
    let (status, out) = strata_io(&format!("driver=blkverify,test.driver=qcow2,test.file.driver=file,test.file.filename={}", test.display()), &["read 0 512"]);
    assert_eq!(status, 1, "{out}");
}

/// A qcow2 image over blkverify (QEMU: `driver=qcow2,file.driver=blkverify,file.test.…,
/// file.raw.…`): `test` is the image file, `raw` a byte copy of it.
fn under_format(test: &Path, raw: &Path) -> String {
    format!(
        "driver=qcow2,file.driver=blkverify,file.test.driver=file,file.test.filename={},file.raw.driver=file,file.raw.filename={}",
        test.display(),
        raw.display()
    )
}

/// A qcow2 image with its first MiB written and an 8 MiB virtual size, and a byte copy of its
/// file, in `dir/NAME/`.
fn image_and_copy(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let (test, raw) = (d.join("test.qcow2"), d.join("copy.qcow2"));
    qimg(&["create", "-q", "-f", "qcow2", test.to_str().unwrap(), "8M"]);
    let status = Command::new(qemu_io_bin()).args(["-f", "qcow2", "-c", "write -q -P 0x11 0 1M"]).arg(&test).status().unwrap();
    assert!(status.success());
    std::fs::copy(&test, &raw).unwrap();
    (test, raw)
}

/// The host offset of the L2 table that maps guest offset 0 (the first L1 entry).
fn first_l2(image: &Path) -> u64 {
    let bytes = std::fs::read(image).unwrap();
    let be = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    be(be(40) as usize) & 0x00ff_ffff_ffff_fe00
}

#[test]
fn under_a_format_metadata_and_data_reads_are_compared() {
    let dir = scratch("blkverify-format");
    // Matching files: reads pass, and allocating writes (new clusters, new L2 tables, the file
    // growing) reach both files, which stay byte for byte alike, as with qemu-io.
    let cmds = ["read -q 0 8M", "write -q -P 0x5a 64k 4k", "write -q -P 0xa5 5M 100k", "read -q -P 0xa5 5M 100k", "read -q 0 8M"];
    let (t1, r1) = image_and_copy(&dir, "ours");
    let (t2, r2) = image_and_copy(&dir, "theirs");
    let (ours, out) = strata_io(&under_format(&t1, &r1), &cmds);
    assert_eq!(ours, 0, "{out}");
    let (theirs, out) = qemu_io(&under_format(&t2, &r2), &cmds);
    assert_eq!(theirs, 0, "{out}");
    assert_eq!(std::fs::read(&t1).unwrap(), std::fs::read(&r1).unwrap(), "both files hold the same bytes");
    assert!(identical(&t1, &t2), "the guest sees what qemu-io left");
    let check = Command::new(qemu_img()).args(["check", t1.to_str().unwrap()]).output().unwrap();
    assert!(check.status.success());

    // A byte of an L2 entry differs in the test file: the format's read of that table fails,
    // naming the byte. QEMU reads L2 tables in pieces of `l2-cache-entry-size` (a cluster by
    // default), Strata in 4 KiB slices: with that size set to 4096 qemu-io's line is ours.
    let (test, raw) = image_and_copy(&dir, "bad-l2");
    let l2 = first_l2(&test);
    let at = l2 + 5 * 8 + 7;
    patch(&test, at, &[std::fs::read(&test).unwrap()[at as usize] ^ 0x02]);
    let line = format!("blkverify: read offset={l2} bytes=4096 contents mismatch at offset {at}");
    let (theirs, qemu_out) = qemu_io(&format!("{},l2-cache-entry-size=4096", under_format(&test, &raw)), &["read 0 64k"]);
    let (ours, our_out) = strata_io(&under_format(&test, &raw), &["read 0 64k"]);
    assert_eq!((ours, theirs), (1, 1), "qemu-io: {qemu_out}\nimg io: {our_out}");
    assert!(qemu_out.contains(&line), "{qemu_out}");
    assert!(our_out.contains(&line), "{our_out}");
    // With QEMU's default entry size its read is the whole 64 KiB table; the byte is the same.
    let (_, qemu_out) = qemu_io(&under_format(&test, &raw), &["read 0 64k"]);
    assert!(qemu_out.contains(&format!("contents mismatch at offset {at}")), "{qemu_out}");

    // A byte of guest data differs: the data read through the node fails the same way.
    let (test, raw) = image_and_copy(&dir, "bad-data");
    let map = qimg(&["map", "--output=json", test.to_str().unwrap()]);
    let host: u64 = map.split("\"offset\": ").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()).unwrap().parse().unwrap();
    let at = host + 4096 + 3;
    patch(&test, at, &[0x11 ^ 0xff]);
    let (theirs, qemu_out) = qemu_io(&under_format(&test, &raw), &["read 0 64k"]);
    let (ours, our_out) = strata_io(&under_format(&test, &raw), &["read 0 64k"]);
    assert_eq!((ours, theirs), (1, 1), "qemu-io: {qemu_out}\nimg io: {our_out}");
    let line = format!("blkverify: read offset={host} bytes=65536 contents mismatch at offset {at}");
    assert!(qemu_out.contains(&line), "{qemu_out}");
    assert!(our_out.contains(&line), "{our_out}");
}
