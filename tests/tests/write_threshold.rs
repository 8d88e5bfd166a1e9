//! The write threshold in the guest: a `write-threshold=` option on a node makes the first
//! write past it emit one `write_threshold` record with QEMU's `BLOCK_WRITE_THRESHOLD` fields
//! (`node-name`, `amount-exceeded`, `write-threshold`), and never again; on a qcow2 image's file
//! node it fires when the image file grows past it. (The rules on a hand-moved workload are in
//! `block/tests/write_threshold.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use strata_tests::*;

const MIB: u64 = 1024 * 1024;

#[test]
fn the_guest_records_the_first_write_past_a_threshold_once() {
    let dir = scratch("write-threshold");
    let raw = dir.join("d0.raw");
    raw_disk(&raw, 4 * MIB);
    let r = boot(
        Machine::Microvm,
        vec![drive(&raw, "d0", false)],
        "io driver=raw,node-name=top,file=d0,write-threshold=1M -c write,0,1M -c write,1020k,8k -c write,2M,4k",
    );
    assert_eq!(r.exit_code, 0, "console:\n{}", r.console);
    let recs = records(&r, "write_threshold");
    assert_eq!(recs.len(), 1, "console:\n{}", r.console);
    assert_eq!(recs[0]["node-name"], "top");
    assert_eq!(recs[0]["amount-exceeded"], 4096);
    assert_eq!(recs[0]["write-threshold"], MIB);

    // On a qcow2 image's file node: the file grows past 512 KiB while 2 MiB of guest data land.
    let q = dir.join("q.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "8M"]);
    let r = boot(
        Machine::Microvm,
        vec![drive(&q, "q", false)],
        "io driver=qcow2,file.driver=file,file.filename=q,file.node-name=qfile,file.write-threshold=512k -c write,0,2M -c write,4M,1M",
    );
    assert_eq!(r.exit_code, 0, "console:\n{}", r.console);
    let recs = records(&r, "write_threshold");
    assert_eq!(recs.len(), 1, "console:\n{}", r.console);
    assert_eq!(recs[0]["node-name"], "qfile");
    assert_eq!(recs[0]["write-threshold"], 512 * 1024);
    assert!(recs[0]["amount-exceeded"].as_u64().unwrap() > 0);
}
