//! A backing chain deeper than the guest's device slots (microvm: 24) in the guest: `qemu-runner
//! boot` packs the chain's read-only files into one pack disk and maps each name to its window
//! (`--map NAME=S.p@OFFSET+SIZE`); the kernel opens each file as a raw window of the pack. The
//! guest's `sha256` of the 64-deep top must equal the host's of `qemu-img convert -O raw`, and
//! Strata's host `img convert` must give the same bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

#[path = "deep_chain_util/mod.rs"]
mod deep;

use strata_tests::{boot, drive, records, scratch, sha256sum, Machine};
use util::*;

#[test]
fn sixty_four_deep_chain_reads_alike_on_host_and_guest() {
    let dir = scratch("guest-chain64");
    deep::deep_chain(&dir, 64);
    let top = dir.join("c64.qcow2");
    let expected = host_digest(&top);
    // The host tool (the deep graph: more than 31 below the top), on a thread with room for it.
    let ours = dir.join("ours.raw");
    let args: Vec<String> = [
        "convert",
        "-O",
        "raw",
        top.to_str().unwrap(),
        ours.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let status = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || qemu_runner::img::main(&args))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(status, 0);
    assert_eq!(
        sha256sum(&ours),
        expected,
        "host img convert and qemu-img convert disagree"
    );
    // The guest: 65 files, more than microvm's 24 slots.
    let r = boot(
        Machine::Microvm,
        vec![drive(&top, "top", false)],
        "sha256 top",
    );
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    let digest = records(&r, "sha256");
    assert_eq!(digest.len(), 1, "{}", r.console);
    assert_eq!(digest[0]["digest"], expected, "guest and host disagree");
    // The pack disk is gone with the boot.
    let packs = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok);
    let ours_left = packs
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("strata-pack-{}-", std::process::id()))
        })
        .count();
    assert_eq!(ours_left, 0, "pack disks left behind");
}
