//! Layout, header bytes and refcount packing of new images, against what `qemu-img create`
//! (7.2) writes; and a whole creation on a RAM disk read back through the parser.

#![allow(clippy::unwrap_used)] // reason: tests

use super::*;
use crate::dev::ram::{RamConfig, RamDisk};
use crate::driver::qcow2::header::{compat, incompat, Header, KNOWN_HEADER_LEN};
use crate::error::Error;
use crate::graph::Graph;
use crate::driver::qcow2::refcount_entry;

fn opts(size: u64, cluster_bits: u32) -> CreateOptions<'static> {
    CreateOptions { cluster_bits, ..CreateOptions::new(size) }
}

#[test]
fn layout_like_qemu_img() {
    // 64 KiB clusters, 1 GiB: L1 of 2 entries at cluster 3; the file ends at its last entry.
    let l = Layout::new(&opts(1 << 30, 16)).unwrap();
    assert_eq!((l.l1_entries, l.l1_offset, l.refcount_table_offset, l.refcount_table_clusters), (2, 0x30000, 0x10000, 1));
    assert_eq!((l.refcount_blocks, l.used_clusters, l.file_size), (1, 4, 0x30010));
    // 4 KiB, 1 GiB: the L1 fills cluster 3 exactly.
    let l = Layout::new(&opts(1 << 30, 12)).unwrap();
    assert_eq!((l.l1_entries, l.l1_offset, l.file_size), (512, 0x3000, 16384));
    // 512 B, 1 GiB: 512 L1 clusters need two more refcount blocks (qemu-img: 517 clusters).
    let l = Layout::new(&opts(1 << 30, 9)).unwrap();
    assert_eq!((l.l1_entries, l.l1_offset, l.refcount_blocks, l.used_clusters), (32768, 0x600, 3, 517));
    assert_eq!((l.file_size, l.refcount_block(0), l.refcount_block(1), l.refcount_block(2)), (264704, Some(0x400), Some(515 * 512), Some(516 * 512)));
    // 512 B with 64-bit refcounts: qemu-img allocates block 1, then the block that counts the
    // new blocks (8), then blocks 2..=7.
    let l = Layout::new(&CreateOptions { refcount_order: 6, ..opts(1 << 30, 9) }).unwrap();
    let mut order: std::vec::Vec<(u64, u64)> = l.blocks().collect();
    assert_eq!(order.len() as u64, l.refcount_blocks);
    order.sort();
    let expected = [(0, 2), (1, 515), (2, 517), (3, 518), (4, 519), (5, 520), (6, 521), (7, 522), (8, 516)];
    assert_eq!(order, expected);
    assert_eq!(l.used_clusters, 523);
    // 2 MiB, 1 GiB.
    let l = Layout::new(&opts(1 << 30, 21)).unwrap();
    assert_eq!((l.l1_entries, l.l1_offset, l.file_size), (1, 3 << 21, (3 << 21) + 8));
    // Size 0: no L1 at all, three clusters.
    let l = Layout::new(&opts(0, 16)).unwrap();
    assert_eq!((l.l1_entries, l.l1_offset, l.file_size, l.used_clusters), (0, 0, 3 << 16, 3));
    // Sizes round up to sectors.
    assert_eq!(Layout::new(&opts(1000, 16)).unwrap().size, 1024);
}

#[test]
fn refcount_table_grows_up_front() {
    // 512 B clusters, 64-bit refcounts, 16 GiB: 64 entries per table cluster are not enough.
    let o = CreateOptions { refcount_order: 6, ..opts(16 << 30, 9) };
    let l = Layout::new(&o).unwrap();
    assert!(l.refcount_table_clusters > 1);
    assert!(l.refcount_blocks <= u64::from(l.refcount_table_clusters) * 64);
    assert!(l.refcount_blocks * 64 >= l.used_clusters);
    assert_eq!(l.l1_offset, (2 + u64::from(l.refcount_table_clusters)) * 512);
}

#[test]
fn limits() {
    let key = |r: Result<Layout>| match r {
        Err(Error::BadOption { key, .. }) => key,
        other => panic!("expected BadOption, got {other:?}"),
    };
    // QEMU's largest: 4 Mi L1 entries.
    assert!(Layout::new(&opts(128 << 30, 9)).is_ok());
    assert_eq!(key(Layout::new(&opts((128 << 30) + 512, 9))), "size");
    assert!(Layout::new(&opts(1 << 61, 21)).is_ok());
    assert_eq!(key(Layout::new(&opts((1 << 61) + 512, 21))), "size");
    assert_eq!(key(Layout::new(&opts(u64::MAX, 16))), "size");
    assert_eq!(key(Layout::new(&opts(1, 8))), "cluster_size");
    assert_eq!(key(Layout::new(&opts(1, 22))), "cluster_size");
    assert_eq!(key(Layout::new(&CreateOptions { extended_l2: true, ..opts(1, 13) })), "extended_l2");
    assert!(Layout::new(&CreateOptions { extended_l2: true, ..opts(1, 14) }).is_ok());
    assert_eq!(key(Layout::new(&CreateOptions { refcount_order: 7, ..opts(1, 16) })), "refcount_bits");
    assert_eq!(key(Layout::new(&CreateOptions { backing_fmt: Some("raw"), ..opts(1, 16) })), "backing_fmt");
}

#[test]
fn header_with_backing_and_features() {
    let o = CreateOptions { backing: Some("base.qcow2"), backing_fmt: Some("qcow2"), extended_l2: true, lazy_refcounts: true, ..opts(100 << 20, 16) };
    let l = Layout::new(&o).unwrap();
    let mut buf = [0u8; CHUNK];
    let n = header_bytes(&l, &o, &mut buf).unwrap();
    // qemu-img: backing format, feature table, end, then the name at 0x210.
    assert_eq!(n, 0x210 + 10);
    assert_eq!(&buf[0x210..n], b"base.qcow2");
    assert_eq!(&buf[0x70..0x80], b"\xe2\x79\x2a\xca\x00\x00\x00\x05qcow2\x00\x00\x00");
    assert_eq!(&buf[0x80..0x88], b"\x68\x03\xf8\x57\x00\x00\x01\x80");
    assert_eq!(&buf[0x178..0x188], b"\x01\x00lazy refcounts");
    let h = Header::parse(buf[..KNOWN_HEADER_LEN].try_into().unwrap(), KNOWN_HEADER_LEN).unwrap();
    assert_eq!((h.backing_file_offset, h.backing_file_size, h.incompatible, h.compatible), (0x210, 10, incompat::EXTENDED_L2, compat::LAZY_REFCOUNTS));
    assert_eq!((h.l1_size, h.l1_table_offset, h.header_length, h.refcount_order), (1, 0x30000, 112, 4));
    // 4 KiB clusters: no feature table, the name right after the end marker.
    let o4 = CreateOptions { cluster_bits: 12, extended_l2: false, ..o };
    let n = header_bytes(&Layout::new(&o4).unwrap(), &o4, &mut buf).unwrap();
    assert_eq!(n, 0x88 + 10);
    // A name that does not fit a 512-byte cluster, one too long, a format too long.
    let long = [b'a'; 1024];
    let name = core::str::from_utf8(&long).unwrap();
    let o5 = CreateOptions { backing: Some(&name[..400]), ..opts(1 << 20, 9) };
    assert!(matches!(header_bytes(&Layout::new(&o5).unwrap(), &o5, &mut buf), Err(Error::BadOption { key: "backing_file", .. })));
    let o6 = CreateOptions { backing: Some(name), ..opts(1 << 20, 16) };
    assert!(matches!(header_bytes(&Layout::new(&o6).unwrap(), &o6, &mut buf), Err(Error::BadOption { key: "backing_file", .. })));
    let o7 = CreateOptions { backing: Some("b"), backing_fmt: Some("sixteen-bytes-xx"), ..opts(1 << 20, 16) };
    assert!(matches!(header_bytes(&Layout::new(&o7).unwrap(), &o7, &mut buf), Err(Error::BadOption { key: "backing_fmt", .. })));
}

#[test]
fn refcount_packing_round_trips() {
    for order in 0..=6 {
        let mut block = [0u8; 64];
        let max = if order == 6 { u64::MAX } else { (1u64 << (1 << order)) - 1 };
        set_refcount(&mut block, order, 3, 1);
        set_refcount(&mut block, order, 4, max);
        set_refcount(&mut block, order, 5, 1);
        set_refcount(&mut block, order, 4, max);
        assert_eq!(refcount_entry(&block, order, 3), Some(1), "order {order}");
        assert_eq!(refcount_entry(&block, order, 4), Some(max), "order {order}");
        assert_eq!(refcount_entry(&block, order, 5), Some(1), "order {order}");
        assert_eq!(refcount_entry(&block, order, 2), Some(0), "order {order}");
        set_refcount(&mut block, order, 1 << 20, 1); // outside: ignored
    }
}

/// Creates an image on a RAM disk full of stale bytes and checks what landed there.
fn create_on_ram(o: &CreateOptions<'_>, disk_bytes: usize) -> (Result<()>, std::vec::Vec<u8>) {
    let mut memory = std::vec![0xa5u8; disk_bytes];
    let result = {
        let disk: RamDisk<'_, 4> = RamDisk::new(&mut memory, 512, RamConfig::default());
        let mut bounce = std::vec![0u8; 4 * 4096];
        let mut graph: Graph<'_, 4, 16> = Graph::new(&mut bounce, 4096);
        let leaf = graph.add_leaf("d", &disk).unwrap();
        futures::executor::block_on(create(&graph.io(), leaf, o))
    };
    (result, memory)
}

#[test]
fn creates_on_a_fixed_device_over_stale_bytes() {
    let o = CreateOptions { refcount_order: 0, ..opts(64 << 20, 9) };
    let l = Layout::new(&o).unwrap();
    let (result, mem) = create_on_ram(&o, 1 << 20);
    result.unwrap();
    let h = Header::parse(mem[..KNOWN_HEADER_LEN].try_into().unwrap(), KNOWN_HEADER_LEN).unwrap();
    assert_eq!((h.size, h.l1_size, h.l1_table_offset, h.refcount_order), (64 << 20, l.l1_entries, l.l1_offset, 0));
    // The header cluster past the header is zero, and so are the L1's clusters in full.
    assert!(mem[KNOWN_HEADER_LEN + 8..512].iter().all(|&b| b == 0));
    let l1 = l.l1_offset as usize;
    let l1_end = (l1 + l.l1_entries as usize * 8).next_multiple_of(512);
    assert!(mem[l1..l1_end].iter().all(|&b| b == 0));
    // Refcounts: 1 for clusters 0..used, 0 after, in every block.
    let per = l.per_block();
    for cluster in 0..l.refcount_blocks * per {
        let block = l.refcount_block(cluster / per).unwrap() as usize;
        let expected = u64::from(cluster < l.used_clusters);
        assert_eq!(refcount_entry(&mem[block..block + 512], 0, cluster % per), Some(expected), "cluster {cluster}");
    }
    // Past the image the stale bytes stay.
    assert_eq!(mem[(l.used_clusters * 512) as usize + 512..][0], 0xa5);
}

#[test]
fn too_small_device_is_no_space() {
    let (result, mem) = create_on_ram(&opts(1 << 30, 16), 64 << 10);
    assert!(matches!(result, Err(Error::NoSpace { .. })), "{result:?}");
    assert!(mem.iter().all(|&b| b == 0xa5), "nothing written");
}

#[test]
fn blocks_cover_every_used_cluster_once() {
    for (size, bits, order) in [(1u64 << 30, 9, 6), (1 << 30, 9, 4), (8 << 30, 9, 6), (64 << 30, 9, 4), (128 << 30, 9, 0), (1 << 40, 12, 6), (1 << 30, 16, 4)] {
        let l = Layout::new(&CreateOptions { refcount_order: order, ..opts(size, bits) }).unwrap();
        let mut seen: std::vec::Vec<(u64, u64)> = l.blocks().collect();
        seen.sort();
        let per = l.per_block();
        assert_eq!(seen.len() as u64, l.refcount_blocks, "{size} {bits} {order}");
        for (i, &(index, cluster)) in seen.iter().enumerate() {
            assert_eq!(index, i as u64);
            assert!(cluster < l.used_clusters && cluster > 0);
        }
        let mut clusters: std::vec::Vec<u64> = seen.iter().map(|&(_, c)| c).collect();
        clusters.sort();
        clusters.dedup();
        assert_eq!(clusters.len(), seen.len());
        assert_eq!((l.used_clusters - 1) / per, l.refcount_blocks - 1);
        assert!(l.refcount_blocks <= u64::from(l.refcount_table_clusters) << (bits - 3));
    }
}
