//! Internal snapshots written by Strata (`img snapshot -c/-a/-d`), with qemu-img as the oracle:
//! every operation is done by Strata on one copy and by qemu-img on another, and after each
//! `qemu-img check` is clean on both, the active contents compare equal (`qemu-img compare`),
//! every snapshot's contents are equal (`convert -l snapshot.name=`, by qemu-img and by `img`),
//! and `-l` lists the same (dates aside). Snapshots made by one tool are applied and deleted by
//! the other; writes after a snapshot leave it unchanged (copy-on-write through refcounts > 1).
//! Variants: default, extended L2, compressed clusters, refcount_bits 16 with 4 KiB clusters,
//! version 2, backing file; refcount_bits 1 fails as in QEMU (a second reference does not fit).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod qcow2_util;

use std::path::{Path, PathBuf};
use std::process::Command;

use qcow2_util::*;

/// `img snapshot ARGS` in this process: (status, what it listed).
fn ours(args: &[&str]) -> (i32, String) {
    let mut argv: Vec<String> = vec!["snapshot".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let mut out = Vec::new();
    let status = match qemu_runner::img::snapshot::run_to(&argv[1..], &mut out) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    (status, String::from_utf8(out).unwrap())
}

/// `img snapshot ARGS` that must succeed.
fn ours_ok(args: &[&str]) -> String {
    let (status, out) = ours(args);
    assert_eq!(status, 0, "img snapshot {args:?}");
    out
}

/// `qemu-img snapshot ARGS`: (status, stdout, stderr).
/// qemu-img's error message in `err`, as qemu-img 10 words it: the first `qemu-img: ` line
/// (7.2 prints a probing warning first when it has no -f) without the prefix, and 7.2's
/// `: -95 (Operation not supported)` errno form as 10's `: Operation not supported`.
fn qemu_message(err: &str) -> String {
    let line = err.lines().find_map(|l| l.strip_prefix("qemu-img: ")).unwrap_or_else(|| err.lines().next().unwrap_or(""));
    if let Some((head, tail)) = line.rsplit_once(": -") {
        if let Some((num, text)) = tail.split_once(" (") {
            if num.bytes().all(|b| b.is_ascii_digit()) && text.ends_with(')') {
                return format!("{head}: {}", &text[..text.len() - 1]);
            }
        }
    }
    line.to_string()
}

fn theirs(args: &[&str]) -> (i32, String, String) {
    ensure_qemu();
    // No retry for a lock held by a child forked meanwhile: the in-process `img` releases its
    // image locks when it closes the file (block's dev/file/lock.rs).
    let out = Command::new(qemu_img()).arg("snapshot").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn p(f: &Path) -> &str {
    f.to_str().unwrap()
}

/// `qemu-img check` finds nothing wrong (no leaks either).
fn check_clean(f: &Path) {
    ensure_qemu();
    let out = Command::new(qemu_img())
        .args(["check", p(f)])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "qemu-img check {}: {}{}",
        f.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The list with the date column blanked (the two tools take their snapshots at different
/// moments), for qemu-img's layout since 10.0 (`%-7s %-16s %8s %19s %15s %10s`).
fn undated(list: &str) -> String {
    list.lines()
        .map(|l| {
            let chars: Vec<char> = l.chars().collect();
            if chars.len() > 53 && chars.get(38) == Some(&'-') {
                let mut c = chars;
                c.splice(34..53, std::iter::repeat_n(' ', 19));
                c.into_iter().collect()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The list's rows as words, dates left out and the VM clock's hours read as a number: what
/// every qemu-img version prints alike (older ones lay the columns out differently and print
/// the hours with two digits).
fn words(list: &str) -> Vec<Vec<String>> {
    let is_date = |w: &str| w.len() == 10 && w.as_bytes().get(4) == Some(&b'-');
    let is_time = |w: &str| w.len() == 8 && w.matches(':').count() == 2 && !w.contains('.');
    list.lines()
        .skip(2)
        .map(|l| {
            l.split_whitespace()
                .filter(|w| !is_date(w) && !is_time(w))
                .map(|w| match w.split_once(':') {
                    Some((h, rest)) if w.contains('.') => {
                        format!("{}:{rest}", h.parse::<u64>().unwrap_or(u64::MAX))
                    }
                    _ => w.to_string(),
                })
                .collect()
        })
        .collect()
}

/// Both images list the same snapshots, as qemu-img prints them and as `img` does: byte for
/// byte (dates aside) where the live qemu-img has Strata's layout, word for word otherwise.
fn same_lists(a: &Path, b: &Path) {
    let (_, qa, _) = theirs(&["-l", p(a)]);
    let (_, qb, _) = theirs(&["-l", p(b)]);
    assert_eq!(
        words(&qa),
        words(&qb),
        "qemu-img's lists of {} and {}",
        a.display(),
        b.display()
    );
    let la = ours_ok(&["-l", p(a)]);
    assert_eq!(
        words(&la),
        words(&qa),
        "img's and qemu-img's lists of {}",
        a.display()
    );
    if la.lines().nth(1) == qa.lines().nth(1) {
        assert_eq!(
            undated(&la),
            undated(&qa),
            "img's and qemu-img's lists of {}",
            a.display()
        );
    }
}

/// The snapshot names in `f` (qemu-img's list).
fn names(f: &Path) -> Vec<String> {
    let (_, out, _) = theirs(&["-l", p(f)]);
    out.lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// Everything equal between Strata's copy `a` and qemu-img's copy `b`: checks clean, active
/// contents, each snapshot's contents (converted by qemu-img, and by `img` on `a`), lists.
fn same_state(a: &Path, b: &Path) {
    check_clean(a);
    check_clean(b);
    qimg(&["compare", "-f", "qcow2", "-F", "qcow2", p(a), p(b)]);
    same_lists(a, b);
    for name in names(a) {
        let opt = format!("snapshot.name={name}");
        let ra = a.with_extension(format!("{name}.raw"));
        let rb = b.with_extension(format!("{name}.raw"));
        qimg(&["convert", "-l", &opt, "-O", "raw", p(a), p(&ra)]);
        qimg(&["convert", "-l", &opt, "-O", "raw", p(b), p(&rb)]);
        assert_eq!(
            sha256sum(&ra),
            sha256sum(&rb),
            "snapshot {name} of {} and {}",
            a.display(),
            b.display()
        );
        check_convert(a, &["-l", &opt]);
        let _ = std::fs::remove_file(&ra);
        let _ = std::fs::remove_file(&rb);
    }
}

/// An image of `opts` with data written by qemu-io, plus `compress` compressed clusters.
fn image(dir: &Path, name: &str, opts: &str, extra: &[&str], compress: bool) -> PathBuf {
    let f = dir.join(name);
    create(&f, opts, "64M", extra);
    qio(
        "qcow2",
        &f,
        &[
            "write -P 0x11 0 1M",
            "write -P 0x22 5M 192k",
            "write -z 7M 64k",
            "write -P 0x33 60M 4k",
        ],
    );
    if compress {
        qio(
            "qcow2",
            &f,
            &["write -c -P 0x44 10M 64k", "write -c -P 0x45 10304k 64k"],
        );
    }
    f
}

/// Writes through Strata (`img io`).
fn our_writes(f: &Path, cmds: &[&str]) {
    let mut args = vec!["io", "-f", "qcow2"];
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(p(f));
    assert_eq!(img(&args), 0, "img io {cmds:?}");
}

/// The whole cycle on one variant: Strata on `a`, qemu-img on `b`, crossing over half-way.
fn cycle(dir: &Path, variant: &str, opts: &str, extra: &[&str], compress: bool) {
    let a = image(
        dir,
        &format!("{variant}-strata.qcow2"),
        opts,
        extra,
        compress,
    );
    let b = dir.join(format!("{variant}-qemu.qcow2"));
    std::fs::copy(&a, &b).unwrap();
    // Create.
    ours_ok(&["-c", "first", p(&a)]);
    assert_eq!(theirs(&["-c", "first", p(&b)]).0, 0);
    same_state(&a, &b);
    // Writes after the snapshot: copy-on-write, the snapshot keeps the old data.
    let writes = [
        "write -P 0x55 0 64k",
        "write -P 0x56 5124k 8k",
        "write -z 60M 4k",
        "write -P 0x57 10M 4k",
        "write -P 0x58 20M 64k",
    ];
    our_writes(&a, &writes);
    qio("qcow2", &b, &writes);
    same_state(&a, &b);
    // A second snapshot by the other tool on each side.
    assert_eq!(theirs(&["-c", "second", p(&a)]).0, 0);
    ours_ok(&["-c", "second", p(&b)]);
    same_state(&a, &b);
    our_writes(&a, &["write -P 0x66 32k 64k"]);
    qio("qcow2", &b, &["write -P 0x66 32k 64k"]);
    // Apply: Strata applies on its copy, qemu-img on its own; then the other way round.
    ours_ok(&["-a", "first", p(&a)]);
    assert_eq!(theirs(&["-a", "first", p(&b)]).0, 0);
    same_state(&a, &b);
    assert_eq!(theirs(&["-a", "second", p(&a)]).0, 0);
    ours_ok(&["-a", "second", p(&b)]);
    same_state(&a, &b);
    // Delete: each tool deletes the snapshot the other made, then its own.
    ours_ok(&["-d", "second", p(&a)]);
    assert_eq!(theirs(&["-d", "second", p(&b)]).0, 0);
    same_state(&a, &b);
    assert_eq!(theirs(&["-d", "first", p(&a)]).0, 0);
    ours_ok(&["-d", "first", p(&b)]);
    same_state(&a, &b);
    assert!(names(&a).is_empty() && names(&b).is_empty());
    // And a snapshot made and deleted by Strata alone leaves nothing behind.
    ours_ok(&["-c", "again", p(&a)]);
    our_writes(&a, &["write -P 0x77 0 128k"]);
    ours_ok(&["-d", "again", p(&a)]);
    check_clean(&a);
}

#[test]
fn default_image() {
    let dir = scratch("qcow2-snapshot-default");
    cycle(&dir, "default", "", &[], false);
}

#[test]
fn extended_l2_and_compressed() {
    let dir = scratch("qcow2-snapshot-ext");
    cycle(&dir, "extl2", "extended_l2=on,cluster_size=64k", &[], true);
    cycle(&dir, "compressed", "", &[], true);
}

#[test]
fn refcount_bits_1_refused_as_qemu_refuses() {
    // One-bit refcounts cannot count a second reference: both tools fail and leak the L1 copy.
    let dir = scratch("qcow2-snapshot-rc1");
    let a = image(&dir, "a.qcow2", "refcount_bits=1", &[], false);
    let b = dir.join("b.qcow2");
    std::fs::copy(&a, &b).unwrap();
    let (_, _, err) = theirs(&["-c", "s", p(&b)]);
    assert_eq!(ours(&["-c", "s", p(&a)]).0, 1);
    assert!(err.contains("Invalid argument"), "{err}");
    let leaks = |f: &Path| qimg_check_json(f)["leaks"].as_u64();
    assert_eq!(leaks(&a), leaks(&b));
    assert!(names(&a).is_empty());
    qimg(&["compare", p(&a), p(&b)]);
}

/// `qemu-img check --output=json` (any exit status).
fn qimg_check_json(f: &Path) -> serde_json::Value {
    let out = Command::new(qemu_img())
        .args(["check", "--output=json", p(f)])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn refcount_widths_and_small_clusters() {
    let dir = scratch("qcow2-snapshot-refbits");
    cycle(
        &dir,
        "rc16-4k",
        "refcount_bits=16,cluster_size=4k",
        &[],
        false,
    );
    cycle(&dir, "v2", "compat=0.10", &[], false);
}

#[test]
fn backing_file() {
    let dir = scratch("qcow2-snapshot-backing");
    let base = dir.join("base.qcow2");
    create(&base, "", "64M", &[]);
    qio(
        "qcow2",
        &base,
        &["write -P 0x99 0 8M", "write -P 0x9a 50M 2M"],
    );
    cycle(
        &dir,
        "overlay",
        "",
        &["-b", "base.qcow2", "-F", "qcow2"],
        false,
    );
}

#[test]
fn apply_restores_the_snapshot_size() {
    let dir = scratch("qcow2-snapshot-size");
    let a = image(&dir, "a.qcow2", "", &[], false);
    let b = dir.join("b.qcow2");
    std::fs::copy(&a, &b).unwrap();
    ours_ok(&["-c", "small", p(&a)]);
    assert_eq!(theirs(&["-c", "small", p(&b)]).0, 0);
    for f in [&a, &b] {
        qimg(&["resize", p(f), "3G"]);
        qio("qcow2", f, &["write -P 0x12 2G 1M", "write -P 0x13 0 4k"]);
    }
    ours_ok(&["-a", "small", p(&a)]);
    assert_eq!(theirs(&["-a", "small", p(&b)]).0, 0);
    same_state(&a, &b);
    let size = |f: &Path| {
        serde_json::from_str::<serde_json::Value>(&qimg(&["info", "--output=json", p(f)])).unwrap()
            ["virtual-size"]
            .as_u64()
    };
    assert_eq!(size(&a), size(&b));
    assert_eq!(size(&a), Some(64 << 20));
}

#[test]
fn ids_as_qemu_numbers_them() {
    let dir = scratch("qcow2-snapshot-ids");
    let a = image(&dir, "a.qcow2", "", &[], false);
    let b = dir.join("b.qcow2");
    std::fs::copy(&a, &b).unwrap();
    for name in ["one", "two", "three"] {
        ours_ok(&["-c", name, p(&a)]);
        assert_eq!(theirs(&["-c", name, p(&b)]).0, 0);
    }
    ours_ok(&["-d", "two", p(&a)]);
    assert_eq!(theirs(&["-d", "two", p(&b)]).0, 0);
    // Names may repeat (ids may not): QEMU allows it.
    ours_ok(&["-c", "one", p(&a)]);
    assert_eq!(theirs(&["-c", "one", p(&b)]).0, 0);
    same_state(&a, &b);
    // -a takes an id first, then a name; -d a name only.
    ours_ok(&["-a", "3", p(&a)]);
    assert_eq!(theirs(&["-a", "3", p(&b)]).0, 0);
    same_state(&a, &b);
    assert_eq!(ours(&["-d", "3", p(&a)]).0, 1);
    assert_eq!(theirs(&["-d", "3", p(&b)]).0, 1);
}

#[test]
fn errors_as_qemu_img() {
    let dir = scratch("qcow2-snapshot-errors");
    let a = image(&dir, "a.qcow2", "", &[], false);
    ours_ok(&["-c", "s", p(&a)]);
    let message = |args: &[&str]| {
        let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        argv.insert(0, "snapshot".into());
        match qemu_runner::img::snapshot::run_to(&argv[1..], &mut Vec::new()) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    for args in [
        &["-a", "nope"][..],
        &["-d", "nope"],
        &["-c", "x", "-U"],
        &["-l", "-c", "x"],
    ] {
        let mut full: Vec<&str> = args.to_vec();
        full.push(p(&a));
        let (status, _, err) = theirs(&full);
        assert_eq!(ours(&full).0, status, "{full:?}");
        let want = qemu_message(&err);
        assert_eq!(message(&full), want, "{full:?}");
    }
    check_clean(&a);
    // A raw image has no internal snapshots: the same messages, and an empty list.
    let r = dir.join("r.raw");
    raw_disk(&r, MIB);
    for args in [
        &["-f", "raw", "-c", "x"][..],
        &["-f", "raw", "-a", "x"],
        &["-f", "raw", "-d", "x"],
        &["-f", "raw", "-l"],
    ] {
        let mut full: Vec<&str> = args.to_vec();
        full.push(p(&r));
        // qemu-img 7.2's snapshot command has no -f (8.0 added it): ask it with a probed raw
        // image instead, which it answers alike.
        let (status, out, err) = match theirs(&full) {
            (_, _, err) if err.contains("unrecognized option '-f'") => theirs(&full[2..]),
            said => said,
        };
        assert_eq!(ours(&full), (status, out), "{full:?}");
        let want = qemu_message(&err);
        assert_eq!(message(&full), want, "{full:?}");
    }
    // An external data file: refused, as QEMU refuses it.
    let d = dir.join("df.qcow2");
    let data_opt = format!("data_file={}", p(&dir.join("df.raw")));
    create(&d, &data_opt, "1M", &[]);
    assert_eq!(theirs(&["-c", "x", p(&d)]).0, 1);
    assert_eq!(ours(&["-c", "x", p(&d)]).0, 1);
    assert!(names(&d).is_empty());
}

/// The guest's `snapshot` workload: a snapshot taken in the guest is listed by qemu-img, checks
/// clean and holds the image as it was; one qemu-img made is deleted in a second boot, and the
/// guest's is applied in a third.
#[test]
fn guest_snapshot_workload() {
    let dir = scratch("qcow2-snapshot-guest");
    let f = image(&dir, "g.qcow2", "", &[], true);
    assert_eq!(theirs(&["-c", "host", p(&f)]).0, 0);
    qio("qcow2", &f, &["write -P 0x5a 2M 64k"]);
    let active = host_digest(&f);
    let top = Drive {
        headroom: None,
        ..drive(&f, "top", false)
    };
    let r = boot(
        Machine::Microvm,
        vec![top.clone()],
        "snapshot top --create guest",
    );
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    assert_eq!(
        records(&r, "snapshot_action")[0]["id"],
        "2",
        "{}",
        r.console
    );
    check_clean(&f);
    assert_eq!(names(&f), ["host", "guest"]);
    let raw = dir.join("guest.raw");
    qimg(&[
        "convert",
        "-l",
        "snapshot.name=guest",
        "-O",
        "raw",
        p(&f),
        p(&raw),
    ]);
    assert_eq!(sha256sum(&raw), active);
    assert_eq!(host_digest(&f), active);
    let top2 = top.clone();
    let r = boot(Machine::Microvm, vec![top], "snapshot top --delete host");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    assert_eq!(records(&r, "snapshot").len(), 1, "{}", r.console);
    check_clean(&f);
    assert_eq!(names(&f), ["guest"]);
    assert_eq!(host_digest(&f), active);
    // Apply in the guest after the host changed the image.
    qio("qcow2", &f, &["write -P 0x6b 0 128k"]);
    assert_ne!(host_digest(&f), active);
    let r = boot(Machine::Microvm, vec![top2], "snapshot top --apply guest");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    check_clean(&f);
    assert_eq!(host_digest(&f), active);
}

/// A table of 65536 snapshots (QEMU's limit) takes no more: both tools refuse with "File too
/// large" and leave the image as it was.
#[test]
fn full_snapshot_table_refused() {
    let dir = scratch("qcow2-snapshot-full");
    let a = dir.join("a.qcow2");
    create(&a, "", "1M", &[]);
    // Entries of 64 bytes (40 + 16 bytes of extra data, a decimal id, no name, padding), each
    // with an empty L1 table, appended in whole clusters past the image's end.
    let cs = 65536u64;
    let mut table = Vec::new();
    for i in 1..=65536u32 {
        let id = i.to_string();
        let mut e = vec![0u8; 40];
        e[12..14].copy_from_slice(&(id.len() as u16).to_be_bytes());
        e[36..40].copy_from_slice(&16u32.to_be_bytes());
        e.extend_from_slice(&[0u8; 8]);
        e.extend_from_slice(&(1u64 << 20).to_be_bytes());
        e.extend_from_slice(id.as_bytes());
        e.resize(e.len().div_ceil(8) * 8, 0);
        table.extend(e);
    }
    let at = std::fs::metadata(&a).unwrap().len().div_ceil(cs) * cs;
    let mut bytes = std::fs::read(&a).unwrap();
    bytes.resize(at as usize, 0);
    bytes.extend(&table);
    bytes.resize(bytes.len().div_ceil(cs as usize) * cs as usize, 0);
    bytes[60..64].copy_from_slice(&65536u32.to_be_bytes());
    bytes[64..72].copy_from_slice(&at.to_be_bytes());
    std::fs::write(&a, &bytes).unwrap();
    let b = dir.join("b.qcow2");
    std::fs::copy(&a, &b).unwrap();
    let (status, _, err) = theirs(&["-c", "one-more", p(&b)]);
    assert_eq!(status, 1);
    // qemu-img 10 says "...: File too large", 7.2 "...: -27 (File too large)".
    assert!(
        err.contains("Could not create snapshot 'one-more': ") && err.contains("File too large"),
        "{err}"
    );
    let mut argv: Vec<String> = vec!["-c".into(), "one-more".into(), p(&a).into()];
    let ours = qemu_runner::img::snapshot::run_to(&argv, &mut Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        ours.starts_with("Could not create snapshot 'one-more': File too large"),
        "{ours}"
    );
    assert_eq!(std::fs::read(&a).unwrap(), bytes, "the image changed");
    argv[0] = "-l".into();
    argv.remove(1);
    let mut list = Vec::new();
    qemu_runner::img::snapshot::run_to(&argv, &mut list).unwrap();
    assert_eq!(String::from_utf8(list).unwrap().lines().count(), 65536 + 2);
}

/// The block layer's refusals: a read-only node, a node with a snapshot open; the image is not
/// touched.
#[test]
fn refusals_in_the_block_layer() {
    use qemu_runner::img::block::driver::qcow2::snapshots::{Lookup, NewSnapshot};
    use qemu_runner::img::block::Error;
    use qemu_runner::img::image::{block_on, with_image, OpenOptions};
    let dir = scratch("qcow2-snapshot-refusals");
    let a = image(&dir, "a.qcow2", "", &[], false);
    ours_ok(&["-c", "s", p(&a)]);
    let before = std::fs::read(&a).unwrap();
    let run = |extra: Option<&str>| -> Vec<Error> {
        let opts = OpenOptions {
            read_only: true,
            extra: extra.map(str::to_string),
            ..OpenOptions::default()
        };
        with_image(p(&a), &opts, |img| {
            let graph = img.backend.graph();
            let root = img.root();
            let q = graph.state(root).unwrap().and_then(|s| s.qcow2()).unwrap();
            let io = graph.io();
            let new = NewSnapshot {
                id: None,
                name: "x",
                date_sec: 0,
                date_nsec: 0,
                vm_clock_nsec: 0,
                icount: 0,
            };
            Ok(vec![
                block_on(q.snapshot_create(&io, root, &new)).unwrap_err(),
                block_on(q.snapshot_apply(&io, root, "s")).unwrap_err(),
                block_on(q.snapshot_delete(&io, root, "s", Lookup::Name)).unwrap_err(),
            ])
        })
        .unwrap()
    };
    for e in run(None) {
        assert!(matches!(e, Error::ReadOnly), "{e:?}");
    }
    for e in run(Some("snapshot.name=s")) {
        assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    }
    assert_eq!(std::fs::read(&a).unwrap(), before);
}

/// The "Snapshot list:" table of a human `info` report.
fn info_table(report: &str) -> String {
    report
        .lines()
        .skip_while(|l| *l != "Snapshot list:")
        .take_while(|l| !l.starts_with("Format specific information:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn human_info_lists_snapshots_as_qemu_img_info() {
    let dir = scratch("snapshot-info");
    let f = image(&dir, "info.qcow2", "", &[], false);
    qimg(&["snapshot", "-c", "first", p(&f)]);
    qimg(&["snapshot", "-c", "a-longer-snapshot-name", p(&f)]);
    ensure_qemu();
    let theirs = Command::new(qemu_img()).args(["info", p(&f)]).output().unwrap();
    assert!(theirs.status.success());
    let theirs = info_table(&String::from_utf8_lossy(&theirs.stdout));
    let mut out = Vec::new();
    qemu_runner::img::info::run_to(&[p(&f).to_string()], &mut out).unwrap();
    let ours = info_table(&String::from_utf8(out).unwrap());
    assert!(theirs.lines().count() == 4, "{theirs}");
    // One formatter prints it for info and snapshot -l.
    assert_eq!(ours, ours_ok(&["-l", p(&f)]));
    // The same image, so the same dates: byte for byte where the live qemu-img has Strata's
    // layout (10.0 on), word for word otherwise.
    assert_eq!(words(&ours), words(&theirs), "{ours}\n{theirs}");
    if ours.lines().nth(1) == theirs.lines().nth(1) {
        assert_eq!(ours, theirs);
    }
}
