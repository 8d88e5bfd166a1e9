//! `qemu-runner img check` against `qemu-img check` on images whose snapshot table is broken:
//! images made by qemu-img with three internal snapshots (`qemu-img snapshot -c`), then
//! patched — a snapshot L1 table unaligned, too large or past the end of the file; extra data
//! above 1024 bytes (in place, so the strings are read from the wrong bytes as QEMU reads
//! them, and in a table rebuilt around a real 1100-byte extra); a version 3 entry without its
//! 16 bytes of extra data; a count larger than the table; a table past the end of the file or
//! unaligned; an entry whose extra data takes the table past 2 GiB; more than 65536
//! snapshots. For each: exit status, report (human and JSON) and the per-problem lines agree
//! with the live qemu-img's (the texts are compared with the tool's own output, so they hold
//! for qemu-img 7.2 and 10); then `check -r all` on two copies (qemu-img's and Strata's): the
//! same status, then the same `qemu-img check` status, `qemu-img snapshot -l`, contents equal
//! to each other and the active disk's contents unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod qcow2_util;

use std::path::{Path, PathBuf};
use std::process::Command;

use qcow2_util::*;

/// What one tool said.
#[derive(Debug)]
struct Said {
    status: i32,
    out: String,
    err: String,
}

/// `qemu-img ARGS FILE` (any subcommand).
fn qemu(sub: &str, file: &Path, args: &[&str]) -> Said {
    ensure_qemu();
    let o = Command::new(qemu_img())
        .arg(sub)
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    Said {
        status: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `qemu-runner img check ARGS FILE`, in this process.
fn ours(file: &Path, args: &[&str]) -> Said {
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    argv.push(file.to_str().unwrap().to_string());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = match qemu_runner::img::check::run_to(&argv, &mut out, &mut err) {
        Ok(s) => s,
        Err(e) => {
            err.extend_from_slice(format!("{e}\n").as_bytes());
            1
        }
    };
    Said {
        status,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

/// The per-problem lines, without the tool's name and the final "Check failed" line (whose
/// reason is worded by each tool), sorted.
fn problem_lines(err: &str) -> Vec<String> {
    let mut v: Vec<String> = err
        .lines()
        .map(|l| {
            l.trim_start_matches("qemu-img: ")
                .trim_start_matches("qemu-runner img: ")
        })
        .filter(|l| !l.starts_with("Check failed") && !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The JSON report without the file name.
fn json_fields(out: &str) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_object_mut().unwrap().remove("filename");
    v
}

/// Both tools on their own copy of `file` with `args`: status, report and messages agree.
/// Returns the copies (qemu-img's, Strata's).
fn agree(file: &Path, tag: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let (q, s) = (
        copy_as(file, &format!("{tag}.qemu.qcow2")),
        copy_as(file, &format!("{tag}.ours.qcow2")),
    );
    let (a, b) = (qemu("check", &q, args), ours(&s, args));
    let ctx = format!(
        "{tag} {args:?}\n--- qemu-img (status {}):\n{}{}\n--- img check (status {}):\n{}{}",
        a.status,
        a.out,
        &a.err[..a.err.len().min(4000)],
        b.status,
        b.out,
        &b.err[..b.err.len().min(4000)]
    );
    assert_eq!(a.status, b.status, "exit status: {ctx}");
    if args.iter().any(|a| a.contains("json")) && !a.out.is_empty() {
        assert_eq!(json_fields(&a.out), json_fields(&b.out), "report: {ctx}");
    } else {
        assert_eq!(a.out, b.out, "report: {ctx}");
    }
    assert!(
        problem_lines(&a.err) == problem_lines(&b.err),
        "messages: {ctx}"
    );
    (q, s)
}

/// How far the two repaired copies must agree.
#[derive(Clone, Copy, PartialEq)]
enum After {
    /// The same `qemu-img check` status, snapshot list and contents; the active disk reads
    /// as `base` does.
    Same,
    /// Only the status of `-r all` itself (where the repaired image cannot be opened, or
    /// QEMU's repair stops half way with a check error).
    StatusOnly,
}

/// Every mode on copies of `file`; `base` is the image before it was damaged.
fn agree_case(file: &Path, base: &Path, tag: &str, after: After) {
    agree(file, &format!("{tag}-h"), &[]);
    agree(file, &format!("{tag}-j"), &["--output=json"]);
    agree(file, &format!("{tag}-l"), &["-r", "leaks"]);
    let (q, s) = if after == After::Same {
        agree(file, &format!("{tag}-a"), &["-r", "all"])
    } else {
        let (q, s) = (
            copy_as(file, &format!("{tag}-a.qemu.qcow2")),
            copy_as(file, &format!("{tag}-a.ours.qcow2")),
        );
        let (a, b) = (qemu("check", &q, &["-r", "all"]), ours(&s, &["-r", "all"]));
        assert_eq!(a.status, b.status, "{tag} -r all: {a:?}\n{b:?}");
        return;
    };
    let (a, b) = (qemu("check", &q, &[]), qemu("check", &s, &[]));
    assert_eq!(a.status, b.status, "{tag} after -r all:\n{a:?}\n{b:?}");
    assert_eq!(a.out, b.out, "{tag} after -r all");
    let (la, lb) = (qemu("snapshot", &q, &["-l"]), qemu("snapshot", &s, &["-l"]));
    assert_eq!(
        (la.status, &la.out),
        (lb.status, &lb.out),
        "{tag}: snapshot lists after -r all"
    );
    let qs = [q.to_str().unwrap(), s.to_str().unwrap()];
    assert!(qimg_ok(&["compare", "-q", qs[0], qs[1]]), "{tag}: contents");
    assert!(
        qimg_ok(&["compare", "-q", base.to_str().unwrap(), qs[1]]),
        "{tag}: active contents changed"
    );
}

/// A 64 MiB image with data and three snapshots, writes between them (shared and COWed
/// clusters); `opts` for `qemu-img create`.
fn three_snapshots(dir: &Path, name: &str, opts: &str) -> PathBuf {
    let f = dir.join(name);
    create(&f, opts, "64M", &[]);
    let p = f.to_str().unwrap();
    qio(
        "qcow2",
        &f,
        &["write -P 0x11 0 1M", "write -P 0x22 5M 192k"],
    );
    qimg(&["snapshot", "-c", "s1", p]);
    qio("qcow2", &f, &["write -P 0x55 0 128k"]);
    qimg(&["snapshot", "-c", "s2", p]);
    qio("qcow2", &f, &["write -P 0x77 5M 64k"]);
    qimg(&["snapshot", "-c", "s3", p]);
    qio("qcow2", &f, &["write -P 0x78 6M 64k"]);
    f
}

/// The snapshot table: (offset, entries as raw bytes, each 40 + extra + id + name).
fn table(file: &Path) -> (u64, Vec<Vec<u8>>) {
    let b = std::fs::read(file).unwrap();
    let (count, offset) = (be32(file, 60), be64(file, 64));
    let mut pos = offset as usize;
    let mut v = Vec::new();
    for _ in 0..count {
        pos = pos.div_ceil(8) * 8;
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]) as usize;
        let extra = u32::from_be_bytes(b[pos + 36..pos + 40].try_into().unwrap()) as usize;
        let len = 40 + extra + u16_at(pos + 12) + u16_at(pos + 14);
        v.push(b[pos..pos + len].to_vec());
        pos += len;
    }
    (offset, v)
}

/// Offset of entry `i` of the snapshot table.
fn entry_at(file: &Path, i: usize) -> u64 {
    let (offset, entries) = table(file);
    let mut pos = offset;
    for e in &entries[..i] {
        pos = (pos + e.len() as u64).div_ceil(8) * 8;
    }
    pos
}

/// Writes `entries` over the table in place (the table's cluster must hold them).
fn write_table(file: &Path, entries: &[Vec<u8>]) {
    let (offset, old) = table(file);
    let old_len: usize = old.iter().map(|e| e.len().div_ceil(8) * 8).sum();
    let mut bytes = Vec::new();
    for e in entries {
        bytes.resize(bytes.len().div_ceil(8) * 8, 0);
        bytes.extend_from_slice(e);
    }
    let cs = 1u64 << be32(file, 20);
    assert!(
        bytes.len() as u64 <= cs - offset % cs,
        "table fits its cluster"
    );
    bytes.resize(bytes.len().max(old_len), 0);
    patch(file, offset, &bytes);
}

/// `entry` with `extra` bytes of extra data: the known 24 bytes kept (or cut), then `fill`.
fn with_extra(entry: &[u8], extra: usize, fill: u8) -> Vec<u8> {
    let old = u32::from_be_bytes(entry[36..40].try_into().unwrap()) as usize;
    let strings = &entry[40 + old..];
    let mut e = entry[..40].to_vec();
    e[36..40].copy_from_slice(&(extra as u32).to_be_bytes());
    let known = &entry[40..40 + old.min(24)];
    let mut ex: Vec<u8> = known.iter().copied().take(extra).collect();
    ex.resize(extra, fill);
    e.extend_from_slice(&ex);
    e.extend_from_slice(strings);
    e
}

#[test]
fn snapshot_l1_tables_not_walked() {
    let dir = scratch("check-snap-l1");
    let base = three_snapshots(&dir, "base.qcow2", "");
    let e1 = entry_at(&base, 1);
    let l1 = be64(&base, e1);
    let f = copy_as(&base, "l1-unaligned.qcow2");
    patch(&f, e1, &(l1 + 0x200).to_be_bytes());
    agree_case(&f, &base, "l1-unaligned", After::Same);
    let f = copy_as(&base, "l1-large.qcow2");
    patch(&f, e1 + 8, &0x40_0001u32.to_be_bytes());
    agree_case(&f, &base, "l1-large", After::Same);
    let f = copy_as(&base, "l1-past-eof.qcow2");
    patch(&f, e1, &0x1000_0000u64.to_be_bytes());
    agree_case(&f, &base, "l1-past-eof", After::Same);
}

#[test]
fn extra_data_cut_and_entries_completed() {
    let dir = scratch("check-snap-extra");
    let base = three_snapshots(&dir, "base.qcow2", "");
    let (_, entries) = table(&base);
    // 1100 bytes of extra data, really there: -r all cuts it to 1024 and rewrites the table.
    let f = copy_as(&base, "extra-real.qcow2");
    let mut e = entries.clone();
    e[1] = with_extra(&e[1], 1100, 0xab);
    write_table(&f, &e);
    agree_case(&f, &base, "extra-real", After::Same);
    // Only the size says 1025: QEMU reads the strings and the next entries from the bytes
    // after it, and so must the check.
    let f = copy_as(&base, "extra-in-place.qcow2");
    patch(&f, entry_at(&base, 1) + 36, &1025u32.to_be_bytes());
    agree_case(&f, &base, "extra-in-place", After::Same);
    // A version 3 entry with 8 bytes of extra data ("incomplete"): completed by the rewrite.
    let f = copy_as(&base, "incomplete.qcow2");
    let mut e = entries.clone();
    e[1] = with_extra(&e[1], 8, 0);
    write_table(&f, &e);
    agree_case(&f, &base, "incomplete", After::Same);
    // Extra data that takes the table past 2 GiB: -r all cuts it and drops the entry.
    let f = copy_as(&base, "span.qcow2");
    patch(&f, entry_at(&base, 2) + 36, &0x8000_0000u32.to_be_bytes());
    agree_case(&f, &base, "span", After::Same);
}

#[test]
fn table_placement_and_count() {
    let dir = scratch("check-snap-table");
    let base = three_snapshots(&dir, "base.qcow2", "");
    // A count beyond the entries: the rest read from the bytes after the table (zeros).
    let f = copy_as(&base, "count-100.qcow2");
    patch(&f, 60, &100u32.to_be_bytes());
    agree_case(&f, &base, "count-100", After::Same);
    // The table past the end of the file: every entry reads as zeros.
    let f = copy_as(&base, "table-past-eof.qcow2");
    patch(&f, 64, &0x1000_0000u64.to_be_bytes());
    agree_case(&f, &base, "table-past-eof", After::Same);
    // An unaligned table: a check error in every mode.
    let f = copy_as(&base, "table-unaligned.qcow2");
    patch(&f, 64, &(be64(&base, 64) + 8).to_be_bytes());
    agree_case(&f, &base, "table-unaligned", After::StatusOnly);
    // Extra data of 8 bytes in place: the entries after it read from the wrong bytes, and
    // QEMU's repair then refuses an L2 write onto what it takes for an L1 table (the image
    // marked corrupt, a check error).
    let f = copy_as(&base, "garbage.qcow2");
    patch(&f, entry_at(&base, 1) + 36, &8u32.to_be_bytes());
    agree_case(&f, &base, "garbage", After::StatusOnly);
}

#[test]
fn more_than_65536_snapshots() {
    let dir = scratch("check-snap-count");
    // Version 2 (no "incomplete" entries) with the table in the file's last cluster: the
    // entries past the two real ones read as zeros.
    let f = dir.join("v2.qcow2");
    create(&f, "compat=0.10", "64M", &[]);
    let p = f.to_str().unwrap();
    qio("qcow2", &f, &["write -P 0x11 0 1M"]);
    qimg(&["snapshot", "-c", "s1", p]);
    qio("qcow2", &f, &["write -P 0x12 0 64k"]);
    qimg(&["snapshot", "-c", "s2", p]);
    let many = copy_as(&f, "many.qcow2");
    patch(&many, 60, &65537u32.to_be_bytes());
    // -r all cuts the count to 65536; the leak repair then frees (and discards: both files
    // then read it as zeros) the table's own cluster, which its count past the end of the
    // file left uncounted.
    agree_case(&many, &f, "many", After::Same);
}

#[test]
fn snapshots_with_a_data_file() {
    let dir = scratch("check-snap-data-file");
    let base = dir.join("df.qcow2");
    let raw = dir.join("df.raw");
    let opt = format!("data_file={}", raw.to_str().unwrap());
    create(&base, &opt, "4M", &[]);
    qio("qcow2", &base, &["write -P 0x31 0 64k"]);
    // One snapshot (an entry past the end of the file, so all zeros) in an image with an
    // external data file: a corruption QEMU reports and no repair removes.
    let f = copy_as(&base, "df-snap.qcow2");
    patch(&f, 60, &1u32.to_be_bytes());
    patch(&f, 64, &0x10_0000u64.to_be_bytes());
    agree_case(&f, &base, "df-snap", After::Same);
}

/// A table rewrite that needs a new refcount block: 512-byte clusters with 64-bit refcounts
/// (a block describes 64 clusters), the file filled up to the end of its last block's range,
/// and an incomplete version 3 entry that `-r all` completes in a new table. QEMU's allocation
/// adds a refcount block at the first free cluster past the table's run (`alloc_refcount_block`)
/// and, searching again after `-EAGAIN`, keeps the table at that run; the check must lay the
/// file out the same way (the image end offset of the repaired image is compared).
#[test]
fn table_rewrite_adds_a_refcount_block() {
    let dir = scratch("check-snap-new-block");
    let base = dir.join("base.qcow2");
    create(&base, "cluster_size=512,refcount_bits=64", "4M", &[]);
    qio("qcow2", &base, &["write -P 0x11 0 512"]);
    qimg(&["snapshot", "-c", "s1", base.to_str().unwrap()]);
    // Fill one guest cluster at a time until the file ends where a block's range ends.
    let range = 64 * 512;
    let mut guest = 512u64;
    while !std::fs::metadata(&base).unwrap().len().is_multiple_of(range) {
        qio("qcow2", &base, &[&format!("write -P 0x22 {guest} 512")]);
        guest += 512;
        assert!(guest < 4 << 20, "the file never ended on a block's range");
    }
    let (_, entries) = table(&base);
    let f = copy_as(&base, "incomplete.qcow2");
    let mut e = entries.clone();
    e[0] = with_extra(&e[0], 8, 0);
    write_table(&f, &e);
    agree_case(&f, &base, "new-block", After::Same);
}
