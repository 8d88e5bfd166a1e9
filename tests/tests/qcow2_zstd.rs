//! zstd-compressed qcow2 images (`qemu-img convert -c -o compression_type=zstd`) read as
//! qemu-img reads them: mixed data (random, text-like, zeros, repeating patterns, clusters
//! partly zero) at cluster sizes 4 KiB, 64 KiB and 2 MiB, with and without extended L2
//! entries; `img convert -O raw` equal to qemu-img's, `img compare` against the source, reads of
//! parts of clusters (through the decoder's window); a compressed cluster cut short or mutated
//! gives an error (where qemu-img also fails) and never a panic or a hang; the guest's `sha256`
//! of such an image equals the host's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "qcow2_util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};

use qemu_runner::img::block::dev::file::{HostFile, HostFileOptions};
use qemu_runner::img::block::dev::BlockDevice;
use qemu_runner::img::block::io::cache::CacheSlot;
use qemu_runner::img::block::io::zstd::ZstdDecoder;
use qemu_runner::img::block::{Backend, BackendOptions, Error, Graph};
use qemu_runner::img::image::{self, OpenOptions};
use strata_tests::{boot, drive, records, scratch, Machine};
use util::*;

/// A deterministic pseudo-random generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// `size` bytes of mixed data in pieces of 1-300 KiB, so pieces straddle clusters of every
/// size: random, text-like, zeros, short and long repeating patterns.
fn mixed(size: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the ", "qcow2 ", "cluster ", "zstd ", "frame ", "of ", "a ", "\n", "block ", "Strata ",
        "0x1f2e ", "read ",
    ];
    let mut r = Rng(seed);
    let mut v = Vec::with_capacity(size + 300 * 1024);
    let mut kind = 0;
    while v.len() < size {
        let len = 1024 + (r.next() % (300 * 1024)) as usize;
        let end = v.len() + len;
        match kind % 5 {
            0 => v.extend((0..len).map(|_| r.next() as u8)),
            1 => {
                while v.len() < end {
                    v.extend_from_slice(WORDS[(r.next() % WORDS.len() as u64) as usize].as_bytes());
                }
                v.truncate(end);
            }
            2 => v.resize(end, 0),
            3 => v.extend((0..len).map(|i| (i % 13) as u8 ^ 0x40)),
            _ => {
                let period: Vec<u8> = (0..1 + r.next() % 5000).map(|_| r.next() as u8).collect();
                v.extend(period.iter().cycle().take(len));
            }
        }
        kind += 1 + (r.next() % 2) as usize;
    }
    v.truncate(size);
    v
}

/// The source raw file, and a zstd-compressed qcow2 made of it by qemu-img with `opts`; `None`
/// where this QEMU lacks zstd.
fn zstd_image(dir: &Path, name: &str, opts: &str, data: &[u8]) -> Option<(PathBuf, PathBuf)> {
    let raw = dir.join(format!("{name}.raw"));
    std::fs::write(&raw, data).unwrap();
    let img = dir.join(format!("{name}.qcow2"));
    let o = format!("compression_type=zstd,{opts}");
    if !qimg_ok(&[
        "convert",
        "-q",
        "-c",
        "-O",
        "qcow2",
        "-o",
        &o,
        raw.to_str().unwrap(),
        img.to_str().unwrap(),
    ]) {
        eprintln!("qemu-img here cannot write zstd images; skipped");
        return None;
    }
    assert!(qimg(&["info", img.to_str().unwrap()]).contains("compression type: zstd"));
    Some((raw, img))
}

/// Reads `[at, at + len)` of `img` through `img`'s stack.
fn read_at(img: &Path, at: u64, len: usize) -> Result<Vec<u8>, String> {
    let s = img.to_str().unwrap().to_string();
    with_timeout(move || {
        image::with_image(
            &s,
            &OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            },
            |i| {
                let mut b = vec![0u8; len];
                image::block_on(i.backend.read(at, &mut b))
                    .map_err(|e| qemu_runner::img::ImgError::failed(e.to_string()))?;
                Ok(b)
            },
        )
        .map_err(|e| e.to_string())
    })?
}

#[test]
fn zstd_images_read_as_qemu_img_reads_them() {
    let dir = scratch("qcow2-zstd");
    let data = mixed(7 * MIB as usize + 12345, 1);
    for (name, opts) in [
        ("c4k", "cluster_size=4k"),
        ("c64k", "cluster_size=64k"),
        ("c2m", "cluster_size=2M"),
        ("ext64k", "cluster_size=64k,extended_l2=on"),
        ("ext2m", "cluster_size=2M,extended_l2=on"),
    ] {
        let Some((raw, img)) = zstd_image(&dir, name, opts, &data) else {
            return;
        };
        check_convert(&img, &[]);
        check_map(&img);
        assert_eq!(
            util::img(&[
                "compare",
                "-q",
                img.to_str().unwrap(),
                raw.to_str().unwrap()
            ]),
            0,
            "{name}: img compare"
        );
        // Parts of clusters (the decoder's window), across cluster ends, and whole runs.
        let mut r = Rng(5);
        for _ in 0..12 {
            let at = r.next() % (data.len() as u64 - 70_000);
            let len = 1 + (r.next() % 70_000) as usize;
            let got = read_at(&img, at, len).unwrap();
            assert!(
                got[..] == data[at as usize..at as usize + len],
                "{name}: read {len} at {at}"
            );
        }
    }
}

/// The first compressed L2 entry of `img` (64 KiB clusters, standard L2): its L2 position and
/// value.
fn first_compressed(img: &Path) -> (u64, u64) {
    let l1 = be64(img, 40);
    let l2 = be64(img, l1) & 0x00ff_ffff_ffff_fe00;
    for i in 0..8192 {
        let e = be64(img, l2 + i * 8);
        if e & (1 << 62) != 0 {
            return (l2 + i * 8, e);
        }
    }
    panic!("no compressed cluster in {}", img.display());
}

/// A way to damage a copy of an image.
type Damage = Box<dyn Fn(&Path)>;

#[test]
fn damaged_zstd_clusters_are_errors() {
    let dir = scratch("qcow2-zstd-damaged");
    // Text-like data first (Huffman literals and sequences): its cluster takes many sectors.
    let mut r = Rng(9);
    let words = [
        "alpha ", "beta ", "gamma\n", "delta ", "qcow2 ", "zstd ", "7 ", "cluster ",
    ];
    let mut data: Vec<u8> = Vec::new();
    while data.len() < 64 * 1024 {
        data.extend_from_slice(words[(r.next() % 8) as usize].as_bytes());
        data.extend_from_slice(format!("{} ", r.next() % 1000).as_bytes());
    }
    data.truncate(64 * 1024);
    data.extend(mixed(MIB as usize, 2));
    let Some((_, img)) = zstd_image(&dir, "base", "cluster_size=64k", &data) else {
        return;
    };
    let (entry_at, entry) = first_compressed(&img);
    let x = 62 - (16 - 8);
    let host = entry & ((1u64 << x) - 1);
    let sectors = ((entry >> x) & 0xff) + 1;
    assert!(
        sectors > 2,
        "the first cluster should take several sectors, not {sectors}"
    );
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "magic",
            Box::new(move |f: &Path| patch(f, host, &[0, 0, 0, 0])),
            "bad magic",
        ),
        (
            "cut-short",
            Box::new(move |f: &Path| {
                let cut = (entry & !(0xffu64 << x)) | (1u64 << x);
                patch(f, entry_at, &cut.to_be_bytes());
            }),
            "ends before a whole cluster",
        ),
        (
            "reserved-block-type",
            Box::new(move |f: &Path| {
                // The first block header follows the 4-byte magic and the frame header.
                let mut b = [0u8; 1];
                let fd = std::fs::read(f).unwrap();
                let d = fd[host as usize + 4];
                let fcs = [usize::from(d & 0x20 != 0), 2, 4, 8][usize::from(d >> 6)];
                let hlen = 1 + usize::from(d & 0x20 == 0) + [0, 1, 2, 4][usize::from(d & 3)] + fcs;
                b[0] = fd[host as usize + 4 + hlen] | 0b110;
                patch(f, host + 4 + hlen as u64, &b);
            }),
            "reserved block type",
        ),
    ];
    for (name, damage, what) in cases {
        let f = copy_as(&img, &format!("{name}.qcow2"));
        damage(&f);
        assert_refused(&f, what);
        let out = dir.join(format!("{name}.out"));
        assert!(
            !qimg_ok(&[
                "convert",
                "-O",
                "raw",
                f.to_str().unwrap(),
                out.to_str().unwrap()
            ]),
            "{name}: qemu-img reads it"
        );
        // The other clusters still read.
        assert!(read_at(&f, 128 * 1024, 4096).is_ok(), "{name}");
    }
    // Random damage inside the first compressed cluster, read by both: an error where
    // qemu-img fails, the same bytes where it reads (no checksum in QEMU's frames), never a
    // panic or a hang.
    let f = copy_as(&img, "flips.qcow2");
    let out = dir.join("flips.out");
    let original = std::fs::read(&img).unwrap();
    let mut errors = 0;
    let rounds: usize = std::env::var("ZSTD_FLIP_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    for round in 0..rounds {
        let mut bytes = original.clone();
        for _ in 0..1 + r.next() % 6 {
            let at = host as usize + (r.next() % (sectors * 512 - (host % 512))) as usize;
            bytes[at] ^= 1 << (r.next() % 8);
        }
        std::fs::write(&f, &bytes).unwrap();
        // The damage may reach the next compressed cluster (they are packed): read all.
        let ours = read_at(&f, 0, data.len());
        let theirs = qimg_ok(&[
            "convert",
            "-O",
            "raw",
            f.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        match ours {
            Ok(b) => {
                assert!(theirs, "round {round}: qemu-img refuses what Strata reads");
                assert!(
                    b == std::fs::read(&out).unwrap(),
                    "round {round}: Strata and qemu-img read different bytes"
                );
            }
            Err(e) => {
                assert!(
                    !e.contains("panicked") && !e.contains("hang"),
                    "round {round}: {e}"
                );
                // libzstd is lenient where Strata is not: its fast Huffman decoders check only
                // that each stream produced its literals, not that it ended there (and its
                // double-symbol decoder lets the last code run past the start), so a damaged
                // Huffman stream may decode to other bytes there; Strata refuses it.
                let lenient = e.contains("Huffman stream");
                assert!(
                    !theirs || lenient,
                    "round {round}: qemu-img reads what Strata refuses ({e})"
                );
                errors += 1;
            }
        }
    }
    assert!(errors > 0, "no damaged cluster was refused");
}

/// The decoder's memory is the caller's: with no decoder a zstd read is `NoSpace`; a window
/// smaller than the cluster serves whole-cluster reads (decoded into the caller's buffer) and
/// refuses reads of part of a cluster with `NoSpace`; one of a cluster serves both.
#[test]
fn decoder_memory_is_given_and_bounded() {
    let dir = scratch("qcow2-zstd-memory");
    let data = mixed(2 * MIB as usize, 4);
    let Some((_, img)) = zstd_image(&dir, "m", "cluster_size=256k", &data) else {
        return;
    };
    let file = HostFile::open(
        &img,
        &HostFileOptions {
            read_only: true,
            ..HostFileOptions::default()
        },
    )
    .unwrap();
    let cs = 256 * 1024;
    for window in [None, Some(0usize), Some(64 * 1024), Some(cs)] {
        let slots: Vec<CacheSlot> = (0..64).map(|_| CacheSlot::new()).collect();
        let mut mem = vec![0u8; window.unwrap_or(0)];
        let mut decoder = Box::new(ZstdDecoder::new());
        decoder.set_window(&mut mem);
        let decoders = std::slice::from_ref(&*decoder);
        let mut bounce = vec![0u8; 8 * 64 * 1024 + 4096];
        let mut graph: Graph<'_, 16, 64> = Graph::new(&mut bounce, 64 * 1024);
        graph.set_metadata_cache(&slots);
        if window.is_some() {
            graph.set_zstd_decoders(decoders);
        }
        let mut resolve = |name: &str| -> Option<&dyn BlockDevice> {
            (name == "img").then_some(&file as &dyn BlockDevice)
        };
        let root = image::block_on(graph.open("driver=qcow2,read-only=on,file=img", &mut resolve))
            .unwrap();
        let backend = Backend::new(
            &graph,
            root,
            BackendOptions {
                read_only: true,
                ..BackendOptions::default()
            },
        )
        .unwrap();
        // The first cluster whose data is not all zeros (qemu-img leaves zero clusters out).
        let c = (0..data.len() / cs)
            .find(|&c| data[c * cs..(c + 1) * cs].iter().any(|&b| b != 0))
            .unwrap();
        let mut whole = vec![0u8; cs];
        let r = image::block_on(backend.read((c * cs) as u64, &mut whole));
        let mut part = vec![0u8; 5000];
        let p = image::block_on(backend.read((c * cs + 777) as u64, &mut part));
        match window {
            None => {
                assert!(matches!(r, Err(Error::NoSpace { .. })), "{r:?}");
                assert!(matches!(p, Err(Error::NoSpace { .. })), "{p:?}");
            }
            Some(w) => {
                r.unwrap();
                assert!(whole[..] == data[c * cs..(c + 1) * cs]);
                if w < cs {
                    assert!(matches!(p, Err(Error::NoSpace { .. })), "window {w}: {p:?}");
                } else {
                    p.unwrap();
                    assert!(part[..] == data[c * cs + 777..c * cs + 777 + 5000]);
                }
            }
        }
        drop(backend);
    }
}

/// Boots `sha256 top` with `top` as the drive `top` and checks the guest's digest.
fn check_guest(top: &Path) {
    let r = boot(
        Machine::Microvm,
        vec![drive(top, "top", false)],
        "sha256 top",
    );
    assert!(
        r.is_ok(),
        "{}: {}\n{}",
        top.display(),
        r.summary(),
        r.console
    );
    let digest = records(&r, "sha256");
    assert_eq!(digest.len(), 1, "{}", r.console);
    assert_eq!(
        digest[0]["digest"],
        host_digest(top),
        "guest and host disagree on {}",
        top.display()
    );
}

#[test]
fn guest_reads_zstd_images() {
    let dir = scratch("guest-zstd");
    let data = mixed(5 * MIB as usize, 3);
    for (name, opts) in [("g64k", "cluster_size=64k"), ("g2m", "cluster_size=2M")] {
        let Some((_, img)) = zstd_image(&dir, name, opts, &data) else {
            return;
        };
        check_guest(&img);
    }
}
