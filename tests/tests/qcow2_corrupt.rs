//! The "cached" overlap check (`docs/ARCHITECTURE.md`, crash consistency): an image whose refcounts say a
//! table's cluster is free must not get that cluster overwritten. Strata refuses the write,
//! marks the image corrupt (header bit and node) and leaves the table as it was.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use util::*;

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn allocation_onto_a_table_marks_the_image_corrupt() {
    let dir = scratch("qcow2-corrupt");
    let img_path = dir.join("bad.qcow2");
    create(&img_path, "cluster_size=65536", "64M", &[]);
    qio("qcow2", &img_path, &["write -P 0x11 0 64k"]);
    // Zero the refcount of the L1 table's cluster: the allocator will think it is free.
    let mut bytes = std::fs::read(&img_path).unwrap();
    let l1 = be64(&bytes, 40);
    let rt = be64(&bytes, 48) as usize;
    let block = be64(&bytes, rt) as usize;
    let entry = block + (l1 / 65536) as usize * 2;
    assert_eq!(&bytes[entry..entry + 2], &[0, 1], "refcount of the L1 cluster");
    bytes[entry..entry + 2].copy_from_slice(&[0, 0]);
    std::fs::write(&img_path, &bytes).unwrap();
    let l1_before = bytes[l1 as usize..l1 as usize + 65536].to_vec();

    let status = img(&["io", "-c", "write -P 0x22 32M 4k", img_path.to_str().unwrap()]);
    assert_ne!(status, 0, "a write that would land on the L1 table must fail");

    let after = std::fs::read(&img_path).unwrap();
    assert_eq!(&after[l1 as usize..l1 as usize + 65536], &l1_before[..], "the L1 table is untouched");
    let incompatible = be64(&after, 72);
    assert_ne!(incompatible & 2, 0, "the corrupt bit is set");
    // A corrupt image opens read-only only.
    assert_ne!(img(&["io", "-c", "write -P 0x33 0 4k", img_path.to_str().unwrap()]), 0);
    assert_eq!(img(&["io", "-r", "-c", "read -P 0x11 0 64k", img_path.to_str().unwrap()]), 0);
}
