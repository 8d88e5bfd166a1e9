//! qcow2 backing chains and host name resolution: chains (raw and qcow2 mixed, overlays smaller
//! and larger than their backing file, with and without backing_fmt) read like `qemu-img
//! convert`, up to the host tool's capacity (319 images below the top; a 256-deep chain maps like
//! `qemu-img map`); deeper chains and loops are errors, not hangs;
//! backing names escaping the opened image's tree or with protocol prefixes are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

#[path = "deep_chain_util/mod.rs"]
mod deep;

use qemu_runner::img::image::{self, OpenOptions};
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
fn chain_loops_are_errors() {
    let dir = scratch("qcow2-loop");
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
    // A loop deeper than the small host graph (which reopens in the deep one): c0 -> c39 -> ... -> c1 -> c0.
    let n = 40;
    for i in 0..n {
        create(&dir.join(format!("c{i}.qcow2")), "", "1M", &[]);
    }
    for i in 0..n {
        let below = format!("c{}.qcow2", (i + n - 1) % n);
        qimg(&["rebase", "-u", "-b", &below, "-F", "qcow2", dir.join(format!("c{i}.qcow2")).to_str().unwrap()]);
    }
    // (qemu-img 10.0.2 does not see this loop: it opens images until memory runs out.)
    let deep_loop = dir.join("c5.qcow2");
    let text = read_all_deep(&deep_loop);
    assert!(text.as_ref().is_err_and(|e| e.contains("loop")), "{text:?}");
}

/// Runs `f` on a thread with a 64 MiB stack: the host tool's graph for deep chains
/// ([`qemu_runner::img::image::DEEP_NODES`] node slots, about 1.4 MiB) does not fit the 2 MiB
/// of a test thread (the `qemu-runner` binary runs it on its 8 MiB main thread).
fn on_big_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new().stack_size(64 << 20).spawn(f).unwrap().join().unwrap()
}

/// Opens `f` read-only and reads all of it, on a big stack ([`on_big_stack`]); the error text.
fn read_all_deep(f: &std::path::Path) -> Result<(), String> {
    let path = f.to_str().unwrap().to_string();
    on_big_stack(move || {
        let opts = OpenOptions { read_only: true, ..OpenOptions::default() };
        image::with_image(&path, &opts, |img| {
            let mut buf = vec![0u8; 256 * 1024];
            let size = img.backend.size();
            let mut pos = 0;
            while pos < size {
                let n = (size - pos).min(buf.len() as u64) as usize;
                image::block_on(img.backend.read(pos, &mut buf[..n])).map_err(|e| qemu_runner::img::ImgError::failed(format!("read at {pos}: {e}")))?;
                pos += n as u64;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
    })
}

/// `img convert -O raw` of `f` equals `qemu-img convert -O raw`'s output.
fn check_convert_deep(f: &std::path::Path) {
    let (ours, theirs) = (f.with_extension("ours"), f.with_extension("theirs"));
    let args: Vec<String> = ["convert", "-O", "raw", f.to_str().unwrap(), ours.to_str().unwrap()].iter().map(|s| s.to_string()).collect();
    assert_eq!(on_big_stack(move || qemu_runner::img::main(&args)), 0, "img convert {}", f.display());
    qimg(&["convert", "-O", "raw", f.to_str().unwrap(), theirs.to_str().unwrap()]);
    let (x, y) = (std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap());
    assert_eq!(x.len(), y.len());
    assert!(x == y, "{}: first difference at byte {:?}", f.display(), x.iter().zip(&y).position(|(a, b)| a != b));
    let _ = std::fs::remove_file(&ours);
    let _ = std::fs::remove_file(&theirs);
}

/// `img map`'s entries against `qemu-img map --output=json`, field for field (start, length,
/// depth, present, zero, data, offset).
fn check_map_deep(f: &std::path::Path) {
    type Row = (u64, u64, u64, bool, bool, bool, Option<u64>);
    let path = f.to_str().unwrap().to_string();
    let ours = on_big_stack(move || {
        let opts = OpenOptions { read_only: true, ..OpenOptions::default() };
        image::with_image(&path, &opts, qemu_runner::img::map::map).map_err(|e| e.to_string())
    })
    .unwrap();
    let ours: Vec<Row> = ours.iter().map(|e| (e.start, e.length, u64::from(e.depth), e.present, e.zero, e.data, e.offset)).collect();
    let out = qimg(&["map", "--output=json", f.to_str().unwrap()]);
    let theirs: Vec<Row> = serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let b = |k: &str| e[k].as_bool().unwrap();
            (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap(), e["depth"].as_u64().unwrap(), b("present"), b("zero"), b("data"), e["offset"].as_u64())
        })
        .collect();
    assert!(theirs.iter().any(|r| r.2 >= 240 && r.5), "the chain's deep layers show in the map");
    assert_eq!(ours, theirs, "map of {}", f.display());
}

/// The host tool reads chains far deeper than the small graph holds: 256 images below the top
/// read as `qemu-img convert` and map as `qemu-img map`; the capacity ([`DEEP_CHAIN`], 319 below
/// the top) reads; one more is refused with an error naming the capacity (qemu-img reads it).
#[test]
fn deep_chains_read_like_qemu_up_to_the_capacity() {
    use qemu_runner::img::image::DEEP_CHAIN;
    let dir = scratch("qcow2-deep");
    deep::deep_chain(&dir, DEEP_CHAIN + 1);
    let top = dir.join("c256.qcow2");
    check_convert_deep(&top);
    check_map_deep(&top);
    // 20 and 31 below the top: the small graph; 32: the first that needs the deep one.
    for i in [20, 31, 32] {
        check_convert_deep(&dir.join(format!("c{i}.qcow2")));
    }
    assert_eq!(read_all_deep(&dir.join(format!("c{DEEP_CHAIN}.qcow2"))), Ok(()));
    let beyond = dir.join(format!("c{}.qcow2", DEEP_CHAIN + 1));
    assert!(qimg_ok(&["convert", "-O", "raw", beyond.to_str().unwrap(), dir.join("beyond.raw").to_str().unwrap()]));
    let text = read_all_deep(&beyond).expect_err("a chain deeper than the capacity is refused");
    assert!(text.contains("backing-chain capacity") && text.contains(&format!("{DEEP_CHAIN} images below the top")), "{text}");
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
