//! qcow2 conformance, write side: images made by `qemu-img`/`qemu-io`, written through Strata's
//! backend on the host (read-write opens as `qemu-runner img` makes them, many requests in
//! flight), closed cleanly, then judged by QEMU's own tools: `qemu-img check` clean (no
//! corruptions, no leaks), `qemu-img convert -O raw` equal to a byte model of the same
//! operations, `qemu-img map` where allocation matters (data, zero flag, unallocated), and the
//! same write-zeroes/discard commands run by `qemu-io` on a copy. Overlapping requests in flight
//! together must land as if applied in issue order.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_write_util/mod.rs"]
mod wutil;

use std::path::Path;

use qemu_runner::img::block::dev::file::CacheMode;
use qemu_runner::img::image::OpenOptions;
use wutil::*;

/// The cluster sizes every allocation test runs over.
const CLUSTER_SIZES: [u64; 4] = [512, 4 * KIB, 64 * KIB, 2 * MIB];

/// Image size for cluster size `cs`: at least 8 MiB and 8 clusters.
fn size_for(cs: u64) -> u64 {
    (8 * MIB).max(8 * cs)
}

/// Allocating writes for cluster size `cs`: tiny unaligned ones, ones spanning two and three
/// clusters, ones inside one cluster, whole clusters, one across an L2 table boundary, and a
/// second write into a cluster the first one allocated.
fn alloc_ops(cs: u64, size: u64) -> Vec<Op> {
    let mut ops = vec![
        Op::write(1000, 3, 1),
        Op::write(cs + 100, 2 * cs, 2),
        Op::write(3 * cs + cs / 2, cs, 3),
        Op::write(5 * cs, cs, 4),
        Op::write(6 * cs + cs / 4, 512, 5),
        Op::write(6 * cs + cs / 2 + 1, 1, 6),
        Op::write(7 * cs - 7, 14, 7),
        Op::fill(size - 4096, 4096, 0xab),
    ];
    // An L2 table covers cs/8 clusters.
    let l2_span = cs / 8 * cs;
    if l2_span + 4 * cs < size {
        ops.push(Op::write(l2_span - 300, 600, 8));
    }
    if 2 * l2_span + 2 * cs < size - 4096 {
        ops.push(Op::write(2 * l2_span - cs - 5, 2 * cs + 10, 9));
    }
    ops
}

#[test]
fn allocating_writes_without_backing() {
    let dir = scratch("qcow2w-alloc");
    for cs in CLUSTER_SIZES {
        let size = size_for(cs);
        let f = fresh(&dir, &format!("c{cs}.qcow2"), &format!("cluster_size={cs}"), size);
        let mut model = Model::new(size, None, cs, true);
        run_and_verify(&f, &mut model, alloc_ops(cs, size), &format!("cluster size {cs}"));
        qio_out("qcow2", &f, &[format!("read -P 0xab {} 4096", size - 4096), format!("read -P 0 {} 1", 4 * cs + 3 * cs / 4)]);
    }
}

#[test]
fn copy_on_write_from_raw_backing() {
    let dir = scratch("qcow2w-raw-backing");
    for cs in CLUSTER_SIZES {
        let size = size_for(cs);
        let base_name = format!("base{cs}.raw");
        let base = random_raw(&dir.join(&base_name), size, cs);
        let f = overlay(&dir, &format!("c{cs}.qcow2"), &format!("cluster_size={cs}"), size, &base_name, "raw");
        let mut model = Model::new(size, Some(&base), cs, true);
        run_and_verify(&f, &mut model, alloc_ops(cs, size), &format!("cluster size {cs} over raw"));
    }
}

#[test]
fn copy_on_write_from_qcow2_backing() {
    let dir = scratch("qcow2w-qcow2-backing");
    for cs in CLUSTER_SIZES {
        let size = size_for(cs);
        let raw = random_raw(&dir.join(format!("r{cs}.raw")), size, 7 + cs);
        let base_name = format!("base{cs}.qcow2");
        qimg(&["convert", "-O", "qcow2", "-o", "cluster_size=64k", dir.join(format!("r{cs}.raw")).to_str().unwrap(), dir.join(&base_name).to_str().unwrap()]);
        let f = overlay(&dir, &format!("c{cs}.qcow2"), &format!("cluster_size={cs}"), size, &base_name, "qcow2");
        let mut model = Model::new(size, Some(&raw), cs, true);
        run_and_verify(&f, &mut model, alloc_ops(cs, size), &format!("cluster size {cs} over qcow2"));
    }
}

/// A backing file shorter than the overlay, ending inside a cluster: COW reads zeros past its end.
#[test]
fn copy_on_write_past_a_short_backing_file() {
    let dir = scratch("qcow2w-short-backing");
    let cs = 64 * KIB;
    let size = 4 * MIB;
    let base = random_raw(&dir.join("base.raw"), 2 * MIB + 1000, 3);
    let f = overlay(&dir, "top.qcow2", "", size, "base.raw", "raw");
    let mut model = Model::new(size, Some(&base), cs, true);
    let ops = vec![Op::write(2 * MIB + 5, 10, 1), Op::write(2 * MIB - 100, 200, 2), Op::write(2 * MIB + 3 * cs - 1, 2, 3)];
    run_and_verify(&f, &mut model, ops, "short backing");
}

/// Extended L2 over a backing file: a 4 KiB write allocates only the subclusters it covers; the
/// rest of the cluster still reads from the backing file.
#[test]
fn extended_l2_allocates_only_written_subclusters() {
    let dir = scratch("qcow2w-ext-l2");
    for cs in [32 * KIB, 64 * KIB] {
        let size = 4 * MIB;
        let sub = cs / 32;
        let base_name = format!("base{cs}.raw");
        let base = random_raw(&dir.join(&base_name), size, cs + 1);
        let f = overlay(&dir, &format!("x{cs}.qcow2"), &format!("cluster_size={cs},extended_l2=on"), size, &base_name, "raw");
        let mut model = Model::new(size, Some(&base), cs, true);
        let a = 2 * cs + 4 * KIB;
        let b = 5 * cs + 1000; // 3 bytes inside one subcluster
        let ops = vec![
            Op::write(a, 4 * KIB, 1),
            Op::write(b, 3, 2),
            // A later write into an allocated cluster's unallocated subcluster.
            Op::write(2 * cs + 20 * KIB + 7, 100, 3),
        ];
        run_and_verify(&f, &mut model, ops, &format!("extended L2 {cs}"));
        let m = map(&f);
        let depth = |at: u64| map_at(&m, at).depth;
        assert_eq!(depth(a), 0, "{cs}: written subclusters: {m:?}");
        assert_eq!(depth(a + 4 * KIB - 1), 0, "{cs}: {m:?}");
        assert_eq!(depth(a - 1), 1, "{cs}: subcluster before the write still from the backing: {m:?}");
        assert_eq!(depth(a + 4 * KIB), 1, "{cs}: subcluster after the write still from the backing: {m:?}");
        assert_eq!(depth(2 * cs), 1, "{cs}: {m:?}");
        let bs = b / sub * sub;
        assert_eq!(depth(bs), 0, "{cs}: {m:?}");
        assert_eq!(depth(bs + sub - 1), 0, "{cs}: {m:?}");
        assert_eq!(depth(bs - 1), 1, "{cs}: {m:?}");
        assert_eq!(depth(bs + sub), 1, "{cs}: {m:?}");
        let c = (2 * cs + 20 * KIB + 7) / sub * sub;
        assert_eq!((depth(c), depth(c - 1), depth(c + sub)), (0, 1, 1), "{cs}: {m:?}");
    }
}

/// Extended L2 without a backing file: unallocated subclusters read zeros around written ones.
#[test]
fn extended_l2_without_backing() {
    let dir = scratch("qcow2w-ext-l2-nobacking");
    let cs = 64 * KIB;
    let size = 4 * MIB;
    let f = fresh(&dir, "x.qcow2", "cluster_size=64k,extended_l2=on", size);
    let mut model = Model::new(size, None, cs, true);
    let ops = vec![Op::write(cs + 3000, 5000, 1), Op::write(cs + 40 * KIB, 4 * KIB, 2), Op::write(3 * cs - 1, 2, 3)];
    run_and_verify(&f, &mut model, ops, "extended L2 without backing");
}

#[test]
fn overwrites_in_place() {
    let dir = scratch("qcow2w-in-place");
    let cs = 64 * KIB;
    let size = 4 * MIB;
    let base = random_raw(&dir.join("base.raw"), size, 5);
    let f = overlay(&dir, "top.qcow2", "", size, "base.raw", "raw");
    let mut model = Model::new(size, Some(&base), cs, true);
    run_and_verify(&f, &mut model, vec![Op::write(0, MIB, 1), Op::write(2 * MIB + 100, 300 * KIB, 2)], "first writes");
    let len = std::fs::metadata(&f).unwrap().len();
    let ops = vec![Op::write(1000, 3, 3), Op::write(cs - 10, 2 * cs + 20, 4), Op::write(2 * MIB + cs, cs, 5), Op::write(500 * KIB, 4 * KIB, 6)];
    run_and_verify(&f, &mut model, ops, "overwrites");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), len, "overwrites of owned clusters allocate nothing");
}

/// Clusters compressed by `qemu-img convert -c`, overwritten in part (copy-on-write from the
/// compressed data), in whole, zeroed and discarded: the compressed clusters are freed (no
/// leaks once closed).
#[test]
fn compressed_clusters_are_copied_and_freed() {
    let dir = scratch("qcow2w-compressed");
    for cs in [4 * KIB, 64 * KIB] {
        let size = 2 * MIB;
        let raw = random_raw(&dir.join(format!("src{cs}.raw")), size, 11);
        // Compressible: every other 512 bytes zero, so convert -c really compresses.
        let mut data = raw.clone();
        for chunk in data.chunks_mut(1024) {
            chunk[512..].fill(0);
        }
        std::fs::write(dir.join(format!("src{cs}.raw")), &data).unwrap();
        let f = dir.join(format!("c{cs}.qcow2"));
        qimg(&["convert", "-c", "-O", "qcow2", "-o", &format!("cluster_size={cs}"), dir.join(format!("src{cs}.raw")).to_str().unwrap(), f.to_str().unwrap()]);
        let mut model = Model::new(size, Some(&data), cs, true);
        model.has_backing = false; // the data is the image's own
        let ops = vec![
            Op::write(3 * cs + 500, 1000, 1),
            Op::write(5 * cs, cs, 2),
            Op::Zeroes { off: 7 * cs, len: cs, unmap: true },
            Op::Zeroes { off: 8 * cs, len: cs, unmap: false },
            Op::Discard { off: 9 * cs, len: cs },
            Op::write(10 * cs + cs / 2, 2 * cs, 3),
            Op::write(15 * cs - 1, 2, 4),
            Op::Zeroes { off: 20 * cs + 100, len: 200, unmap: true },
        ];
        run_and_verify(&f, &mut model, ops, &format!("compressed {cs}"));
    }
}

/// Internal snapshots: writes to the active layer copy shared clusters (and the shared L2
/// tables); the snapshot keeps its data.
#[test]
fn internal_snapshots_keep_their_data() {
    let dir = scratch("qcow2w-snapshots");
    for cs in [512, 64 * KIB] {
        let size = 2 * MIB;
        let f = fresh(&dir, &format!("s{cs}.qcow2"), &format!("cluster_size={cs}"), size);
        qio("qcow2", &f, &["write -P 0x11 0 1M", "write -P 0x22 1536k 256k"]);
        let before = qemu_bytes(&f, &[]);
        qimg(&["snapshot", "-c", "s1", f.to_str().unwrap()]);
        let mut model = Model::new(size, Some(&before), cs, true);
        model.has_backing = false; // the data is the image's own
        let ops = vec![
            Op::write(cs + 10, 20, 1),
            Op::write(2 * cs, cs, 2),
            Op::write(3 * cs + cs / 2, 2 * cs, 3),
            Op::write(cs + 100, 5, 4), // now owned: in place
            Op::Zeroes { off: 8 * cs, len: cs, unmap: true },
            Op::Zeroes { off: 9 * cs, len: cs, unmap: false },
            Op::Discard { off: 10 * cs, len: cs },
            Op::write(1536 * KIB - 7, 14, 5),
            Op::write(MIB + 100 * KIB, 64 * KIB, 6), // unallocated, no COW source but zeros
        ];
        run_and_verify(&f, &mut model, ops, &format!("active layer {cs}"));
        let snap = qemu_bytes(&f, &["-l", "snapshot.name=s1"]);
        if let Some(d) = diff(&snap, &before) {
            panic!("snapshot s1 changed ({cs}): {d}");
        }
        // A second snapshot over the new data, then more writes; both snapshots intact.
        qimg(&["snapshot", "-c", "s2", f.to_str().unwrap()]);
        let at_s2 = model.bytes.clone();
        run_and_verify(&f, &mut model, vec![Op::write(2 * cs + 1, 3 * cs, 7), Op::write(0, 4 * cs, 8)], &format!("after s2 {cs}"));
        assert!(diff(&qemu_bytes(&f, &["-l", "snapshot.name=s1"]), &before).is_none(), "s1 after s2 ({cs})");
        assert!(diff(&qemu_bytes(&f, &["-l", "snapshot.name=s2"]), &at_s2).is_none(), "s2 ({cs})");
        // Reverting with qemu-img on a copy shows the snapshot too.
        let copy = copy_as(&f, &format!("s{cs}-revert.qcow2"));
        qimg(&["snapshot", "-a", "s1", copy.to_str().unwrap()]);
        assert_bytes(&copy, &before, "reverted to s1");
        assert_clean(&copy);
    }
}

/// A read remembers the L1 entry it used; a write that copies the (snapshot-shared) L2 table it
/// names moves the entry, and the next read in the same open must follow it.
#[test]
fn reads_follow_an_l2_table_copied_under_them() {
    let dir = scratch("qcow2w-l1-moves");
    for cs in [512u64, 64 * KIB] {
        let f = fresh(&dir, &format!("m{cs}.qcow2"), &format!("cluster_size={cs}"), 2 * MIB);
        qio("qcow2", &f, &["write -P 0x11 0 64k"]);
        qimg(&["snapshot", "-c", "s1", f.to_str().unwrap()]);
        // Cluster 0 is read first (its L1 entry remembered), cluster 2 written (the shared L2
        // table is copied, the L1 entry changes), then both read again in the same open.
        let out = run(
            &f,
            vec![
                vec![Op::Read { off: 0, len: cs }],
                vec![Op::fill(2 * cs, cs, 0x77)],
                vec![Op::Read { off: 2 * cs, len: cs }],
                vec![Op::Read { off: 0, len: cs }],
            ],
        );
        let got = |batch: usize| out[batch][0].clone().expect("read data");
        assert!(got(0).iter().all(|&b| b == 0x11), "cluster 0 before ({cs})");
        assert!(got(2).iter().all(|&b| b == 0x77), "cluster 2 after its write ({cs})");
        assert!(got(3).iter().all(|&b| b == 0x11), "cluster 0 after ({cs})");
        assert!(diff(&qemu_bytes(&f, &["-l", "snapshot.name=s1"])[..64 * 1024], &[0x11; 64 * 1024]).is_none(), "snapshot ({cs})");
        assert_clean(&f);
    }
}

/// Runs `ops` (write-zeroes and discards) through Strata on `f` and through qemu-io on a copy
/// made first; both must read the same (and as the model), be clean, and agree on which full
/// clusters read as zeros without data.
fn same_as_qemu_io(f: &Path, model: &mut Model, ops: Vec<Op>, what: &str) {
    let copy = copy_as(f, &format!("{}.qemu-io.qcow2", f.file_name().unwrap().to_str().unwrap()));
    let cmds: Vec<String> = ops.iter().map(|o| o.qemu_io().unwrap()).collect();
    qio_out("qcow2", &copy, &cmds);
    run_and_verify(f, model, ops, what);
    let theirs = qemu_bytes(&copy, &[]);
    if let Some(d) = diff(&qemu_bytes(f, &[]), &theirs) {
        panic!("{what}: Strata and qemu-io differ: {d}");
    }
    assert!(diff(&theirs, &model.bytes).is_none(), "{what}: model differs from qemu-io");
    assert_clean(&copy);
    if !model.v3 {
        // v2 has no zero flag: Strata writes zeros where QEMU (without a backing file) drops
        // the clusters. Both read zeros; allocation differs by design.
        return;
    }
    let (ours, qemu) = (map(f), map(&copy));
    let zero_runs = |m: &[MapRun]| {
        let mut out = Vec::new();
        let mut at = 0;
        while at < model.bytes.len() as u64 {
            let r = map_at(m, at);
            out.push((at, r.zero && !r.data, r.depth));
            at += model.cluster;
        }
        out
    };
    assert_eq!(zero_runs(&ours), zero_runs(&qemu), "{what}: (cluster, zero without data, depth) per cluster: ours {ours:?} qemu {qemu:?}");
}

/// Data in a few clusters (by qemu-io), so zeroing and discarding hit allocated clusters.
fn prefill(f: &Path) {
    qio("qcow2", f, &["write -P 0x5a 0 1M", "write -P 0x6b 1536k 128k"]);
}

/// Write-zeroes and discards over clusters with data and without, whole and partial, as qemu-io.
fn zero_discard_ops(cs: u64) -> Vec<Op> {
    vec![
        Op::Zeroes { off: 2 * cs, len: cs, unmap: false },
        Op::Zeroes { off: 3 * cs, len: 2 * cs, unmap: true },
        Op::Zeroes { off: 5 * cs + 1000, len: 3000, unmap: true },
        Op::Zeroes { off: 6 * cs + 512, len: cs, unmap: false },
        Op::Zeroes { off: MIB + 10 * cs, len: cs, unmap: false }, // unallocated
        Op::Zeroes { off: 1536 * KIB - cs / 2, len: 2 * cs, unmap: true },
        Op::Discard { off: 9 * cs, len: cs },
        Op::Discard { off: 10 * cs + 512, len: 2 * cs },
        Op::Discard { off: 13 * cs, len: 100 },
        Op::Discard { off: 1536 * KIB + cs, len: cs },
    ]
}

/// One zero/discard case: image options, with or without a backing file.
fn zero_discard_case(name: &str, opts: &str, cs: u64, with_backing: bool) {
    let dir = scratch(&format!("qcow2w-zd-{name}"));
    let size = 2 * MIB;
    let v3 = !opts.contains("compat=0.10");
    let (f, mut model) = if with_backing {
        let base = random_raw(&dir.join("base.raw"), size, 21);
        let f = overlay(&dir, "top.qcow2", opts, size, "base.raw", "raw");
        (f, Model::new(size, Some(&base), cs, v3))
    } else {
        (fresh(&dir, "top.qcow2", opts, size), Model::new(size, None, cs, v3))
    };
    prefill(&f);
    model.bytes = qemu_bytes(&f, &[]);
    same_as_qemu_io(&f, &mut model, zero_discard_ops(cs), name);
}

#[test]
fn zeroes_and_discard_v3() {
    zero_discard_case("v3", "", 64 * KIB, false);
}

#[test]
fn zeroes_and_discard_v3_over_backing() {
    zero_discard_case("v3-backing", "", 64 * KIB, true);
}

#[test]
fn zeroes_and_discard_v3_small_clusters_over_backing() {
    zero_discard_case("v3-4k-backing", "cluster_size=4k", 4 * KIB, true);
}

#[test]
fn zeroes_and_discard_v2() {
    zero_discard_case("v2", "compat=0.10", 64 * KIB, false);
}

#[test]
fn zeroes_and_discard_v2_over_backing() {
    zero_discard_case("v2-backing", "compat=0.10", 64 * KIB, true);
}

#[test]
fn zeroes_and_discard_extended_l2() {
    zero_discard_case("ext-l2", "extended_l2=on,cluster_size=64k", 64 * KIB, false);
}

#[test]
fn zeroes_and_discard_extended_l2_over_backing() {
    zero_discard_case("ext-l2-backing", "extended_l2=on,cluster_size=64k", 64 * KIB, true);
}

/// v3 write-zeroes of whole clusters: `qemu-img map` shows zero (no data) for them.
#[test]
fn write_zeroes_maps_as_zero() {
    let dir = scratch("qcow2w-zero-map");
    let cs = 64 * KIB;
    let size = 2 * MIB;
    let base = random_raw(&dir.join("base.raw"), size, 9);
    let f = overlay(&dir, "top.qcow2", "", size, "base.raw", "raw");
    let mut model = Model::new(size, Some(&base), cs, true);
    let ops = vec![
        Op::write(0, 4 * cs, 1),
        Op::Zeroes { off: 0, len: cs, unmap: true },
        Op::Zeroes { off: cs, len: cs, unmap: false },
        Op::Zeroes { off: 8 * cs, len: 2 * cs, unmap: false },
    ];
    run_and_verify(&f, &mut model, ops, "zeroes");
    let m = map(&f);
    for at in [0, cs, 8 * cs, 9 * cs] {
        let r = map_at(&m, at);
        assert!(r.zero && r.depth == 0, "{at}: {r:?} in {m:?}");
    }
    assert!(!map_at(&m, 0).data, "unmapped zero cluster has no data: {m:?}");
    assert!(map_at(&m, 2 * cs).data && !map_at(&m, 2 * cs).zero, "{m:?}");
}

/// v3 write-zeroes where no L2 table exists and nothing lies below: as qemu-io, a table is made
/// and the clusters get the zero flag, so `qemu-img map` shows them present (Strata used to
/// leave them unallocated; `img commit` then differed from `qemu-img commit`).
#[test]
fn write_zeroes_without_a_table_marks_zero_clusters() {
    let dir = scratch("qcow2w-zero-notable");
    let f = fresh(&dir, "t.qcow2", "cluster_size=4k", 8 * MIB);
    qio("qcow2", &f, &["write -P 1 0 64k"]);
    let copy = copy_as(&f, "t.qemu-io.qcow2");
    // 4 KiB clusters: an L2 table spans 2 MiB, so 4 MiB has none.
    run(&f, vec![vec![Op::Zeroes { off: 4 * MIB, len: 64 * KIB, unmap: false }, Op::Zeroes { off: 6 * MIB, len: 8 * KIB, unmap: true }]]);
    qio("qcow2", &copy, &["write -z 4M 64k", "write -z -u 6M 8k"]);
    let json = |file: &Path| qimg(&["map", "--output=json", file.to_str().unwrap()]);
    assert_eq!(json(&f), json(&copy));
    assert!(json(&f).contains(&format!("\"start\": {}, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": true", 4 * MIB)), "{}", json(&f));
    assert_clean(&f);
}

#[test]
fn refcount_widths() {
    let dir = scratch("qcow2w-refcount-bits");
    for bits in [1, 8, 64] {
        let cs = 4 * KIB;
        let size = 4 * MIB;
        let base = random_raw(&dir.join(format!("b{bits}.raw")), size, bits);
        let f = overlay(&dir, &format!("r{bits}.qcow2"), &format!("refcount_bits={bits},cluster_size=4k"), size, &format!("b{bits}.raw"), "raw");
        let mut model = Model::new(size, Some(&base), cs, true);
        let mut ops = alloc_ops(cs, size);
        ops.extend(zero_discard_ops(cs));
        ops.push(Op::write(MIB, MIB, 40));
        run_and_verify(&f, &mut model, ops, &format!("refcount_bits={bits}"));
    }
}

/// Small clusters and enough writes that the image needs many new refcount blocks (but not a
/// bigger refcount table).
#[test]
fn new_refcount_blocks() {
    let dir = scratch("qcow2w-refblocks");
    for (cs, bits) in [(512, 16), (1024, 64)] {
        let size = 8 * MIB;
        let f = fresh(&dir, &format!("r{bits}.qcow2"), &format!("cluster_size={cs},refcount_bits={bits}"), size);
        let table_clusters = be32(&f, 56) as u64;
        // Clusters the refcount table can describe.
        let covered = table_clusters * cs / 8 * (cs * 8 / bits);
        let data = (covered * cs * 3 / 4).min(size) / (64 * KIB) * (64 * KIB);
        assert!(data >= 64 * KIB * 16, "room for {data} bytes only");
        let mut model = Model::new(size, None, cs, true);
        let batches: Vec<Vec<Op>> = (0..data / (64 * KIB))
            .collect::<Vec<_>>()
            .chunks(16)
            .map(|c| c.iter().map(|&i| Op::write(i * 64 * KIB, 64 * KIB, i)).collect())
            .collect();
        for b in &batches {
            model.apply_all(b);
        }
        run(&f, batches);
        assert_bytes(&f, &model.bytes, &format!("refcount_bits={bits}"));
        assert_clean(&f);
        assert!(be64(&f, 48) > 0);
    }
}

/// Writes past what the first refcount table describes: the table grows.
#[test]
fn refcount_table_grows() {
    let dir = scratch("qcow2w-reftable");
    let cs = 512;
    let size = 64 * MIB;
    let f = fresh(&dir, "t.qcow2", "cluster_size=512", size);
    let covered = be32(&f, 56) as u64 * cs / 8 * (cs * 8 / 16) * cs;
    let total = (covered + 4 * MIB).min(size);
    let mut model = Model::new(size, None, cs, true);
    let batches: Vec<Vec<Op>> = (0..total / (256 * KIB)).map(|i| vec![Op::write(i * 256 * KIB, 256 * KIB, i)]).collect();
    for b in &batches {
        model.apply_all(b);
    }
    run(&f, batches);
    assert_bytes(&f, &model.bytes, "past the first refcount table");
    assert_clean(&f);
}

/// Growing the virtual size (the L1 table moves: 512-byte clusters), then writing past the
/// old end, as `qemu-img resize` and `qemu-io` would.
#[test]
fn virtual_size_grows() {
    let dir = scratch("qcow2w-resize");
    let (cs, old, new) = (512, 4 * MIB, 64 * MIB + 512);
    let f = fresh(&dir, "g.qcow2", "cluster_size=512", old);
    let l1_before = be64(&f, 40);
    let mut model = Model::new(old, None, cs, true);
    let ops = [Op::write(old - 1000, 900, 1), Op::write(old - 100, 100, 2)];
    model.apply_all(&ops);
    with_open(&f, rw(), move |img| {
        exec_ok(img, &ops);
        qemu_runner::img::image::block_on(img.backend.resize(new)).unwrap();
        assert_eq!(img.backend.size(), new);
    })
    .unwrap();
    model.bytes.resize(new as usize, 0);
    model.backing.resize(new as usize, 0);
    let info: serde_json::Value = serde_json::from_str(&qimg(&["info", "--output=json", f.to_str().unwrap()])).unwrap();
    assert_eq!(info["virtual-size"].as_u64(), Some(new));
    assert_clean(&f);
    assert_ne!(be64(&f, 40), l1_before, "the L1 table had to move");
    run_and_verify(&f, &mut model, vec![Op::write(old - 10, 5000, 3), Op::write(new - 700, 700, 4), Op::write(40 * MIB + 3, 100 * KIB, 5)], "past the old end");
}

/// Incompatible features (header bytes 72..80).
fn incompatible(f: &Path) -> u64 {
    be64(f, 72)
}

#[test]
fn lazy_refcounts_dirty_bit() {
    let dir = scratch("qcow2w-lazy");
    let f = fresh(&dir, "lazy.qcow2", "lazy_refcounts=on", 4 * MIB);
    let g = f.clone();
    let seen = with_open(&f, rw(), move |img| {
        let before = incompatible(&g);
        exec_ok(img, &[Op::write(100, 5000, 1), Op::write(MIB, 64 * KIB, 2)]);
        let during = incompatible(&g);
        exec_ok(img, &[Op::Flush]);
        let after_flush = incompatible(&g);
        (before, during, after_flush)
    })
    .unwrap();
    assert_eq!(seen.0 & 1, 0, "clean before the first write: {seen:?}");
    assert_eq!(seen.1 & 1, 1, "dirty bit set while writing: {seen:?}");
    assert_eq!(seen.2 & 1, 1, "still dirty after a flush (refcounts are lazy): {seen:?}");
    assert_eq!(incompatible(&f) & 1, 0, "clean after close");
    assert_clean(&f);
    let mut model = Model::new(4 * MIB, None, 64 * KIB, true);
    model.apply_all(&[Op::write(100, 5000, 1), Op::write(MIB, 64 * KIB, 2)]);
    assert_bytes(&f, &model.bytes, "lazy");
}

/// An image qemu-io left dirty (killed with lazy refcounts on).
fn dirty_image(dir: &Path) -> std::path::PathBuf {
    let f = fresh(dir, "dirty.qcow2", "lazy_refcounts=on", 4 * MIB);
    ensure_qemu();
    let _ = std::process::Command::new(qemu_io_bin())
        .args(["-f", "qcow2", "-c", "write -P 0x5a 0 64k", "-c", "sigraise 9"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(incompatible(&f) & 1, 1, "qemu-io left it dirty");
    f
}

/// A dirty image (lazy refcounts, not closed) opens read-only as it is, and read-write after a
/// repair, as QEMU's open does: the dirty bit is cleared and qemu-img finds it clean, the data
/// written before the crash still there.
#[test]
fn dirty_image_opens_read_only_as_it_is_and_read_write_repaired() {
    let dir = scratch("qcow2w-dirty");
    let f = dirty_image(&dir);
    read_all(&f, OpenOptions { read_only: true, ..OpenOptions::default() }).unwrap();
    assert_eq!(incompatible(&f) & 1, 1, "a read-only open leaves it dirty");
    with_open(&f, rw(), |_| ()).unwrap();
    assert_eq!(incompatible(&f) & 1, 0, "repaired and clean");
    assert_clean(&f);
    qio("qcow2", &f, &["read -P 0x5a 0 64k"]);
}

#[test]
fn corrupt_image_refuses_read_write() {
    let dir = scratch("qcow2w-corrupt");
    let f = fresh(&dir, "c.qcow2", "", 4 * MIB);
    qio("qcow2", &f, &["write -P 1 0 64k"]);
    patch(&f, 79, &[2]);
    read_all(&f, OpenOptions { read_only: true, ..OpenOptions::default() }).unwrap();
    let err = with_open(&f, rw(), |_| ()).expect_err("a corrupt image must not open read-write");
    assert!(err.contains("corrupt"), "{err}");
}

/// Images with an external data file open read-write (their writes: `qcow2_data_file.rs`).
#[test]
fn data_file_image_opens_read_write() {
    let dir = scratch("qcow2w-data-file");
    let f = dir.join("d.qcow2");
    create(&f, &format!("data_file={}", dir.join("d.raw").display()), "4M", &[]);
    read_all(&f, OpenOptions { read_only: true, ..OpenOptions::default() }).unwrap();
    assert!(with_open(&f, rw(), |_| ()).is_ok(), "an image with a data file opens read-write");
}

/// Unknown autoclear bits are cleared by a read-write open that writes.
#[test]
fn unknown_autoclear_bits_cleared() {
    let dir = scratch("qcow2w-autoclear");
    let f = fresh(&dir, "a.qcow2", "", 4 * MIB);
    patch(&f, 88, &0x8000_0000_0000_0080u64.to_be_bytes());
    run(&f, vec![vec![Op::write(0, 512, 1)]]);
    assert_eq!(be64(&f, 88), 0, "autoclear bits after a read-write open");
    assert_clean(&f);
}

/// A read-only open changes nothing, dirty bits and autoclear bits included.
#[test]
fn read_only_open_changes_nothing() {
    let dir = scratch("qcow2w-ro");
    let f = fresh(&dir, "a.qcow2", "lazy_refcounts=on", 4 * MIB);
    qio("qcow2", &f, &["write -P 1 0 64k"]);
    patch(&f, 88, &0x80u64.to_be_bytes());
    let before = std::fs::read(&f).unwrap();
    read_all(&f, OpenOptions { read_only: true, ..OpenOptions::default() }).unwrap();
    assert!(std::fs::read(&f).unwrap() == before, "file changed by a read-only open");
}

// ---- concurrency ----

/// Overlapping writes of different patterns all in flight: the image equals applying them in
/// issue order.
fn overlapping_writes(opts: OpenOptions, name: &str) {
    let dir = scratch(&format!("qcow2w-overlap-{name}"));
    let cs = 64 * KIB;
    let size = 4 * MIB;
    let base = random_raw(&dir.join("base.raw"), size, 31);
    let f = overlay(&dir, "top.qcow2", "", size, "base.raw", "raw");
    let mut model = Model::new(size, Some(&base), cs, true);
    let mut rng = Rng(0x1234_5678);
    let mut batches = Vec::new();
    for round in 0..6 {
        let batch: Vec<Op> = (0..24)
            .map(|i| {
                let off = rng.below(512 * KIB) + round * 100 * KIB;
                let len = 1 + rng.below(if i % 3 == 0 { 200 * KIB } else { 9000 });
                Op::write(off, len, round * 100 + i)
            })
            .collect();
        model.apply_all(&batch);
        batches.push(batch);
    }
    run_with(&f, opts, batches);
    assert_bytes(&f, &model.bytes, "overlapping writes in issue order");
    assert_clean(&f);
}

#[test]
fn overlapping_writes_in_flight() {
    overlapping_writes(rw(), "writeback");
}

#[test]
fn overlapping_writes_in_flight_direct() {
    overlapping_writes(rw_direct(), "direct");
}

/// Writes to disjoint parts of one unallocated cluster (and of clusters under one unallocated
/// L2 table) all at once: one host cluster each, every part kept, COW for the rest.
fn same_cluster_allocations(opts: OpenOptions, name: &str) {
    let dir = scratch(&format!("qcow2w-race-{name}"));
    for (cs, copts) in [(64 * KIB, "cluster_size=64k"), (512, "cluster_size=512"), (64 * KIB, "cluster_size=64k,extended_l2=on")] {
        let size = 4 * MIB;
        let base = random_raw(&dir.join("base.raw"), size, 41);
        let _ = std::fs::remove_file(dir.join("top.qcow2"));
        let f = overlay(&dir, "top.qcow2", copts, size, "base.raw", "raw");
        let mut model = Model::new(size, Some(&base), cs, true);
        let mut batch: Vec<Op> = (0..16).map(|i| Op::write(cs + i * cs / 16 + 7, cs / 32, i)).collect();
        // 16 clusters of one L2 table none of which is allocated yet, and a table further on.
        batch.extend((0..16).map(|i| Op::write(MIB + i * 3 * cs + 5, 100, 100 + i)));
        batch.extend((0..8).map(|i| Op::write(3 * MIB + i * cs / 8, cs / 8, 200 + i)));
        model.apply_all(&batch);
        run_with(&f, opts.clone(), vec![batch]);
        assert_bytes(&f, &model.bytes, &format!("racing allocations {copts}"));
        assert_clean(&f);
    }
}

#[test]
fn same_cluster_allocations_race() {
    same_cluster_allocations(rw(), "writeback");
}

#[test]
fn same_cluster_allocations_race_direct() {
    same_cluster_allocations(rw_direct(), "direct");
}

/// Reads in flight with the allocating write of their range (before and after it in issue
/// order): each read sees the old data entirely or the new data entirely.
fn read_during_allocation(opts: OpenOptions, name: &str) {
    let dir = scratch(&format!("qcow2w-read-alloc-{name}"));
    let cs = 64 * KIB;
    let size = 4 * MIB;
    let base = random_raw(&dir.join("base.raw"), size, 51);
    let f = overlay(&dir, "top.qcow2", "", size, "base.raw", "raw");
    let cases: Vec<(u64, u64, u64, u64)> = vec![
        // (write off, write len, read off, read len)
        (cs, cs, cs, cs),
        (3 * cs + 100, 5000, 3 * cs, cs),
        (5 * cs + 100, 2 * cs, 5 * cs - 1000, 4 * cs),
        (10 * cs, 3, 10 * cs, 4096),
        (12 * cs, 4 * cs, 13 * cs + 17, 1000),
    ];
    let mut batches = Vec::new();
    let mut checks = Vec::new();
    let mut model = Model::new(size, Some(&base), cs, true);
    for (i, &(woff, wlen, roff, rlen)) in cases.iter().enumerate() {
        let write = Op::write(woff, wlen, i as u64 + 1);
        let old = model.bytes[roff as usize..(roff + rlen) as usize].to_vec();
        model.apply(&write);
        let new = model.bytes[roff as usize..(roff + rlen) as usize].to_vec();
        let read = Op::Read { off: roff, len: rlen };
        batches.push(vec![read.clone(), write.clone(), read.clone()]);
        checks.push((old, new));
    }
    let out = run_with(&f, opts, batches);
    for (i, (res, (old, new))) in out.iter().zip(&checks).enumerate() {
        for (j, r) in [res[0].as_ref().unwrap(), res[2].as_ref().unwrap()].into_iter().enumerate() {
            assert!(r == old || r == new, "case {i} read {j}: neither old nor new: vs old {:?}; vs new {:?}", diff(r, old), diff(r, new));
        }
    }
    assert_bytes(&f, &model.bytes, "after reads during allocation");
    assert_clean(&f);
}

#[test]
fn read_during_allocation_sees_old_or_new() {
    read_during_allocation(rw(), "writeback");
}

#[test]
fn read_during_allocation_sees_old_or_new_direct() {
    read_during_allocation(rw_direct(), "direct");
}

/// Unaligned overlapping writes, write-zeroes and discards in flight together.
#[test]
fn unaligned_overlapping_mixed_ops() {
    let dir = scratch("qcow2w-unaligned-mixed");
    let cs = 4 * KIB;
    let size = 2 * MIB;
    let base = random_raw(&dir.join("base.raw"), size, 61);
    let f = overlay(&dir, "top.qcow2", "cluster_size=4k", size, "base.raw", "raw");
    let mut model = Model::new(size, Some(&base), cs, true);
    let batch = vec![
        Op::write(1000, 10000, 1),
        Op::write(3000, 3, 2),
        Op::Zeroes { off: 4096, len: 8192, unmap: true },
        Op::write(8000, 5000, 3),
        Op::Discard { off: 0, len: 16384 },
        Op::write(5, 20000, 4),
        Op::Zeroes { off: 12000, len: 100, unmap: false },
        Op::write(12050, 4096, 5),
    ];
    model.apply_all(&batch);
    run_with(&f, rw_direct(), vec![batch]);
    assert_bytes(&f, &model.bytes, "mixed overlapping ops in issue order");
    assert_clean(&f);
}

// ---- randomized ----

/// Whether `op` touches any byte of `off..off + len` (a flush touches none).
fn overlaps(op: &Op, off: u64, len: u64) -> bool {
    let (o, l) = match op {
        Op::Write { off, data } => (*off, data.len() as u64),
        Op::Zeroes { off, len, .. } | Op::Discard { off, len } | Op::Read { off, len } => (*off, *len),
        Op::Flush => return false,
    };
    o < off + len && off < o + l
}

/// `n` seeded random operations (writes, write-zeroes with and without unmap, discards,
/// flushes; unaligned sizes; `qd` at once) on a qcow2 over a backing file; every 8 batches the
/// whole image is read back and compared with the model while open.
#[allow(clippy::too_many_arguments)] // reason: one test matrix
fn random_ops(name: &str, copts: &str, cs: u64, seed: u64, n: usize, qd: usize, opts: OpenOptions, with_backing: bool) {
    let dir = scratch(&format!("qcow2w-random-{name}"));
    let size = 8 * MIB;
    let (base, f) = if with_backing {
        (Some(random_raw(&dir.join("base.raw"), size, seed)), overlay(&dir, "top.qcow2", copts, size, "base.raw", "raw"))
    } else {
        (None, fresh(&dir, "top.qcow2", copts, size))
    };
    let v3 = !copts.contains("compat=0.10");
    let mut model = Model::new(size, base.as_deref(), cs, v3);
    let mut rng = Rng(seed | 1);
    let mut ops = Vec::new();
    let no_overlap = opts.cache == CacheMode::None;
    while ops.len() < n {
        let i = ops.len();
        let hot = rng.below(4) == 0; // a quarter of the ops crowd the first 256 KiB
        let span = if hot { 256 * KIB } else { size };
        let len = match rng.below(4) {
            0 => 1 + rng.below(4096),
            1 => (1 + rng.below(8)) * 4096,
            2 => 1 + rng.below(3 * cs),
            _ => (1 + rng.below(3)) * cs,
        }
        .min(span);
        let aligned = rng.below(2) == 0;
        let mut off = rng.below(span - len + 1);
        if aligned {
            off = off / 4096 * 4096;
        }
        // With -t none overlapping plain requests are unordered: keep a batch's ranges apart.
        let batch_start = i / qd * qd;
        if no_overlap && ops[batch_start..].iter().any(|o: &Op| overlaps(o, off, len)) {
            continue;
        }
        let op = match rng.below(20) {
            0..=12 => Op::write(off, len, seed * 1000 + i as u64),
            13..=14 => Op::Zeroes { off, len, unmap: true },
            15..=16 => Op::Zeroes { off, len, unmap: false },
            17..=18 => Op::Discard { off, len },
            _ => Op::Flush,
        };
        ops.push(op);
    }
    model.apply_all(&ops);
    let batches: Vec<Vec<Op>> = ops.chunks(qd).map(<[Op]>::to_vec).collect();
    let expect = model.bytes.clone();
    let g = f.clone();
    let result = with_open(&f, opts, move |img| {
        let mut shadow = Model::new(size, base.as_deref(), cs, v3);
        for (k, b) in batches.iter().enumerate() {
            for r in exec(img, b) {
                r.map_err(|e| format!("batch {k}: {e}"))?;
            }
            shadow.apply_all(b);
            if k % 8 == 7 || k + 1 == batches.len() {
                let got = exec(img, &[Op::Read { off: 0, len: size }]).remove(0).map_err(|e| format!("read back: {e}"))?.unwrap();
                if let Some(d) = diff(&got, &shadow.bytes) {
                    return Err(format!("{}: after batch {k}, read back while open: {d}", g.display()));
                }
            }
        }
        Ok(())
    });
    result.unwrap().unwrap();
    assert_bytes(&f, &expect, &format!("random {name}"));
    assert_clean(&f);
}

#[test]
fn random_ops_over_backing() {
    random_ops("64k", "", 64 * KIB, 1, 500, 16, rw(), true);
}

#[test]
fn random_ops_over_backing_small_clusters_direct() {
    random_ops("4k-direct", "cluster_size=4k", 4 * KIB, 2, 500, 16, rw_direct(), true);
}

#[test]
fn random_ops_over_backing_extended_l2() {
    random_ops("ext-l2", "cluster_size=64k,extended_l2=on", 64 * KIB, 3, 500, 16, rw_direct(), true);
}

#[test]
fn random_ops_v2() {
    random_ops("v2", "compat=0.10", 64 * KIB, 4, 500, 16, rw(), false);
}

#[test]
fn random_ops_v2_over_backing() {
    random_ops("v2-backing", "compat=0.10", 64 * KIB, 5, 500, 16, rw(), true);
}

#[test]
fn random_ops_without_backing_512() {
    random_ops("512", "cluster_size=512", 512, 6, 500, 16, rw(), false);
}

// ---- reduced bugs ----

/// `qemu-img create` ends a fresh qcow2 right after its L1 table (196616 bytes with 64 KiB
/// clusters); QEMU opens it with `cache=none`. Before 94300fe Strata's O_DIRECT leaf rounded
/// the file length down to its block size and the open failed with "L1 table reaches past the
/// end of the file".
#[test]
fn direct_open_of_a_fresh_image() {
    let dir = scratch("qcow2w-direct-fresh");
    let f = fresh(&dir, "t.qcow2", "", 4 * MIB);
    assert_ne!(std::fs::metadata(&f).unwrap().len() % 512, 0, "qemu-img leaves an unaligned length");
    let ro = OpenOptions { read_only: true, cache: rw_direct().cache, ..OpenOptions::default() };
    read_all(&f, ro).unwrap();
    let spec = f.to_str().unwrap().to_string();
    let r = with_timeout(move || {
        qemu_runner::img::image::with_image(&spec, &rw_direct(), |img| Ok(exec(img, &[Op::write(0, 4096, 1)]))).map_err(|e| e.to_string())
    });
    assert!(matches!(r, Ok(Ok(ref v)) if v[0].is_ok()), "{r:?}");
}

/// 512-byte clusters with 64-bit refcounts: one refcount block covers 64 clusters, as many as
/// one allocation step takes. A 32 KiB write (64 clusters) to a fresh image failed at 1e6bf22
/// with "out of refcount table (growing it is not supported yet)" although the table covers
/// 2 MiB, the file grown to ~2 MiB of unreferenced clusters; since 6607512 (the table grows)
/// the write hangs. 31.5 KiB works. QEMU writes it.
#[test]
fn allocation_as_large_as_a_refcount_block() {
    let dir = scratch("qcow2w-refblock-group");
    let f = fresh(&dir, "r.qcow2", "cluster_size=512,refcount_bits=64", 8 * MIB);
    let copy = copy_as(&f, "q.qcow2");
    qio("qcow2", &copy, &["write -P 0x11 0 32k"]);
    assert_clean(&copy);
    let mut model = Model::new(8 * MIB, None, 512, true);
    run_and_verify(&f, &mut model, vec![Op::fill(0, 32 * KIB, 0x11)], "32 KiB write");
    assert!(std::fs::metadata(&f).unwrap().len() < 128 * KIB, "file size {}", std::fs::metadata(&f).unwrap().len());
}

/// Issues `a` then `b` together on a fresh image (over a random raw backing file if
/// `with_backing`) `rounds` times; how many rounds ended different from applying them in order.
#[allow(clippy::too_many_arguments)] // reason: one test matrix
fn race_rounds(name: &str, copts: &str, cs: u64, with_backing: bool, opts: OpenOptions, setup: &[Op], ops: &[Op], rounds: usize) -> (usize, Option<String>) {
    let dir = scratch(&format!("qcow2w-race2-{name}"));
    let size = 4 * MIB;
    let base = if with_backing { Some(random_raw(&dir.join("base.raw"), size, 77)) } else { None };
    let mut model = Model::new(size, base.as_deref(), cs, true);
    model.apply_all(setup);
    model.apply_all(ops);
    let mut bad = 0;
    let mut first = None;
    for _ in 0..rounds {
        let _ = std::fs::remove_file(dir.join("top.qcow2"));
        let f = if with_backing { overlay(&dir, "top.qcow2", copts, size, "base.raw", "raw") } else { fresh(&dir, "top.qcow2", copts, size) };
        let (v, w) = (setup.to_vec(), ops.to_vec());
        let errors: Vec<String> = with_open(&f, opts.clone(), move |img| {
            let mut out: Vec<Outcome> = if v.is_empty() { Vec::new() } else { exec(img, &v) };
            out.extend(exec(img, &w));
            out.into_iter().filter_map(Result::err).collect()
        })
        .unwrap();
        if !errors.is_empty() {
            bad += 1;
            let (code, v) = check(&f);
            first.get_or_insert(format!("errors {errors:?}; header incompatible features {:#x}; qemu-img check exit {code}: {v}", be64(&f, 72)));
        } else if let Some(d) = diff(&qemu_bytes(&f, &[]), &model.bytes) {
            bad += 1;
            let (code, v) = check(&f);
            first.get_or_insert(format!("{d}; qemu-img check exit {code}: {v}"));
        }
    }
    (bad, first)
}

/// Two 4 KiB writes issued together into one cluster of a fresh overlay (no L2 table yet),
/// with `-t none`: often (1 round in 6 to 1 in 30) the second fails with "corrupt image: L1
/// entry: L2 table past the end of the file (at file offset 0x30000)" — it reads the L1 entry
/// the first one just set before the file has grown to hold the new L2 table. That write is
/// lost and the node refuses further writes (the header's corrupt bit stays clear; `qemu-img
/// check` is clean with one allocated cluster). Writeback mode never shows it.
#[test]
fn concurrent_writes_under_a_new_l2_table_direct() {
    let cs = 64 * KIB;
    let c = 15 * cs;
    let ops = vec![Op::write(c + KIB, 4 * KIB, 1), Op::write(c + 32 * KIB, 4 * KIB, 2)];
    let (bad, first) = race_rounds("l2", "", cs, true, rw_direct(), &[], &ops, 60);
    assert_eq!(bad, 0, "{first:?}");
}

/// Write A (303789+110537: clusters 4 and 5 allocated, 6 not) then B (360760+1659, inside A,
/// in cluster 5) issued together with `-t none`: B's bytes end up A's, every time. A writes its
/// in-place clusters before it becomes serialising for the allocation of cluster 6, so B (a
/// plain in-place write) waits for nothing and A's later segment lands over it. As QEMU (plain
/// overlapping writes are unordered), but not the issue order this suite was asked to expect.
#[test]
fn overlapping_writes_keep_issue_order_direct() {
    let cs = 64 * KIB;
    let setup = vec![Op::write(209967, 7368, 1), Op::write(313848, 3820, 2), Op::write(84590, 6187, 3), Op::write(335994, 5035, 4)];
    let ops = vec![Op::write(303789, 110537, 5), Op::write(360760, 1659, 6)];
    let (bad, first) = race_rounds("order", "", cs, true, rw_direct(), &setup, &ops, 5);
    assert_eq!(bad, 0, "{first:?}");
}
