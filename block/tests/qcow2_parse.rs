//! Pure parsing units of the qcow2 driver, against the spec (`docs/interop/qcow2.txt`): the
//! header's field checks, L1 entries, table placement, refcount entry widths, and names.

#![allow(clippy::unwrap_used)] // reason: tests

use strata_block::driver::qcow2::header::{Compression, Header, KNOWN_HEADER_LEN};
use strata_block::driver::qcow2::tables::decode_l1;
use strata_block::driver::qcow2::validation::{place, Table};
use strata_block::driver::qcow2::{refcount_entry, subclusters};
use strata_block::graph::check_name;
use strata_block::Error;

/// A v3 header: 64 KiB clusters, 1 GiB, L1 at 3 clusters, refcount table at 1.
fn v3() -> [u8; KNOWN_HEADER_LEN] {
    let mut h = [0u8; KNOWN_HEADER_LEN];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&16u32.to_be_bytes());
    h[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
    h[36..40].copy_from_slice(&2u32.to_be_bytes());
    h[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
    h[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
    h[56..60].copy_from_slice(&1u32.to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&112u32.to_be_bytes());
    h
}

fn what(r: Result<Header, Error>) -> &'static str {
    match r {
        Err(Error::BadImage { what }) | Err(Error::BadName { what }) | Err(Error::Unsupported(what)) => what,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn header_fields() {
    let h = Header::parse(&v3(), KNOWN_HEADER_LEN).unwrap();
    assert_eq!((h.version, h.cluster_size(), h.l2_entries(), h.compression), (3, 65536, 8192, Compression::Zlib));
    assert_eq!(h.l1_entries_for(1 << 30), 2);
    let mut b = v3();
    b[4..8].copy_from_slice(&5u32.to_be_bytes());
    assert!(what(Header::parse(&b, KNOWN_HEADER_LEN)).contains("version"));
    let mut b = v3();
    b[20..24].copy_from_slice(&22u32.to_be_bytes());
    assert!(what(Header::parse(&b, KNOWN_HEADER_LEN)).contains("cluster_bits"));
    let mut b = v3();
    b[72..80].copy_from_slice(&(1u64 << 5).to_be_bytes());
    assert!(what(Header::parse(&b, KNOWN_HEADER_LEN)).contains("incompatible"));
    // header_length 104: byte 104 is not a compression type but the extension area.
    let mut b = v3();
    b[100..104].copy_from_slice(&104u32.to_be_bytes());
    b[104] = 9;
    assert_eq!(Header::parse(&b, KNOWN_HEADER_LEN).unwrap().compression, Compression::Zlib);
    // Truncated.
    assert!(what(Header::parse(&v3(), 90)).contains("truncated"));
    // v2 ignores the v3 fields.
    let mut b = v3();
    b[4..8].copy_from_slice(&2u32.to_be_bytes());
    b[72..80].copy_from_slice(&u64::MAX.to_be_bytes());
    let h = Header::parse(&b, 72).unwrap();
    assert_eq!((h.refcount_order, h.incompatible, h.header_length), (4, 0, 72));
}

#[test]
fn l1_entries_and_placement() {
    assert_eq!(decode_l1(0, 0).unwrap(), None);
    assert_eq!(decode_l1((1 << 63) | 0x50000, 0).unwrap().map(|o| o.0), Some(0x50000));
    assert!(matches!(decode_l1(0x50001, 8), Err(Error::Corrupt { offset: 8, .. })));
    assert!(place(Table::L1, 0x30000, 16, 1 << 25, 65536, 1 << 20).is_ok());
    assert!(place(Table::L1, 0x30008, 16, 1 << 25, 65536, 1 << 20).is_err());
    assert!(place(Table::L1, 0, 16, 1 << 25, 65536, 1 << 20).is_err());
    assert!(place(Table::L1, 0xf0000, 1 << 17, 1 << 25, 65536, 1 << 20).is_err());
    assert!(place(Table::L1, u64::MAX - 65535, 1 << 17, 1 << 25, 65536, u64::MAX).is_err());
}

#[test]
fn refcounts_subclusters_names() {
    let block = [0x80u8, 0x00, 0x01, 0x02];
    assert_eq!(refcount_entry(&block, 0, 7), Some(1));
    assert_eq!(refcount_entry(&block, 4, 1), Some(0x0102));
    assert_eq!(refcount_entry(&block, 6, 0), None);
    assert_eq!(subclusters::kind(1 << 34, 2, true), subclusters::Sub::Zero);
    assert!(subclusters::check_allocated((1 << 34) | (1 << 2), 0).is_err());
    assert!(check_name("nbd://host/x").is_err());
    assert!(check_name("sub/dir/base.qcow2").is_ok());
}
