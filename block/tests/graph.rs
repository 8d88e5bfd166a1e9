//! The node graph: permissions between users and parents, read-only nodes and devices, opening
//! from the options grammar (probing, nesting, windows, errors), closing and stale ids, and
//! capacity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::open;
use futures::executor::block_on;
use strata_block::dev::ram::{RamConfig, RamDisk};
use strata_block::dev::{BlockDevice, DeviceInfo};
use strata_block::options::OptionsErrorKind;
use strata_block::{Backend, BackendOptions, Error, Graph};

const RO: BackendOptions = BackendOptions {
    read_only: true,
    detect_zeroes: strata_block::DetectZeroes::Off,
    clock: zero_clock,
};

fn zero_clock() -> u64 {
    0
}

fn rw() -> BackendOptions {
    BackendOptions::default()
}

fn conflict<T>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::PermissionConflict { .. }))
}

#[test]
fn one_writer_many_readers() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<8>::new(&mut mem, 512, RamConfig::default());
    let mut bounce = vec![0u8; 8192];
    let mut graph: Graph<4, 8> = Graph::new(&mut bounce, 4096);
    let d0 = graph.add_leaf("d0", &disk).unwrap();

    let writer = Backend::new(&graph, d0, rw()).unwrap();
    assert!(conflict(Backend::new(&graph, d0, rw())), "a second writer");
    let reader = Backend::new(&graph, d0, RO).expect("a reader next to a writer");
    let reader2 = Backend::new(&graph, d0, RO).expect("two readers");
    block_on(writer.write(0, &[7; 512])).unwrap();
    let mut buf = [0u8; 512];
    block_on(reader.read(0, &mut buf)).unwrap();
    assert_eq!(buf, [7; 512]);
    assert_eq!(block_on(reader.write(0, &buf)), Err(Error::ReadOnly));
    drop(writer);
    // The writer's permissions went with it.
    let writer = Backend::new(&graph, d0, rw()).expect("a new writer after the old one left");
    assert!(conflict(Backend::new(&graph, d0, rw())));
    drop((writer, reader, reader2));

    // A writable format node over the device is a writer there too.
    let raw = open(&mut graph, "driver=raw,file=d0").unwrap();
    assert!(
        conflict(Backend::new(&graph, d0, rw())),
        "a writer below a writable raw node"
    );
    assert!(
        conflict(open(&mut graph, "driver=raw,file=d0")),
        "two writable raw nodes over one device"
    );
    let _reader = Backend::new(&graph, d0, RO).expect("a reader below a raw node");
    let top = Backend::new(&graph, raw, rw()).unwrap();
    assert!(conflict(Backend::new(&graph, raw, rw())));
    drop(top);
}

#[test]
fn too_many_users() {
    let mut mem = vec![0u8; 4096];
    let disk = RamDisk::<8>::new(&mut mem, 512, RamConfig::default());
    let mut graph: Graph<4, 8> = Graph::new(&mut [], 4096);
    let d0 = graph.add_leaf("d0", &disk).unwrap();
    let users: Vec<_> = (0..strata_block::graph::MAX_USERS)
        .map(|_| Backend::new(&graph, d0, RO).unwrap())
        .collect();
    assert!(matches!(
        Backend::new(&graph, d0, RO),
        Err(Error::NoSpace { .. })
    ));
    drop(users);
    Backend::new(&graph, d0, RO).unwrap();
}

#[test]
fn read_only_devices_and_nodes() {
    let mut mem = vec![0x11u8; 64 << 10];
    let mut info = DeviceInfo::new(64 << 10, 512);
    info.read_only = true;
    let ro_disk = RamDisk::<8>::with_info(&mut mem, info, RamConfig::default());
    let mut mem2 = vec![0x22u8; 64 << 10];
    let disk = RamDisk::<8>::new(&mut mem2, 512, RamConfig::default());
    let mut bounce = vec![0u8; 8192];
    let mut graph: Graph<8, 8> = Graph::new(&mut bounce, 4096);
    let ro = graph.add_leaf("ro", &ro_disk).unwrap();
    graph.add_leaf("d0", &disk).unwrap();

    assert_eq!(Backend::new(&graph, ro, rw()).err(), Some(Error::ReadOnly));
    let reader = Backend::new(&graph, ro, RO).unwrap();
    let mut buf = [0u8; 100];
    block_on(reader.read(10, &mut buf)).unwrap();
    assert_eq!(buf, [0x11; 100]);
    drop(reader);

    // A raw node over a read-only device is read-only.
    let raw_ro = open(&mut graph, "driver=raw,file=ro").unwrap();
    assert!(graph.node(raw_ro).unwrap().read_only);
    assert_eq!(
        Backend::new(&graph, raw_ro, rw()).err(),
        Some(Error::ReadOnly)
    );

    // read-only=on makes a read-only node over a writable device.
    let node = open(&mut graph, "driver=raw,read-only=on,node-name=d0ro,file=d0").unwrap();
    assert!(graph.node(node).unwrap().read_only);
    assert_eq!(
        Backend::new(&graph, node, rw()).err(),
        Some(Error::ReadOnly)
    );
    let reader = Backend::new(&graph, node, RO).unwrap();
    block_on(reader.read(0, &mut buf)).unwrap();
    assert_eq!(buf, [0x22; 100]);
    // A flush through a read-only node issues nothing.
    block_on(reader.flush()).unwrap();
    assert_eq!(disk.stats().flushes, 0);
    drop(reader);
    assert!(matches!(
        open(&mut graph, "driver=raw,read-only=maybe,file=d0"),
        Err(Error::BadOptions {
            kind: OptionsErrorKind::BadValue(_),
            ..
        })
    ));
}

#[test]
fn open_errors() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<8>::new(&mut mem, 512, RamConfig::default());
    let mut bounce = vec![0u8; 8192];
    let mut graph: Graph<8, 8> = Graph::new(&mut bounce, 4096);
    graph.add_leaf("d0", &disk).unwrap();
    let count = |g: &Graph<8, 8>| g.nodes().count();

    assert_eq!(
        open(&mut graph, "driver=qcow9,file=d0"),
        Err(Error::UnknownDriver)
    );
    assert_eq!(
        open(&mut graph, "driver=device,file=d0"),
        Err(Error::UnknownDriver),
        "leaves are not opened by driver name"
    );
    assert!(matches!(
        open(&mut graph, "driver=raw,colour=red,file=d0"),
        Err(Error::BadOptions {
            kind: OptionsErrorKind::UnknownKey,
            ..
        })
    ));
    assert!(matches!(
        open(&mut graph, "driver=raw,=x,file=d0"),
        Err(Error::BadOptions {
            kind: OptionsErrorKind::EmptyKey,
            ..
        })
    ));
    assert!(matches!(
        open(&mut graph, "driver=raw,offset=lots,file=d0"),
        Err(Error::BadOptions {
            kind: OptionsErrorKind::BadValue(_),
            ..
        })
    ));
    assert!(matches!(
        open(&mut graph, "driver=raw,offset=65537,file=d0"),
        Err(Error::BadOption { key: "offset", .. })
    ));
    assert!(matches!(
        open(&mut graph, "driver=raw,offset=4096,size=61441,file=d0"),
        Err(Error::BadOption { key: "size", .. })
    ));
    assert!(matches!(
        open(&mut graph, "driver=raw,size=1T,file=d0"),
        Err(Error::BadOption { key: "size", .. })
    ));
    assert!(matches!(
        open(&mut graph, "driver=raw"),
        Err(Error::BadOption { key: "file", .. })
    ));
    assert_eq!(
        open(&mut graph, "driver=raw,file=nosuch"),
        Err(Error::NotFound)
    );
    assert_eq!(open(&mut graph, "nosuch"), Err(Error::NotFound));
    assert_eq!(count(&graph), 1, "failed opens leave no nodes behind");

    // Edge windows are fine: empty at the end, and the whole device.
    let empty = open(&mut graph, "driver=raw,offset=64K,read-only=on,file=d0").unwrap();
    assert_eq!(graph.node(empty).unwrap().size(), 0);
    let whole = open(
        &mut graph,
        "driver=raw,offset=0,size=64K,read-only=on,file=d0",
    )
    .unwrap();
    assert_eq!(graph.node(whole).unwrap().size(), 64 << 10);

    // Read-only format nodes (above) refuse writers below them: they cache what they read, as
    // in QEMU.
    assert!(conflict(open(&mut graph, "driver=raw,file=d0")));
    // Node names are unique and short.
    open(&mut graph, "driver=raw,node-name=top,read-only=on,file=d0").unwrap();
    assert!(matches!(
        open(&mut graph, "driver=raw,node-name=top,read-only=on,file=d0"),
        Err(Error::BadOption {
            key: "node-name",
            ..
        })
    ));
    assert!(matches!(
        open(
            &mut graph,
            "driver=raw,node-name=a-name-that-is-far-too-long-to-fit,read-only=on,file=d0"
        ),
        Err(Error::BadOption {
            key: "node-name",
            ..
        })
    ));
}

#[test]
fn failed_nested_open_leaves_nothing_behind() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<8>::new(&mut mem, 512, RamConfig::default());
    let mut mem2 = vec![0u8; 4096];
    let other = RamDisk::<8>::new(&mut mem2, 512, RamConfig::default());
    let mut bounce = vec![0u8; 8192];
    let mut graph: Graph<8, 8> = Graph::new(&mut bounce, 4096);
    graph.add_leaf("d0", &disk).unwrap();
    // The inner raw node opens, the outer one fails: the inner one must not stay behind
    // holding write permission on d0.
    assert!(matches!(
        open(
            &mut graph,
            "driver=raw,size=1M,file.driver=raw,file.file=d0"
        ),
        Err(Error::BadOption { key: "size", .. })
    ));
    assert_eq!(graph.nodes().count(), 1);
    let raw = open(&mut graph, "driver=raw,file=d0").unwrap();
    Backend::new(&graph, raw, rw()).unwrap();

    // A device found through the resolver for a failing open is not kept either.
    let mut resolve = |name: &str| (name == "d1").then_some(&other as &dyn BlockDevice);
    assert_eq!(
        block_on(graph.open("driver=nope,file=d1", &mut resolve)),
        Err(Error::UnknownDriver)
    );
    assert_eq!(graph.find("d1"), None);
    let d1 = block_on(graph.open("d1", &mut resolve)).unwrap();
    assert!(graph.find("d1").is_some());
    assert_eq!(graph.node(d1).unwrap().size(), 4096);
}

#[test]
fn resolver_and_probe() {
    let mut big = vec![0u8; 64 << 10];
    big[..512].copy_from_slice(&[0x51; 512]); // not any known format: raw
    let big = RamDisk::<8>::new(
        &mut big,
        512,
        RamConfig {
            delay_polls: 2,
            shuffle_seed: 0,
        },
    );
    let mut none = [0u8; 0];
    let empty = RamDisk::<8>::new(&mut none, 512, RamConfig::default());
    let mut few = vec![0x33u8; 100];
    let short = RamDisk::<8>::new(&mut few, 1, RamConfig::default());
    let mut bounce = vec![0u8; 8192];
    let mut graph: Graph<8, 8> = Graph::new(&mut bounce, 4096);
    let mut asked = Vec::new();
    let mut resolve = |name: &str| {
        asked.push(name.to_string());
        match name {
            "big" => Some(&big as &dyn BlockDevice),
            "empty" => Some(&empty as &dyn BlockDevice),
            "short" => Some(&short as &dyn BlockDevice),
            _ => None,
        }
    };
    for (name, size) in [("big", 64 << 10), ("empty", 0), ("short", 100)] {
        let id = block_on(graph.open(name, &mut resolve)).unwrap();
        let node = graph.node(id).unwrap();
        assert_eq!(node.driver, "raw", "{name} probes as raw");
        assert_eq!(node.size(), size);
        assert!(
            graph.find(name).is_some(),
            "the device is a node named {name}"
        );
    }
    assert_eq!(
        block_on(graph.open("gone", &mut resolve)),
        Err(Error::NotFound)
    );
    // Names already in the graph are not resolved again.
    assert_eq!(asked, ["big", "empty", "short", "gone"]);
    let short_raw = graph
        .nodes()
        .find(|(_, n)| n.driver == "raw" && n.size() == 100)
        .unwrap()
        .0;
    let be = Backend::new(&graph, short_raw, rw()).unwrap();
    let mut buf = [0u8; 100];
    block_on(be.read(0, &mut buf)).unwrap();
    assert_eq!(buf, [0x33; 100]);
    let empty_raw = graph
        .nodes()
        .find(|(_, n)| n.driver == "raw" && n.size() == 0)
        .unwrap()
        .0;
    let be = Backend::new(&graph, empty_raw, rw()).unwrap();
    block_on(be.read(0, &mut [])).unwrap();
    assert!(matches!(
        block_on(be.read(0, &mut buf[..1])),
        Err(Error::OutOfRange { .. })
    ));
    block_on(be.flush()).unwrap();
}

#[test]
fn nested_raw_offsets_compose() {
    let mut mem = vec![0u8; 64 << 10];
    {
        let disk = RamDisk::<8>::new(&mut mem, 512, RamConfig::default());
        let mut bounce = vec![0u8; 8192];
        let mut graph: Graph<4, 8> = Graph::new(&mut bounce, 4096);
        graph.add_leaf("d0", &disk).unwrap();
        let top = open(
            &mut graph,
            "driver=raw,offset=4096,size=19968,file.driver=raw,file.offset=8192,file.file=d0",
        )
        .unwrap();
        let inner = graph
            .node(top)
            .unwrap()
            .child(strata_block::graph::Role::File)
            .unwrap();
        assert_eq!(graph.node(inner).unwrap().size(), (64 << 10) - 8192);
        assert_eq!(graph.node(top).unwrap().size(), 19968);
        let be = Backend::new(&graph, top, rw()).unwrap();
        block_on(be.write(0, &[1; 10])).unwrap();
        block_on(be.write(19_958, &[2; 10])).unwrap();
        assert!(matches!(
            block_on(be.write(19_959, &[2; 10])),
            Err(Error::OutOfRange { .. })
        ));
        // A reader on the device sees the bytes at the composed offset.
        let d0 = graph.find("d0").unwrap();
        let reader = Backend::new(&graph, d0, RO).unwrap();
        let mut buf = [0u8; 12];
        block_on(reader.read(12_287, &mut buf)).unwrap();
        assert_eq!(buf, [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
        // A raw node over an existing node, by name.
        drop((be, reader));
        let name = graph.node(top).unwrap().name.clone();
        let again = open(&mut graph, &format!("driver=raw,offset=1,file={name}")).unwrap();
        let be = Backend::new(&graph, again, rw()).unwrap();
        let mut one = [0u8; 1];
        block_on(be.read(0, &mut one)).unwrap();
        assert_eq!(one, [1]);
    }
    assert!(mem[12_288..12_298].iter().all(|&b| b == 1));
    assert!(mem[12_288 + 19_958..12_288 + 19_968]
        .iter()
        .all(|&b| b == 2));
    assert_eq!(mem.iter().filter(|&&b| b != 0).count(), 20);
}

#[test]
fn close_and_stale_ids() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<8>::new(&mut mem, 512, RamConfig::default());
    let mut bounce = vec![0u8; 8192];
    let mut graph: Graph<4, 8> = Graph::new(&mut bounce, 4096);
    let d0 = graph.add_leaf("d0", &disk).unwrap();
    let raw = open(&mut graph, "driver=raw,offset=512,file=d0").unwrap();
    {
        let be = Backend::new(&graph, raw, rw()).unwrap();
        block_on(be.write(0, &[9; 512])).unwrap();
        drop(be);
    }
    // Not while a parent holds it.
    assert!(conflict(graph.close(d0)));
    graph.close(raw).unwrap();
    assert_eq!(graph.node(raw).err(), Some(Error::BadNode));
    assert_eq!(
        graph.node(d0).err(),
        Some(Error::BadNode),
        "the unused child closed with its parent"
    );
    assert_eq!(Backend::new(&graph, raw, RO).err(), Some(Error::BadNode));
    assert_eq!(graph.close(raw), Err(Error::BadNode));
    assert_eq!(graph.find("d0"), None);

    // Slots are reused with a new generation; the old ids stay stale.
    let d0b = graph.add_leaf("d0", &disk).unwrap();
    let rawb = open(&mut graph, "driver=raw,file=d0").unwrap();
    assert_ne!(d0b, d0);
    assert_ne!(rawb, raw);
    assert_eq!(graph.node(raw).err(), Some(Error::BadNode));
    assert_eq!(graph.node(d0).err(), Some(Error::BadNode));
    let be = Backend::new(&graph, rawb, RO).unwrap();
    let mut buf = [0u8; 512];
    block_on(be.read(512, &mut buf)).unwrap();
    assert_eq!(buf, [9; 512]);
    // (Closing a node a backend holds does not compile: close needs `&mut Graph`.)
    drop(be);
    graph.close(rawb).unwrap();
}

#[test]
fn too_many_nodes() {
    let mut mem = vec![0u8; 64 << 10];
    let disk = RamDisk::<8>::new(&mut mem, 512, RamConfig::default());
    let mut mem2 = vec![0u8; 4096];
    let disk2 = RamDisk::<8>::new(&mut mem2, 512, RamConfig::default());
    let mut graph: Graph<2, 8> = Graph::new(&mut [], 4096);
    graph.add_leaf("d0", &disk).unwrap();
    open(&mut graph, "driver=raw,read-only=on,file=d0").unwrap();
    assert!(matches!(
        open(&mut graph, "driver=raw,read-only=on,file=d0"),
        Err(Error::NoSpace { .. })
    ));
    assert!(matches!(
        graph.add_leaf("d1", &disk2),
        Err(Error::NoSpace { .. })
    ));
    let mut resolve = |_: &str| Some(&disk2 as &dyn BlockDevice);
    assert!(matches!(
        block_on(graph.open("d1", &mut resolve)),
        Err(Error::NoSpace { .. })
    ));
    assert_eq!(graph.nodes().count(), 2);
}

#[test]
fn the_qcow2_magic_wins_the_probe_whatever_version_follows() {
    use strata_block::driver::probe;
    for version in [0u32, 1, 2, 3, 4, 0xffff_ffff] {
        let mut head = [0u8; 512];
        head[..4].copy_from_slice(b"QFI\xfb");
        head[4..8].copy_from_slice(&version.to_be_bytes());
        assert_eq!(probe(&head).name, "qcow2", "version {version}");
    }
    assert_eq!(probe(b"QFI").name, "raw", "three bytes are no magic");
    assert_eq!(probe(b"QFI\xfc\0\0\0\x03").name, "raw");
}

/// QEMU's rule for probed raw images: no write may turn block 0 into another format's header,
/// or the next probe would open the disk as that format (and follow the files it names).
#[test]
fn a_probed_raw_image_never_gets_a_format_header() {
    let mut header = [0u8; 512];
    header[..4].copy_from_slice(b"QFI\xfb");
    header[7] = 3;
    for (options, probed) in [("disk", true), ("driver=raw,file=disk", false)] {
        let mut mem = vec![0u8; 64 << 10];
        let disk = RamDisk::<8>::new(&mut mem, 512, RamConfig::default());
        let mut bounce = vec![0u8; 8192];
        let mut graph: Graph<4, 8> = Graph::new(&mut bounce, 4096);
        let mut resolve = |name: &str| (name == "disk").then_some(&disk as &dyn BlockDevice);
        let root = block_on(graph.open(options, &mut resolve)).unwrap();
        assert_eq!(graph.node(root).unwrap().probed, probed, "{options}");
        let be = Backend::new(&graph, root, rw()).unwrap();
        let refused = |r: Result<(), Error>| r == Err(Error::ProbedRawHeader);
        // A whole header, the magic alone (the rest of block 0 already says version 3), and
        // the magic written last into a block 0 that holds the rest of a header.
        block_on(be.write(4, &header[4..])).unwrap();
        assert_eq!(refused(block_on(be.write(0, &header))), probed, "{options}: whole");
        assert_eq!(refused(block_on(be.write(0, &header[..4]))), probed, "{options}: magic");
        assert!(!refused(block_on(be.write(0, &header[..2]))), "{options}: half a magic");
        // Data that probes as raw, zeroing and writes past block 0 are always fine.
        block_on(be.write(0, &[0x51; 4096])).unwrap();
        block_on(be.write_zeroes(0, 512, false)).unwrap();
        block_on(be.write(512, &header)).unwrap();
        let mut back = [0u8; 4];
        block_on(be.read(0, &mut back)).unwrap();
        assert_eq!(back, [0; 4]);
        block_on(be.close()).unwrap();
    }
}
