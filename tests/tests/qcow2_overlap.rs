//! QEMU's "cached" overlap check for tables changed in place, against `qemu-io` on a copy of
//! the same crafted image: an L1 entry naming the refcount block as an L2 table (an allocation's
//! refcount change would land on an active L2 table) and a refcount table entry naming the L2
//! table as a refcount block (an L2 update would land on a refcount block). Both tools refuse
//! the write and mark the image corrupt; the metadata is left as it was, byte for byte as
//! qemu-io leaves it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::Path;
use std::process::Command;

use util::*;

const CLUSTER: u64 = 65536;

fn be64_at(b: &[u8], at: u64) -> u64 {
    u64::from_be_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

/// A 2 GiB image (four L1 entries) with 4 KiB written at 0: header, refcount table, refcount
/// block, L1 table, L2 table, data, one cluster each. Returns (L1, refcount table, refcount
/// block, L2 table) offsets.
fn small_image(file: &Path) -> (u64, u64, u64, u64) {
    create(file, "cluster_size=65536", "2G", &[]);
    qio("qcow2", file, &["write -P 0x11 0 4k"]);
    let b = std::fs::read(file).unwrap();
    let (l1, rt) = (be64_at(&b, 40), be64_at(&b, 48));
    let block = be64_at(&b, rt);
    let l2 = be64_at(&b, l1) & 0x00ff_ffff_ffff_fe00;
    (l1, rt, block, l2)
}

/// Writes 4 KiB at 1 MiB with qemu-io and with `img io`, each on its own copy of `file`;
/// both must fail and mark the image corrupt, and the metadata clusters (everything before the
/// data cluster at 5) must be the same in both copies. Returns Strata's copy.
fn both_refuse(file: &Path, name: &str) -> Vec<u8> {
    let theirs = copy_as(file, &format!("{name}.theirs.qcow2"));
    let ours = copy_as(file, &format!("{name}.ours.qcow2"));
    let out = Command::new(qemu_io_bin()).args(["-f", "qcow2", "-c", "write -P 0x22 1M 4k"]).arg(&theirs).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Preventing invalid write on metadata"), "qemu-io: {stderr}");
    assert_ne!(img(&["io", "-c", "write -P 0x22 1M 4k", ours.to_str().unwrap()]), 0, "the write must fail");
    let (t, o) = (std::fs::read(&theirs).unwrap(), std::fs::read(&ours).unwrap());
    let meta = 5 * CLUSTER as usize;
    assert_eq!(&o[..meta], &t[..meta], "metadata as qemu-io leaves it");
    assert_ne!(be64_at(&o, 72) & 2, 0, "the corrupt bit is set");
    // A corrupt image opens read-write no more; it still reads.
    assert_ne!(img(&["io", "-c", "write -P 0x33 0 4k", ours.to_str().unwrap()]), 0);
    assert_eq!(img(&["io", "-r", "-c", "read -P 0x11 0 4k", ours.to_str().unwrap()]), 0);
    o
}

#[test]
fn refcount_block_that_is_an_active_l2_table_is_not_written() {
    let dir = scratch("qcow2-overlap-refblock");
    let file = dir.join("l2-is-refblock.qcow2");
    let (l1, _, block, _) = small_image(&file);
    // L1[1] names the refcount block as the L2 table of guest [512M, 1G).
    patch(&file, l1 + 8, &((1u64 << 63) | block).to_be_bytes());
    let before = std::fs::read(&file).unwrap();
    let after = both_refuse(&file, "refblock");
    let b = block as usize;
    assert_eq!(&after[b..b + CLUSTER as usize], &before[b..b + CLUSTER as usize], "the refcount block is untouched");
}

#[test]
fn l2_table_that_is_a_refcount_block_is_not_written() {
    let dir = scratch("qcow2-overlap-l2");
    let file = dir.join("refblock-is-l2.qcow2");
    let (_, rt, _, l2) = small_image(&file);
    // Refcount table entry 1 (host clusters from 2 GiB on) names the L2 table.
    patch(&file, rt + 8, &l2.to_be_bytes());
    let before = std::fs::read(&file).unwrap();
    let after = both_refuse(&file, "l2");
    let t = l2 as usize;
    assert_eq!(&after[t..t + CLUSTER as usize], &before[t..t + CLUSTER as usize], "the L2 table is untouched");
}
