//! The `blkdebug` filter against QEMU's: the same `--image-opts` (`driver=qcow2,file.driver=
//! blkdebug,file.image.driver=file,file.image.filename=X` with inline rules) and the same
//! commands given to `qemu-io` and to `qemu-runner img io` on copies of one image. Each rule
//! kind (an event's error, `once`, `sector`, `errno`, `state`/`set-state`, `iotype`,
//! `immediately`) must end the same way in both — exit status, what stdout says (timings
//! masked) — and leave images `qemu-img check` finds consistent and equal to each other. A
//! breakpoint (`break`/`aio_write`/`wait_break`/`resume`) stops an allocating write at
//! `cluster_alloc` while a second write to the same cluster is issued: the race ends as in
//! qemu-io. The limits options are checked as QEMU checks them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_tests::*;

fn qemu_io() -> String {
    let img = qemu_img();
    match img.rfind("qemu-img") {
        Some(i) => format!("{}qemu-io{}", &img[..i], &img[i + "qemu-img".len()..]),
        None => "qemu-io".to_string(),
    }
}

/// Stdout with qemu-io's statistics lines' numbers masked.
fn mask(out: &str) -> String {
    out.lines()
        .map(|l| match l.find(" ops; ") {
            Some(i) => format!("{} ops; X", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

struct Run {
    status: i32,
    stdout: String,
}

fn run_qemu(opts: &str, cmds: &[&str]) -> Run {
    run_qemu_with(&[], opts, cmds)
}

fn run_qemu_with(args: &[&str], opts: &str, cmds: &[&str]) -> Run {
    let mut c = Command::new(qemu_io());
    c.args(args);
    c.args(["--image-opts", opts]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.output().unwrap();
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: mask(&String::from_utf8_lossy(&out.stdout)),
    }
}

fn run_strata(opts: &str, cmds: &[&str]) -> Run {
    run_strata_with(&[], opts, cmds)
}

fn run_strata_with(args: &[&str], opts: &str, cmds: &[&str]) -> Run {
    let mut argv: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    argv.extend(["--image-opts".to_string(), opts.to_string()]);
    for cmd in cmds {
        argv.extend(["-c".to_string(), cmd.to_string()]);
    }
    let out = qemu_runner::img::io::run(&argv);
    Run {
        status: out.status,
        stdout: mask(&out.stdout),
    }
}

/// `qemu-img check` exit status (0 clean, 3 leaks only).
fn check(path: &Path) -> i32 {
    let out = Command::new(qemu_img())
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    out.status.code().unwrap_or(-1)
}

/// Guest contents as raw bytes.
fn contents(dir: &Path, path: &Path) -> Vec<u8> {
    let raw = dir.join("contents.raw");
    let st = Command::new(qemu_img())
        .args([
            "convert",
            "-O",
            "raw",
            path.to_str().unwrap(),
            raw.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(raw).unwrap()
}

/// A fresh 4 MiB qcow2 image with 64 KiB clusters and some data in its first cluster.
fn base(dir: &Path) -> PathBuf {
    let p = dir.join("base.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", p.to_str().unwrap(), "4M"]);
    let st = Command::new(qemu_io())
        .args(["-c", "write -P 0x11 0 4k", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(st.status.success());
    p
}

/// Runs `cmds` with `rules` (options of the blkdebug node, without the `file.` prefix) in both
/// tools on copies of `base`; compares exit status, stdout, consistency and contents. Returns
/// qemu-io's stdout.
fn same(dir: &Path, base: &Path, rules: &str, cmds: &[&str]) -> String {
    same_with(dir, base, &[], rules, cmds)
}

/// [`same`] with qemu-io options `args` (`-t writeback`) given to both tools.
fn same_with(dir: &Path, base: &Path, args: &[&str], rules: &str, cmds: &[&str]) -> String {
    same_in(dir, base, args, rules, cmds, Order::Exact)
}

/// How [`same_in`] compares the two tools' output.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    /// Line for line.
    Exact,
    /// The same lines in any order: requests that do not wait for each other complete in an
    /// order neither tool promises.
    AnyOrder,
}

fn same_in(dir: &Path, base: &Path, args: &[&str], rules: &str, cmds: &[&str], order: Order) -> String {
    let (q, s) = (dir.join("q.qcow2"), dir.join("s.qcow2"));
    std::fs::copy(base, &q).unwrap();
    std::fs::copy(base, &s).unwrap();
    let opts = |p: &Path| {
        let sep = if rules.is_empty() { "" } else { "," };
        format!("driver=qcow2,file.driver=blkdebug{sep}{},file.image.driver=file,file.image.filename={}", rules.split(',').filter(|r| !r.is_empty()).map(|r| format!("file.{r}")).collect::<Vec<_>>().join(","), p.display())
    };
    let qemu = run_qemu_with(args, &opts(&q), cmds);
    let strata = run_strata_with(args, &opts(&s), cmds);
    let what = format!("args {args:?}, rules {rules:?}, commands {cmds:?}");
    let sorted = |t: &str| {
        let mut lines: Vec<&str> = t.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    match order {
        Order::Exact => assert_eq!(strata.stdout, qemu.stdout, "{what}: stdout"),
        Order::AnyOrder => assert_eq!(sorted(&strata.stdout), sorted(&qemu.stdout), "{what}: stdout, any order"),
    }
    assert_eq!(strata.status, qemu.status, "{what}: exit status");
    let (cq, cs) = (check(&q), check(&s));
    assert!(
        cq == 0 || cq == 3,
        "{what}: qemu-io left an inconsistent image ({cq})"
    );
    assert!(
        cs == 0 || cs == 3,
        "{what}: strata left an inconsistent image ({cs})"
    );
    assert_eq!(contents(dir, &s), contents(dir, &q), "{what}: contents");
    qemu.stdout
}

#[test]
fn rules_fail_the_requests_they_name() {
    ensure_qemu();
    let dir = scratch("blkdebug-rules");
    let base = base(&dir);
    // An event's rule fails the next request that reaches the node, and the ones after (no
    // `once`); a write that allocates meets cluster_alloc and write_aio.
    for event in ["cluster_alloc", "write_aio"] {
        let out = same(
            &dir,
            &base,
            &format!("inject-error.0.event={event}"),
            &["write -P 0x22 64k 64k", "read -P 0x11 0 4k"],
        );
        assert!(
            out.contains("write failed: Input/output error"),
            "{event}: {out}"
        );
    }
    // `once`: only the first request fails.
    let out = same(
        &dir,
        &base,
        "inject-error.0.event=cluster_alloc,inject-error.0.once=on",
        &[
            "write -P 0x22 64k 64k",
            "write -P 0x33 128k 64k",
            "read -P 0x33 128k 64k",
        ],
    );
    assert!(
        out.contains("write failed") && out.contains("wrote 65536/65536 bytes at offset 131072"),
        "{out}"
    );
    // `errno`: the error carries it.
    let out = same(
        &dir,
        &base,
        "inject-error.0.event=cluster_alloc,inject-error.0.errno=28,inject-error.0.once=on",
        &["write -P 0x22 64k 64k"],
    );
    assert!(
        out.contains("write failed: No space left on device"),
        "{out}"
    );
    // `immediately=on`: the same failure, without a turn of the executor first.
    same(
        &dir,
        &base,
        "inject-error.0.event=cluster_alloc,inject-error.0.immediately=on,inject-error.0.once=on",
        &["write -P 0x22 64k 64k", "read -P 0x11 0 4k"],
    );
    // `sector`: only a request covering that sector fails (the data write at 64 KiB of the
    // file does not cover sector 0; reads of the first cluster's host offset do).
    same(
        &dir,
        &base,
        "inject-error.0.event=write_aio,inject-error.0.sector=0",
        &["write -P 0x22 64k 64k", "read -P 0x22 64k 64k"],
    );
    // `iotype=read`: writes pass, the next read of the node fails.
    let out = same(
        &dir,
        &base,
        "inject-error.0.event=write_aio,inject-error.0.iotype=read",
        &["write -P 0x22 64k 64k", "read -P 0x22 64k 64k"],
    );
    assert!(out.contains("read failed: Input/output error"), "{out}");
    // `state`: the rule is armed only in state 2, which a set-state rule on the first write's
    // cluster_alloc enters; so the second allocating write fails, not the first.
    let out = same(
        &dir,
        &base,
        "inject-error.0.event=cluster_alloc,inject-error.0.state=2,inject-error.0.once=on,set-state.0.event=write_aio,set-state.0.state=1,set-state.0.new_state=2",
        &["write -P 0x22 64k 64k", "write -P 0x33 128k 64k", "read -P 0x22 64k 64k"],
    );
    assert!(
        out.contains("wrote 65536/65536 bytes at offset 65536") && out.contains("write failed"),
        "{out}"
    );
}

#[test]
fn limits_options_are_checked_as_qemu_checks_them() {
    ensure_qemu();
    let dir = scratch("blkdebug-limits");
    let base = base(&dir);
    for rules in [
        "align=4096,max-transfer=65536",
        "align=512,opt-discard=4096,max-discard=65536",
        "opt-write-zero=4096,max-write-zero=8192",
    ] {
        same(
            &dir,
            &base,
            rules,
            &[
                "write -P 0x22 1000 70000",
                "read -P 0x22 1000 70000",
                "write -z 4096 8192",
                "discard 0 64k",
            ],
        );
    }
    for bad in [
        "align=3000",
        "align=4096,max-transfer=6000",
        "max-discard=1000,opt-discard=512,align=1024",
    ] {
        let q = run_qemu(&format!("driver=qcow2,file.driver=blkdebug,file.{},file.image.driver=file,file.image.filename={}", bad.replace(',', ",file."), base.display()), &["read 0 512"]);
        let s = run_strata(&format!("driver=qcow2,file.driver=blkdebug,file.{},file.image.driver=file,file.image.filename={}", bad.replace(',', ",file."), base.display()), &["read 0 512"]);
        assert_eq!((s.status, q.status), (1, 1), "{bad}: both refuse");
    }
}

#[test]
fn a_breakpoint_races_two_allocating_writes() {
    ensure_qemu();
    let dir = scratch("blkdebug-race");
    let base = base(&dir);
    // The first write stops at cluster_alloc; the second, to the same unallocated cluster,
    // is issued meanwhile; then the first goes on. Both complete, the second's data wins
    // where they overlap, and the cluster is allocated once.
    let out = same(
        &dir,
        &base,
        "",
        &[
            "break cluster_alloc A",
            "aio_write -P 0x01 64k 64k",
            "wait_break A",
            "aio_write -P 0x02 96k 4k",
            "resume A",
            "aio_flush",
            "read -P 0x01 64k 32k",
            "read -P 0x02 96k 4k",
            "read -P 0x01 100k 28k",
        ],
    );
    assert!(
        out.starts_with("blkdebug: Suspended request 'A'\nblkdebug: Resuming request 'A'"),
        "{out}"
    );
    // A read started while a write is suspended at its L2 update completes too. In qemu-io it
    // reports after the write (it waits for the image-wide lock the write holds); Strata has no
    // such lock, so the read of another cluster may complete first: the order is not compared.
    let out = same_in(
        &dir,
        &base,
        &[],
        "",
        &[
            "break l2_update A",
            "aio_write -P 0x01 64k 64k",
            "wait_break A",
            "aio_read -P 0x11 0 4k",
            "resume A",
            "aio_flush",
        ],
        Order::AnyOrder,
    );
    assert!(out.starts_with("blkdebug: Suspended request 'A'\nblkdebug: Resuming request 'A'"), "{out}");
    // remove_break resumes what its tag suspended (and says ENOENT: the rule fired already).
    same(
        &dir,
        &base,
        "",
        &[
            "break cluster_alloc A",
            "aio_write -P 0x01 64k 64k",
            "wait_break A",
            "remove_break A",
            "aio_flush",
            "read -P 0x01 64k 64k",
        ],
    );
    // Errors of the breakpoint commands as qemu-io's.
    same(
        &dir,
        &base,
        "",
        &[
            "resume B",
            "remove_break B",
            "break no_such_event C",
            "break l2_update D",
            "remove_break D",
            "write -P 0x05 64k 4k",
        ],
    );
}

/// The device writes (offset, length) of one allocating 64 KiB write at 1000 through
/// `driver=qcow2,file.driver=blkdebug,{limits},file.image=rec` on a copy of `base`, seen by a
/// recording leaf.
fn device_writes(dir: &Path, base: &Path, limits: &str) -> Vec<(u64, u64)> {
    use qemu_runner::img::block::dev::file::{HostFile, HostFileOptions};
    use qemu_runner::img::block::dev::record::{Event as Rec, RecordSink, Recording};
    use qemu_runner::img::block::dev::BlockDevice;
    use qemu_runner::img::block::io::cache::{CacheSlot, Inflater};
    use qemu_runner::img::block::{Backend, BackendOptions, Graph};
    use qemu_runner::img::image::block_on;
    use std::cell::RefCell;

    struct Sink(RefCell<Vec<(u64, u64)>>);
    impl RecordSink for Sink {
        fn event(&self, e: Rec<'_>) {
            if let Rec::Write { offset, data, .. } = e {
                self.0.borrow_mut().push((offset, data.len()));
            }
        }
    }
    // A file of its own per run: a closed host file's lock may linger a moment.
    let work = dir.join(format!("rec-{}.qcow2", limits.len()));
    std::fs::copy(base, &work).unwrap();
    let file = HostFile::open(&work, &HostFileOptions::default()).unwrap();
    let sink = Sink(RefCell::new(Vec::new()));
    let rec: Recording<'_> = Recording::new(&file, &sink);
    let slots: Vec<CacheSlot> = (0..64).map(|_| CacheSlot::new()).collect();
    let inflaters = [Inflater::new()];
    let mut bounce = vec![0u8; 8 * 64 * 1024 + 4096];
    let mut graph: Graph<'_, 16, 64> = Graph::new(&mut bounce, 64 * 1024);
    graph.set_metadata_cache(&slots);
    graph.set_decompressors(&inflaters);
    let mut resolve = |name: &str| -> Option<&dyn BlockDevice> {
        (name == "rec").then_some(&rec as &dyn BlockDevice)
    };
    let sep = if limits.is_empty() { "" } else { "," };
    let opts = format!("driver=qcow2,file.driver=blkdebug{sep}{limits},file.image=rec");
    let root = block_on(graph.open(&opts, &mut resolve)).unwrap();
    let backend = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let data = vec![0x5au8; 64 * 1024];
    block_on(backend.write(1000, &data)).unwrap();
    block_on(backend.flush()).unwrap();
    block_on(backend.close()).unwrap();
    let writes = sink.0.borrow().clone();
    writes
}

#[test]
fn limits_options_change_how_requests_are_cut() {
    ensure_qemu();
    let dir = scratch("blkdebug-split");
    let base = base(&dir);
    let plain = device_writes(&dir, &base, "");
    assert!(
        plain.iter().any(|&(_, len)| len > 60 * 1024),
        "without limits the data goes in one request per cluster: {plain:?}"
    );
    let cut = device_writes(&dir, &base, "file.max-transfer=4096");
    assert!(
        cut.iter().all(|&(_, len)| len <= 4096),
        "max-transfer=4096: {cut:?}"
    );
    assert!(
        cut.len() >= 16,
        "max-transfer=4096 cuts the 64 KiB of data in 16 or more: {cut:?}"
    );
    let aligned = device_writes(&dir, &base, "file.align=4096");
    assert!(
        aligned
            .iter()
            .all(|&(off, len)| off % 4096 == 0 && len % 4096 == 0),
        "align=4096: {aligned:?}"
    );
    assert!(
        plain
            .iter()
            .any(|&(off, len)| off % 4096 != 0 || len % 4096 != 0),
        "without align the data goes at the guest offset's alignment: {plain:?}"
    );
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("rec-") {
            assert_eq!(check(&p), 0, "{}", p.display());
        }
    }
}

#[test]
fn cache_write_back_events_fail_the_write_back() {
    ensure_qemu();
    let dir = scratch("blkdebug-writeback");
    let base = base(&dir);
    let cmds = [
        "write -P 0x22 64k 64k",
        "read -P 0x11 0 4k",
        "write -P 0x33 0 4k",
        "flush",
    ];
    // l2_update and refblock_update_part are raised when a dirty L2 table or refcount block is
    // written back (QEMU's qcow2_cache_entry_flush), and the rule fails that write. qemu-io's
    // default cache mode is writethrough: the allocating write's own flush writes them back,
    // so the write fails (and every later request: the rule stays active). With
    // `-t writeback` the requests pass and the write-back at close fails (exit status 1).
    // refblock_update: QEMU never raises it; the rule never fires.
    for args in [&[][..], &["-t", "writeback"][..]] {
        for event in ["l2_update", "refblock_update_part", "refblock_update"] {
            let out = same_with(
                &dir,
                &base,
                args,
                &format!("inject-error.0.event={event}"),
                &cmds,
            );
            let write_fails = args.is_empty() && event != "refblock_update";
            assert_eq!(
                out.contains("write failed: Input/output error"),
                write_fails,
                "{args:?} {event}: {out}"
            );
        }
    }
    // `once`: the write-back fails once; the allocating write fails, the next flush writes the
    // tables back.
    let out = same(
        &dir,
        &base,
        "inject-error.0.event=l2_update,inject-error.0.once=on",
        &cmds,
    );
    assert!(
        out.contains("write failed") && out.contains("wrote 4096/4096"),
        "{out}"
    );
    // A breakpoint at l2_update stops the write-back, not the table change.
    let out = same(
        &dir,
        &base,
        "",
        &[
            "break l2_update A",
            "aio_write -P 0x01 64k 64k",
            "wait_break A",
            "resume A",
            "aio_flush",
            "read -P 0x01 64k 64k",
        ],
    );
    assert!(out.starts_with("blkdebug: Suspended request 'A'"), "{out}");
}

/// The device write-zeroes and discards (kind, offset, length) of `write -z 0 1M` and
/// `discard 1M 1M` through `driver=raw,file.driver=blkdebug,{limits},file.image=rec`, seen by a
/// recording leaf.
fn device_range_ops(dir: &Path, limits: &str) -> Vec<(&'static str, u64, u64)> {
    use qemu_runner::img::block::dev::file::{HostFile, HostFileOptions};
    use qemu_runner::img::block::dev::record::{Event as Rec, RecordSink, Recording};
    use qemu_runner::img::block::dev::BlockDevice;
    use qemu_runner::img::block::io::cache::CacheSlot;
    use qemu_runner::img::block::{Backend, BackendOptions, Graph};
    use qemu_runner::img::image::block_on;
    use std::cell::RefCell;

    struct Sink(RefCell<Vec<(&'static str, u64, u64)>>);
    impl RecordSink for Sink {
        fn event(&self, e: Rec<'_>) {
            match e {
                Rec::WriteZeroes { offset, len, .. } => {
                    self.0.borrow_mut().push(("zeroes", offset, len))
                }
                Rec::Discard { offset, len, .. } => {
                    self.0.borrow_mut().push(("discard", offset, len))
                }
                _ => {}
            }
        }
    }
    let work = dir.join(format!("range-{}.raw", limits.len()));
    std::fs::write(&work, vec![0x77u8; 4 << 20]).unwrap();
    let file = HostFile::open(&work, &HostFileOptions::default()).unwrap();
    let sink = Sink(RefCell::new(Vec::new()));
    let rec: Recording<'_> = Recording::new(&file, &sink);
    let slots: Vec<CacheSlot> = (0..16).map(|_| CacheSlot::new()).collect();
    let mut bounce = vec![0u8; 8 * 64 * 1024 + 4096];
    let mut graph: Graph<'_, 16, 64> = Graph::new(&mut bounce, 64 * 1024);
    graph.set_metadata_cache(&slots);
    let mut resolve = |name: &str| -> Option<&dyn BlockDevice> {
        (name == "rec").then_some(&rec as &dyn BlockDevice)
    };
    let sep = if limits.is_empty() { "" } else { "," };
    let opts = format!("driver=raw,file.driver=blkdebug{sep}{limits},file.image=rec");
    let root = block_on(graph.open(&opts, &mut resolve)).unwrap();
    let backend = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    block_on(backend.write_zeroes(0, 1 << 20, false)).unwrap();
    block_on(backend.discard(1 << 20, 1 << 20)).unwrap();
    block_on(backend.close()).unwrap();
    let ops = sink.0.borrow().clone();
    ops
}

#[test]
fn max_write_zero_and_max_discard_cut_requests() {
    let dir = scratch("blkdebug-range-limits");
    let total = |ops: &[(&str, u64, u64)], kind: &str| -> (usize, u64, u64) {
        let mine: Vec<_> = ops.iter().filter(|o| o.0 == kind).collect();
        (
            mine.len(),
            mine.iter().map(|o| o.2).sum(),
            mine.iter().map(|o| o.2).max().unwrap_or(0),
        )
    };
    let plain = device_range_ops(&dir, "");
    let (zn, zsum, _) = total(&plain, "zeroes");
    let (dn, dsum, _) = total(&plain, "discard");
    assert_eq!(
        (zn, zsum),
        (1, 1 << 20),
        "one write-zeroes without limits: {plain:?}"
    );
    assert_eq!(
        (dn, dsum),
        (1, 1 << 20),
        "one discard without limits: {plain:?}"
    );
    // As QEMU's bdrv_co_do_pwrite_zeroes / bdrv_co_pdiscard: pieces of at most the limit, the
    // whole range covered, in order.
    let cut = device_range_ops(
        &dir,
        "file.opt-write-zero=4096,file.max-write-zero=65536,file.opt-discard=4096,file.max-discard=131072",
    );
    assert_eq!(total(&cut, "zeroes"), (16, 1 << 20, 65536), "{cut:?}");
    assert_eq!(total(&cut, "discard"), (8, 1 << 20, 131072), "{cut:?}");
    for kind in ["zeroes", "discard"] {
        let mut at = if kind == "zeroes" { 0 } else { 1 << 20 };
        for o in cut.iter().filter(|o| o.0 == kind) {
            assert_eq!(o.1, at, "{kind} pieces follow each other: {cut:?}");
            at += o.2;
        }
    }
}

#[test]
fn config_files_give_the_same_rules_as_qemus() {
    ensure_qemu();
    let dir = scratch("blkdebug-config");
    let base = base(&dir);
    let cfg = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let once = cfg(
        "once.cfg",
        "# fail the first allocation with ENOSPC\n[inject-error]\nevent = \"cluster_alloc\"\nerrno = \"28\"\nonce = \"on\"\n",
    );
    let out = same(
        &dir,
        &base,
        &format!("config={once}"),
        &[
            "write -P 0x22 64k 64k",
            "write -P 0x33 128k 64k",
            "read -P 0x33 128k 64k",
        ],
    );
    assert!(
        out.contains("write failed: No space left on device")
            && out.contains("wrote 65536/65536 bytes at offset 131072"),
        "{out}"
    );
    // set-state in the file arms an inject-error rule of the file on the second allocation.
    let states = cfg(
        "states.cfg",
        "[set-state]\nevent = \"cluster_alloc\"\nstate = \"1\"\nnew_state = \"2\"\n\n[inject-error \"second\"]\nevent = \"cluster_alloc\"\nstate = \"2\"\n",
    );
    let out = same(
        &dir,
        &base,
        &format!("config={states}"),
        &[
            "write -P 0x22 64k 64k",
            "write -P 0x33 128k 64k",
            "read -P 0x22 64k 64k",
        ],
    );
    assert!(
        out.contains("wrote 65536/65536 bytes at offset 65536") && out.contains("write failed"),
        "{out}"
    );
    // File rules and inline rules together: the file's come first, the inline ones after.
    same(
        &dir,
        &base,
        &format!("config={once},inject-error.0.event=write_aio,inject-error.0.errno=5,inject-error.0.state=3,set-state.0.event=write_aio,set-state.0.state=1,set-state.0.new_state=3"),
        &["write -P 0x22 64k 64k", "write -P 0x33 128k 64k", "write -P 0x44 192k 64k"],
    );
    // A file QEMU refuses is refused: both fail to open (exit status 1).
    for (name, text) in [
        ("nogroup.cfg", "event = \"l2_update\"\n"),
        ("bogus.cfg", "[bogus]\nevent = \"l2_update\"\n"),
        ("unquoted.cfg", "[inject-error]\nevent = l2_update\n"),
        ("badevent.cfg", "[inject-error]\nevent = \"nonesuch\"\n"),
    ] {
        let p = cfg(name, text);
        let opts = format!("driver=qcow2,file.driver=blkdebug,file.config={p},file.image.driver=file,file.image.filename={}", base.display());
        let q = run_qemu(&opts, &["read 0 512"]);
        let s = run_strata(&opts, &["read 0 512"]);
        assert_eq!((s.status, q.status), (1, 1), "{name}: both refuse");
    }
}

#[test]
fn a_rule_fails_a_guest_request_with_its_errno() {
    ensure_qemu();
    let dir = scratch("blkdebug-guest");
    let img = base(&dir);
    // The guest's io workload opens the same options: the allocating write fails with the
    // rule's errno (ENOSPC), the read of the first cluster still passes, and the image stays
    // consistent.
    let r = boot(
        Machine::Microvm,
        vec![drive(&img, "disk", false)],
        "io driver=qcow2,file.driver=blkdebug,file.inject-error.0.event=cluster_alloc,file.inject-error.0.errno=28,file.inject-error.0.once=on,file.image=disk -c write,-P,0x22,64k,64k -c read,-P,0x11,0,4k",
    );
    assert_eq!(r.exit_code, 1, "a command failed: console:\n{}", r.console);
    let io = records(&r, "io");
    assert_eq!(io.len(), 2, "console:\n{}", r.console);
    assert_eq!(io[0]["ok"], false);
    assert!(
        io[0]["output"]
            .as_str()
            .unwrap()
            .contains("write failed: No space left on device"),
        "{:?}",
        io[0]
    );
    assert_eq!(io[1]["ok"], true, "{:?}", io[1]);
    let c = check(&img);
    assert!(c == 0 || c == 3, "qemu-img check {c}");
}

/// The discards that reach the file below `driver=qcow2,file.driver=blkdebug,{rules}` when the
/// guest discards the image's one allocated 64 KiB cluster (at host offset `host`).
fn format_discards(dir: &Path, rules: impl Fn(u64) -> String) -> (u64, Vec<(u64, u64)>) {
    use qemu_runner::img::block::dev::file::{HostFile, HostFileOptions};
    use qemu_runner::img::block::dev::record::{Event as Rec, RecordSink, Recording};
    use qemu_runner::img::block::dev::BlockDevice;
    use qemu_runner::img::block::io::cache::CacheSlot;
    use qemu_runner::img::block::{Backend, BackendOptions, Graph};
    use qemu_runner::img::image::block_on;
    use std::cell::RefCell;

    struct Sink(RefCell<Vec<(u64, u64)>>);
    impl RecordSink for Sink {
        fn event(&self, e: Rec<'_>) {
            if let Rec::Discard { offset, len, .. } = e {
                self.0.borrow_mut().push((offset, len));
            }
        }
    }
    let work = dir.join("discard.qcow2");
    let _ = std::fs::remove_file(&work);
    assert!(Command::new(qemu_img()).args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=65536"]).arg(&work).arg("1M").status().unwrap().success());
    assert!(Command::new(qemu_io()).args(["-f", "qcow2", "-c", "write -q -P 1 0 64k"]).arg(&work).status().unwrap().success());
    let map = Command::new(qemu_img()).args(["map", "--output=json"]).arg(&work).output().unwrap();
    let map = String::from_utf8_lossy(&map.stdout).into_owned();
    let host: u64 = map.split("\"offset\": ").nth(1).and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()).unwrap().parse().unwrap();
    let file = HostFile::open(&work, &HostFileOptions::default()).unwrap();
    let sink = Sink(RefCell::new(Vec::new()));
    let rec: Recording<'_> = Recording::new(&file, &sink);
    let slots: Vec<CacheSlot> = (0..16).map(|_| CacheSlot::new()).collect();
    let mut bounce = vec![0u8; 8 * 64 * 1024 + 4096];
    let mut graph: Graph<'_, 16, 64> = Graph::new(&mut bounce, 64 * 1024);
    graph.set_metadata_cache(&slots);
    let mut resolve = |name: &str| -> Option<&dyn BlockDevice> { (name == "rec").then_some(&rec as &dyn BlockDevice) };
    let opts = format!("driver=qcow2,file.driver=blkdebug,file.image=rec,{}", rules(host));
    let root = block_on(graph.open(&opts, &mut resolve)).unwrap();
    let backend = Backend::new(&graph, root, BackendOptions::default()).unwrap();
    let _ = block_on(backend.discard(0, 65536));
    let _ = block_on(backend.close());
    let ops = sink.0.borrow().clone();
    (host, ops)
}

#[test]
fn max_discard_cuts_a_formats_discard_at_the_blkdebug_node() {
    let dir = scratch("blkdebug-format-discard");
    // The cluster's discard is cut at the blkdebug node into its max-discard pieces.
    let (host, ops) = format_discards(&dir, |_| "file.max-discard=16384".into());
    assert_eq!(ops, (0..4).map(|i| (host + i * 16384, 16384)).collect::<Vec<_>>());
    // As QEMU's bdrv_co_pdiscard, each piece passes blkdebug's rules on its own: a rule pinned
    // to the third piece's sector fails that piece; the two before it reached the file.
    let (host, ops) = format_discards(&dir, |host| {
        format!(
            "file.max-discard=16384,file.inject-error.0.event=cluster_free,file.inject-error.0.iotype=discard,file.inject-error.0.once=on,file.inject-error.0.sector={}",
            (host + 32768) / 512
        )
    });
    assert_eq!(ops, vec![(host, 16384), (host + 16384, 16384)]);
}
