//! The `copy-on-read` filter against QEMU's: the same `--image-opts` and reads through
//! `qemu-io` and `qemu-runner img io` on copies of one chain must leave the same clusters
//! allocated in the top (`qemu-img map`), a clean `qemu-img check`, and contents equal to the
//! chain's; whole clusters are copied (a 512-byte read copies its cluster); `bottom` limits the
//! layers copied from; writes and reads mixed under copy-on-read keep the guest's data; and a
//! guest reading through the filter populates its overlay.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::*;

/// `qemu-img map --output=json` runs of the top image alone: (start, length, depth, data, zero).
fn layer_map(file: &Path) -> Vec<(u64, u64, u64, bool, bool)> {
    let out = qimg(&["map", "--output=json", file.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut runs: Vec<(u64, u64, u64, bool, bool)> = Vec::new();
    for e in v.as_array().unwrap() {
        let r = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap(), e["depth"].as_u64().unwrap(), e["data"].as_bool().unwrap(), e["zero"].as_bool().unwrap());
        match runs.last_mut() {
            Some(l) if l.2 == r.2 && l.3 == r.3 && l.4 == r.4 && l.0 + l.1 == r.0 => l.1 += r.1,
            _ => runs.push(r),
        }
    }
    runs
}

/// A raw base of random bytes and an empty qcow2 top over it (and a middle qcow2 with some data
/// when `middle`), in `dir/NAME/`.
fn chain(dir: &Path, name: &str, middle: bool) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    random_raw_disk(&d.join("base.raw"), 4 * MIB, 11);
    let below = if middle {
        qimg(&["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", d.join("mid.qcow2").to_str().unwrap()]);
        qio("qcow2", &d.join("mid.qcow2"), &["write -q -P 0x6d 1M 128k"]);
        ("mid.qcow2", "qcow2")
    } else {
        ("base.raw", "raw")
    };
    qimg(&["create", "-q", "-f", "qcow2", "-b", below.0, "-F", below.1, d.join("top.qcow2").to_str().unwrap()]);
    d.join("top.qcow2")
}

fn opts(top: &Path, extra: &str) -> String {
    format!("driver=copy-on-read{extra},file.driver=qcow2,file.file.driver=file,file.file.filename={}", top.display())
}

fn qemu_io_reads(image_opts: &str, cmds: &[&str]) {
    let mut c = Command::new(qemu_io_bin());
    c.args(["--image-opts", image_opts]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "qemu-io: {}", String::from_utf8_lossy(&out.stderr));
}

fn strata_io_reads(image_opts: &str, cmds: &[&str]) {
    let mut argv = vec!["--image-opts".to_string(), image_opts.to_string()];
    for cmd in cmds {
        argv.extend(["-c".to_string(), cmd.to_string()]);
    }
    let out = qemu_runner::img::io::run(&argv);
    assert_eq!(out.status, 0, "img io: {}{}", out.stdout, out.stderr);
}

fn assert_same_contents(a: &Path, b: &Path) {
    let out = Command::new(qemu_img()).args(["compare", a.to_str().unwrap(), b.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{} vs {}: {}", a.display(), b.display(), String::from_utf8_lossy(&out.stdout));
}

fn assert_check_clean(f: &Path) {
    let out = Command::new(qemu_img()).args(["check", f.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "qemu-img check {}: {}", f.display(), String::from_utf8_lossy(&out.stdout));
}

#[test]
fn reads_copy_whole_clusters_into_the_top_as_qemu_does() {
    let dir = scratch("cor-basic");
    let (ours, theirs) = (chain(&dir, "ours", false), chain(&dir, "theirs", false));
    let base = dir.join("ours/base.raw");
    // A 512-byte read, a read across clusters, a 1 MiB read, and a read of what is already up.
    let cmds = ["read -q 1000 512", "read -q 200k 100k", "read -q 2M 1M", "read -q 1000 512"];
    strata_io_reads(&opts(&ours, ""), &cmds);
    qemu_io_reads(&opts(&theirs, ""), &cmds);
    let map = layer_map(&ours);
    assert_eq!(map, layer_map(&theirs), "the top's allocation after copy-on-read reads");
    assert!(map.iter().any(|r| r.2 == 0 && r.3), "something was copied: {map:?}");
    assert!(map.contains(&(0, 65536, 0, true, false)), "the 512-byte read copied its whole cluster: {map:?}");
    assert_check_clean(&ours);
    assert_same_contents(&ours, &base);
}

#[test]
fn bottom_limits_the_layers_copied_from() {
    let dir = scratch("cor-bottom");
    let top = chain(&dir, "c", true);
    let base = dir.join("c/base.raw");
    // mid.qcow2 holds 1M..1M+128k; the rest is only in base.raw, below `bottom`.
    strata_io_reads(&opts(&top, ",bottom=mid.qcow2"), &["read -q 960k 256k"]);
    let map = layer_map(&top);
    assert!(map.contains(&(1 << 20, 128 << 10, 0, true, false)), "mid's data copied up: {map:?}");
    assert!(map.iter().all(|r| r.2 != 0 || (r.0 >= 1 << 20 && r.0 + r.1 <= (1 << 20) + (128 << 10))), "base's data not copied: {map:?}");
    assert_check_clean(&top);
    // Contents: the chain's.
    let whole = dir.join("c/whole.raw");
    qimg(&["convert", "-O", "raw", top.to_str().unwrap(), whole.to_str().unwrap()]);
    let mut expect = std::fs::read(&base).unwrap();
    expect[1 << 20..(1 << 20) + (128 << 10)].fill(0x6d);
    assert!(std::fs::read(&whole).unwrap() == expect);
    // A bottom that is not below the child is refused.
    let out = qemu_runner::img::io::run(&["--image-opts".into(), opts(&top, ",bottom=nope"), "-c".into(), "read 0 512".into()]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("bottom"), "{}", out.stderr);
}

#[test]
fn writes_between_copying_reads_keep_the_guests_data() {
    let dir = scratch("cor-mixed");
    let (ours, theirs) = (chain(&dir, "ours", false), chain(&dir, "theirs", false));
    let cmds = ["write -q -P 0x11 70k 4k", "read -q 64k 64k", "read -P 0x11 70k 4k", "write -q -P 0x22 130k 1k", "read -q 128k 8k", "read -P 0x22 130k 1k"];
    strata_io_reads(&opts(&ours, ""), &cmds);
    qemu_io_reads(&opts(&theirs, ""), &cmds);
    assert_eq!(layer_map(&ours), layer_map(&theirs));
    assert_check_clean(&ours);
    assert_same_contents(&ours, &theirs);
}

#[test]
fn a_guest_reading_through_the_filter_populates_its_overlay() {
    let dir = scratch("cor-guest");
    let top = chain(&dir, "g", false);
    let base = dir.join("g/base.raw");
    let r = boot(
        Machine::Microvm,
        // The runner attaches the chain below the drive itself.
        vec![drive(&top, "top", false)],
        "io driver=copy-on-read,file.driver=qcow2,file.file=top -c read,-q,0,256k",
    );
    assert_eq!(r.exit_code, 0, "console:\n{}", r.console);
    let map = layer_map(&top);
    assert!(map.contains(&(0, 256 << 10, 0, true, false)), "{map:?}");
    assert_check_clean(&top);
    assert_same_contents(&top, &base);
}

#[test]
fn a_failed_copy_does_not_fail_the_read() {
    let dir = scratch("cor-fail");
    let top = chain(&dir, "f", false);
    let base = dir.join("f/base.raw");
    // The first cluster allocation in the top fails (blkdebug under the qcow2 image, once).
    let o = format!(
        "driver=copy-on-read,file.driver=qcow2,file.file.driver=blkdebug,file.file.inject-error.0.event=cluster_alloc,file.file.inject-error.0.once=on,\
         file.file.image.driver=file,file.file.image.filename={}",
        top.display()
    );
    let expect = std::fs::read(&base).unwrap()[..65536].to_vec();
    let out = qemu_runner::img::io::run(&["--image-opts".into(), o, "-c".into(), "read -q 0 64k".into()]);
    assert_eq!(out.status, 0, "the read succeeds: {}{}", out.stdout, out.stderr);
    // Nothing was copied, and the image is consistent (a failed allocation may leak).
    let map = layer_map(&top);
    assert!(map.iter().all(|r| r.2 != 0), "{map:?}");
    let check = Command::new(qemu_img()).args(["check", top.to_str().unwrap()]).output().unwrap();
    assert!(matches!(check.status.code(), Some(0 | 3)), "{}", String::from_utf8_lossy(&check.stdout));
    let whole = dir.join("f/whole.raw");
    qimg(&["convert", "-O", "raw", top.to_str().unwrap(), whole.to_str().unwrap()]);
    assert_eq!(std::fs::read(&whole).unwrap()[..65536], expect[..]);
}

#[test]
fn clusters_larger_than_a_bounce_buffer_are_copied_whole() {
    let dir = scratch("cor-big");
    random_raw_disk(&dir.join("base.raw"), 6 * MIB, 3);
    let top = dir.join("top.qcow2");
    qimg(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", "-b", "base.raw", "-F", "raw", top.to_str().unwrap()]);
    let theirs = dir.join("theirs.qcow2");
    qimg(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", "-b", "base.raw", "-F", "raw", theirs.to_str().unwrap()]);
    // A 64 KiB read inside the first 2 MiB cluster, and a read across the second and third.
    let cmds = ["read -q 100k 64k", "read -q 4000k 200k"];
    let mut argv = vec!["--image-opts".to_string(), opts(&top, "")];
    for c in cmds {
        argv.extend(["-c".to_string(), c.to_string()]);
    }
    let out = qemu_runner::img::io::run(&argv);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    qemu_io_reads(&opts(&theirs, ""), &cmds);
    let map = layer_map(&top);
    assert_eq!(map, vec![(0, 6 * MIB, 0, true, false)], "every cluster read is allocated whole in the top");
    assert_eq!(map, layer_map(&theirs), "as qemu-io leaves it");
    assert_check_clean(&top);
    assert_same_contents(&top, &dir.join("base.raw"));
    // Many such reads in flight at once (more than there are bounce buffers) all complete:
    // none holds a bounce buffer while its copy-on-write waits for one.
    let many = dir.join("many.qcow2");
    qimg(&["create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", "-b", "base.raw", "-F", "raw", many.to_str().unwrap()]);
    let mut argv = vec!["--image-opts".to_string(), opts(&many, "")];
    for i in 0..12u64 {
        argv.extend(["-c".to_string(), format!("aio_read -q {} 4k", (i % 3) * 2 * MIB + i * 8192)]);
    }
    argv.extend(["-c".to_string(), "aio_flush".to_string()]);
    let out = qemu_runner::img::io::run(&argv);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(layer_map(&many), vec![(0, 6 * MIB, 0, true, false)]);
    assert_check_clean(&many);
    assert_same_contents(&many, &dir.join("base.raw"));
}
