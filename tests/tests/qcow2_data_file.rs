//! Writes to qcow2 images with an external data file (`qemu-img create -o data_file=…`), by
//! `qemu-runner img io`: the same commands through qemu-io on a raw image must leave the same
//! guest contents (`qemu-img compare`), `qemu-img check` must find nothing, and with
//! `data_file_raw=on` the data file alone must equal that raw image (and keep the bit).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};

use util::*;

/// `img io` with `cmds` on `file` (format probed); panics unless it succeeds.
fn strata_io(cmds: &[&str], file: &Path) {
    let mut argv: Vec<String> = Vec::new();
    for cmd in cmds {
        argv.extend(["-c".to_string(), cmd.to_string()]);
    }
    argv.push(file.to_str().unwrap().to_string());
    let out = qemu_runner::img::io::run(&argv);
    assert_eq!(
        out.status,
        0,
        "img io {cmds:?} on {}: {}",
        file.display(),
        out.stdout
    );
    assert!(
        !out.stdout.contains("failed"),
        "img io {cmds:?}: {}",
        out.stdout
    );
}

/// A qcow2 image `name.qcow2` of `size` with its data file `name.data` (options `opts` besides
/// the data file, extra create args such as `-b`), and a raw image `name.raw` of the same size.
fn images(
    dir: &Path,
    name: &str,
    opts: &str,
    size: u64,
    extra: &[&str],
) -> (PathBuf, PathBuf, PathBuf) {
    let (q, d, r) = (
        dir.join(format!("{name}.qcow2")),
        dir.join(format!("{name}.data")),
        dir.join(format!("{name}.raw")),
    );
    let mut o = format!("data_file={}", d.display());
    if !opts.is_empty() {
        o = format!("{o},{opts}");
    }
    create(&q, &o, &size.to_string(), extra);
    raw_disk(&r, size);
    (q, d, r)
}

/// `qemu-img check` finds nothing wrong with `file`.
fn assert_clean(file: &Path) {
    let out = qimg(&["check", file.to_str().unwrap()]);
    assert!(
        out.contains("No errors were found"),
        "{}: {out}",
        file.display()
    );
}

/// `qemu-img compare` finds `a` (qcow2) and `b` (`fmt`) equal.
fn assert_same(a: &Path, b: &Path, fmt: &str) {
    qimg(&[
        "compare",
        "-f",
        "qcow2",
        "-F",
        fmt,
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
}

/// Writes, overwrites, partial clusters, guest cluster 0 (offset 0 in the data file), write
/// zeroes with and without unmap, discards and rewrites after them, across L2 tables for small
/// clusters.
fn commands(cs: u64) -> Vec<String> {
    let k = |n: u64| format!("{n}");
    vec![
        format!("write -P 0x11 0 {}", k(1024)),
        format!("write -P 0x22 {} {}", k(cs + 3 * 1024), k(2 * cs + 512)),
        format!("write -P 0x33 {} {}", k(7 * cs), k(cs)),
        format!("write -P 0x44 {} {}", k(7 * cs + 512), k(1024)),
        format!("write -z {} {}", k(9 * cs + 4096), k(3 * cs)),
        format!("write -z -u {} {}", k(cs), k(cs)),
        format!("discard {} {}", k(7 * cs), k(cs)),
        format!("write -P 0x55 {} {}", k(7 * cs + 4096), k(512)),
        format!("write -P 0x66 {} {}", k(20 * cs - 1024), k(2048)),
        format!("write -z -u 0 {}", k(cs)),
        format!("write -P 0x77 {} {}", k(512), k(512)),
        format!("write -P 0x88 {} {}", k(600 * cs), k(5 * cs)),
        format!("discard {} {}", k(601 * cs), k(2 * cs)),
    ]
}

/// Runs [`commands`] on a data-file image through `img io` and on a raw image through qemu-io.
fn write_both(q: &Path, r: &Path, cs: u64) {
    let cmds = commands(cs);
    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    strata_io(&cmds, q);
    qio("raw", r, &cmds);
}

fn data_file_writes(name: &str, opts: &str, cs: u64) {
    let dir = scratch(&format!("qcow2-df-{name}"));
    let size = 1024 * cs;
    let (q, d, r) = images(&dir, name, opts, size, &[]);
    write_both(&q, &r, cs);
    assert_clean(&q);
    assert_same(&q, &r, "raw");
    if opts.contains("data_file_raw=on") {
        let info = qimg(&["info", q.to_str().unwrap()]);
        assert!(info.contains("data file raw: true"), "{info}");
        let (data, raw) = (std::fs::read(&d).unwrap(), std::fs::read(&r).unwrap());
        assert!(
            data.len() >= raw.len() && data[..raw.len()] == raw[..],
            "the raw data file differs from the raw image"
        );
        assert!(data[raw.len()..].iter().all(|&b| b == 0));
    }
    // qemu-io writes on after Strata: the image is one QEMU takes as its own.
    qio("qcow2", &q, &["write -P 0x99 3k 70k"]);
    qio("raw", &r, &["write -P 0x99 3k 70k"]);
    assert_clean(&q);
    assert_same(&q, &r, "raw");
}

#[test]
fn data_file_writes_as_qemu() {
    data_file_writes("plain", "", 64 * KIB);
}

#[test]
fn data_file_raw_writes_keep_the_data_file_raw() {
    data_file_writes("raw", "data_file_raw=on", 64 * KIB);
}

#[test]
fn data_file_small_clusters() {
    data_file_writes("small", "cluster_size=4096", 4 * KIB);
}

#[test]
fn data_file_raw_small_clusters() {
    data_file_writes("rawsmall", "data_file_raw=on,cluster_size=4096", 4 * KIB);
}

#[test]
fn data_file_extended_l2() {
    data_file_writes("ext", "extended_l2=on", 64 * KIB);
}

#[test]
fn data_file_lazy_refcounts() {
    data_file_writes("lazy", "lazy_refcounts=on", 64 * KIB);
}

/// A data-file image over a backing file: partial writes copy the backing file's data into the
/// data file. qemu-io does the same on a copy with its own data file.
#[test]
fn data_file_over_a_backing_file() {
    let dir = scratch("qcow2-df-backing");
    let base = dir.join("base.qcow2");
    create(&base, "", &MIB.to_string(), &[]);
    qio("qcow2", &base, &["write -P 0x5a 0 1M", "write -z 256k 64k"]);
    for ext in ["off", "on"] {
        let mk = |name: &str| {
            let (q, d, _) = images(
                &dir,
                &format!("{name}-{ext}"),
                &format!("extended_l2={ext}"),
                MIB,
                &["-b", "base.qcow2", "-F", "qcow2"],
            );
            (q, d)
        };
        let (ours, _) = mk("ours");
        let (theirs, _) = mk("theirs");
        let cmds = [
            "write -P 1 1k 1k",
            "write -P 2 70k 130k",
            "write -z 300k 100k",
            "discard 448k 64k",
            "write -z -u 512k 64k",
            "write -P 3 600k 4k",
        ];
        strata_io(&cmds, &ours);
        qio("qcow2", &theirs, &cmds);
        assert_clean(&ours);
        assert_same(&ours, &theirs, "qcow2");
    }
}

/// A write that grows the data file (a data file shorter than the disk, as qemu-img makes it
/// for a size that is not a cluster multiple), and the image's last partial cluster.
#[test]
fn data_file_growth_and_an_unaligned_end() {
    let dir = scratch("qcow2-df-end");
    let size = MIB + 5 * KIB;
    let (q, d, r) = images(&dir, "end", "", size, &[]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&d)
        .unwrap()
        .set_len(0)
        .unwrap();
    let cmds = ["write -P 1 1M 5k", "write -P 2 512k 1k", "write -z 0 64k"];
    strata_io(&cmds, &q);
    qio("raw", &r, &cmds);
    assert_clean(&q);
    assert_same(&q, &r, "raw");
}

/// The guest writes data-file images (its `io` workload): the runner attaches the top's data
/// file read-write and big enough for the whole disk; afterwards the image equals a raw image
/// qemu-io wrote the same way, `qemu-img check` is clean, and a raw data file equals that raw
/// image. One boot per image: a plain data file that starts empty, and a raw one.
#[test]
fn guest_writes_a_data_file_image() {
    use strata_tests::{boot, drive, Drive, Machine};
    let dir = scratch("qcow2-df-guest");
    let size = 4 * MIB + 4 * KIB;
    let cmds = ["write -P 0xaa 0 64k", "write -P 0xbb 1M 4k", "write -P 0xcc 3146240 3k", "write -z 2M 128k", "write -P 0xdd 4M 4k", "discard 1M 64k"];
    for (name, opts) in [("ga", ""), ("gb", "data_file_raw=on")] {
        let (q, d, raw) = images(&dir, name, opts, size, &[]);
        let guest = cmds.iter().fold("io top".to_string(), |acc, c| format!("{acc} -c {}", c.replace(' ', ",")));
        let r = boot(Machine::Microvm, vec![Drive { headroom: None, ..drive(&q, "top", false) }], &guest);
        assert!(r.is_ok(), "{name}: {}\n{}", r.summary(), r.console);
        qio("raw", &raw, &cmds);
        assert_clean(&q);
        assert_same(&q, &raw, "raw");
        if !opts.is_empty() {
            let (data, raw) = (std::fs::read(&d).unwrap(), std::fs::read(&raw).unwrap());
            assert!(data[..raw.len()] == raw[..], "the raw data file differs from the raw image");
        }
    }
}
