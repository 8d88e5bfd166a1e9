//! qcow2 backing chains and host name resolution: chains up to the documented depth (raw and
//! qcow2 mixed, overlays smaller and larger than their backing file, with and without
//! backing_fmt) read like `qemu-img convert`; too deep chains and loops are errors, not hangs;
//! backing names escaping the opened image's tree or with protocol prefixes are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use qemu_runner::img::image::OpenOptions;
use util::*;

#[test]
fn chains_read_like_qemu() {
    let dir = scratch("qcow2-chain");
    let top = chain(&dir, 16, 21);
    check_convert(&top, &[]);
    check_map(&top);
    // Shorter chains, each top with a different size than its backing.
    for i in [1, 2, 5] {
        check_convert(&dir.join(format!("l{i}.qcow2")), &[]);
    }
    // An overlay larger than its backing, with the backing named relative to a subdirectory.
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let big = sub.join("big.qcow2");
    create(&big, "", &(8 * MIB).to_string(), &["-b", "../l3.qcow2", "-F", "qcow2"]);
    qio("qcow2", &big, &["write -P 0x99 7M 4k"]);
    // Inside the tree of the opened image? No: the backing lies one level up.
    assert_refused(&big, "outside");
    let allowed = OpenOptions { read_only: true, allow_backing_anywhere: true, ..OpenOptions::default() };
    assert_eq!(read_all(&big, allowed), Ok(()));
    check_convert_anywhere(&big);
}

fn check_convert_anywhere(f: &std::path::Path) {
    let ours = f.with_extension("ours");
    let theirs = f.with_extension("theirs");
    assert_eq!(img(&["convert", "--allow-backing-anywhere", "-O", "raw", f.to_str().unwrap(), ours.to_str().unwrap()]), 0);
    qimg(&["convert", "-O", "raw", f.to_str().unwrap(), theirs.to_str().unwrap()]);
    assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap());
}

#[test]
fn too_deep_chains_and_loops_are_errors() {
    let dir = scratch("qcow2-deep");
    let base = dir.join("c0.qcow2");
    create(&base, "", "1M", &[]);
    for i in 1..=21 {
        let f = dir.join(format!("c{i}.qcow2"));
        create(&f, "", "1M", &["-b", &format!("c{}.qcow2", i - 1), "-F", "qcow2"]);
    }
    // 20 images below the top: the documented bound, readable.
    assert_eq!(read_all(&dir.join("c20.qcow2"), OpenOptions { read_only: true, ..OpenOptions::default() }), Ok(()));
    assert_refused(&dir.join("c21.qcow2"), "backing chain longer than MAX_BACKING_CHAIN");
    // a -> b -> a.
    let a = dir.join("a.qcow2");
    let b = dir.join("b.qcow2");
    create(&a, "", "1M", &[]);
    create(&b, "", "1M", &["-b", "a.qcow2", "-F", "qcow2"]);
    qimg(&["rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a.to_str().unwrap()]);
    assert_refused(&b, "loop");
    // Its own backing file.
    let s = dir.join("self.qcow2");
    create(&s, "", "1M", &[]);
    qimg(&["rebase", "-u", "-b", "self.qcow2", "-F", "qcow2", s.to_str().unwrap()]);
    assert_refused(&s, "loop");
}

#[test]
fn hostile_backing_names() {
    let dir = scratch("qcow2-names");
    let inner = dir.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    let outside = dir.join("outside.raw");
    random_raw_disk(&outside, MIB, 3);
    let f = inner.join("top.qcow2");
    for (name, what) in [
        ("../outside.raw", "outside"),
        (outside.to_str().unwrap(), "outside"),
        ("nbd:localhost:10809", "protocol prefix"),
        ("json:{\"driver\":\"raw\"}", "protocol prefix"),
        ("missing.raw", "No such file"),
    ] {
        create(&f, "", "1M", &[]);
        qimg(&["rebase", "-u", "-b", name, "-F", "raw", f.to_str().unwrap()]);
        assert_refused(&f, what);
    }
    // A name longer than 1023 bytes (header patched).
    create(&f, "", "1M", &["-b", "../outside.raw", "-F", "raw"]);
    patch(&f, 16, &1100u32.to_be_bytes());
    assert_refused(&f, "backing file name too long");
    // A data-file name escaping the tree.
    let d = inner.join("df.qcow2");
    create(&d, &format!("data_file={}", dir.join("df.data").to_str().unwrap()), "1M", &[]);
    assert_refused(&d, "outside");
}
