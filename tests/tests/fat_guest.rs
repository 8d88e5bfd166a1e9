//! A FAT32 file system inside a qcow2 chain: a raw disk with an MBR whose first partition (at
//! 1 MiB) is made by `mkfs.fat -F 32` and filled by `mcopy`, under a qcow2 overlay. On the
//! host, `embedded-sdmmc` reads it through the block layer (`backend::sdmmc`) and a blocking
//! `embedded-io` stream reads the whole chain like `qemu-img convert`; in the guest, the `fat`
//! workload lists the root directory, hashes a file and writes one back into the overlay.
//! `qemu-img check` accepts the overlay afterwards and, after `qemu-img convert -O raw`,
//! `mtype`/`mdir` find the written file, while the backing file is unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use strata_block::backend::blocking::Blocking;
use strata_block::backend::sdmmc::SdmmcDevice;
use strata_block::backend::stream::BlockingStream;
use strata_block::io::cache::CacheSlot;
use strata_block::{Backend, BackendOptions, Graph};
use strata_embed::disk::SliceDisk;
use strata_tests::{boot, drive, ensure_qemu, records, run_qemu_img, scratch, sha256sum, Machine};

const MIB: usize = 1 << 20;
/// The FAT partition's first sector (1 MiB).
const PART_START: u32 = 2048;

/// Installs `dosfstools` and `mtools` through the project's installer when they are missing.
fn ensure_fat_tools() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let has = |p: &str| Command::new("sh").args(["-c", &format!("command -v {p}")]).output().is_ok_and(|o| o.status.success());
        if has("mkfs.fat") && has("mcopy") {
            return;
        }
        let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/setup.sh");
        let status = Command::new(setup).args(["dosfstools", "mtools"]).status().expect("scripts/setup.sh runs");
        assert!(status.success(), "scripts/setup.sh could not install dosfstools and mtools");
    });
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `base.raw` (64 MiB: MBR, FAT32 at 1 MiB holding HELLO.TXT and BIG.BIN) and `top.qcow2`
/// over it; returns (base, top, BIG.BIN's contents).
fn fat_chain(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    ensure_qemu();
    ensure_fat_tools();
    let base = dir.join("base.raw");
    let b = base.to_str().unwrap();
    run_qemu_img(&["create", "-q", "-f", "raw", b, "64M"]);
    // The partition table: one FAT32 (LBA) partition from 1 MiB to the end.
    let mut disk = std::fs::read(&base).unwrap();
    let sectors = (disk.len() / 512) as u32 - PART_START;
    let entry = &mut disk[446..462];
    entry[4] = 0x0c;
    entry[8..12].copy_from_slice(&PART_START.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    disk[510..512].copy_from_slice(&[0x55, 0xaa]);
    std::fs::write(&base, &disk).unwrap();
    run(Command::new("mkfs.fat").args(["-F", "32", "--mbr=y", "--offset", &PART_START.to_string(), b]));
    let hello = dir.join("hello.txt");
    std::fs::write(&hello, "hello from the host\n").unwrap();
    let big = dir.join("big.bin");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let contents: Vec<u8> = (0..300_001)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&big, &contents).unwrap();
    let image = format!("{b}@@1M");
    run(Command::new("mcopy").args(["-i", &image]).arg(&hello).arg(&big).arg("::/"));
    let top = dir.join("top.qcow2");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top.to_str().unwrap()]);
    (base, top, contents)
}

/// `mtype` of `name` in the FAT partition of `qemu-img convert -O raw` of `top`, and `mdir`.
fn read_back(top: &Path, name: &str) -> (String, String) {
    let raw = top.with_extension("converted.raw");
    run_qemu_img(&["convert", "-O", "raw", top.to_str().unwrap(), raw.to_str().unwrap()]);
    let image = format!("{}@@1M", raw.display());
    let text = run(Command::new("mtype").args(["-i", &image, &format!("::/{name}")]));
    let dir = run(Command::new("mdir").args(["-i", &image, "::/"]));
    (text, dir)
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn fat32_in_a_qcow2_chain_on_the_host() {
    use embedded_io::{Read, Seek, SeekFrom};
    use embedded_sdmmc::{Mode, TimeSource, Timestamp, VolumeIdx, VolumeManager};
    struct Epoch;
    impl TimeSource for Epoch {
        fn get_timestamp(&self) -> Timestamp {
            Timestamp { year_since_1970: 56, zero_indexed_month: 0, zero_indexed_day: 0, hours: 0, minutes: 0, seconds: 0 }
        }
    }
    let dir = scratch("fat-host");
    let (base, top, big) = fat_chain(&dir);
    let base_before = sha256sum(&base);
    let mut top_mem = std::fs::read(&top).unwrap();
    let used = top_mem.len();
    top_mem.resize(used + 4 * MIB, 0);
    let mut base_mem = std::fs::read(&base).unwrap();
    {
        let (top_disk, base_disk) = (SliceDisk::new(&mut top_mem, "top"), SliceDisk::new(&mut base_mem, "base"));
        let slots: Vec<CacheSlot> = (0..16).map(|_| CacheSlot::new()).collect();
        let mut bounce = vec![0u8; 8 * 4096];
        let mut graph: Graph<'_, 8, 16> = Graph::new(&mut bounce, 4096);
        graph.set_metadata_cache(&slots);
        let mut resolve = |n: &str| match n {
            "top" => Some(&top_disk as _),
            "base.raw" => Some(&base_disk as _),
            _ => None,
        };
        let root = futures_lite_block_on(graph.open("driver=qcow2,file=top", &mut resolve)).unwrap();
        let backend = Backend::new(&graph, root, BackendOptions::default()).unwrap();
        let nothing = || {};
        // The chain as a blocking stream reads as the backing file (the overlay is empty).
        let mut stream = BlockingStream::new(&backend, Blocking::new(&nothing));
        stream.seek(SeekFrom::Start(MIB as u64)).unwrap();
        let mut boot_sector = [0u8; 512];
        stream.read_exact(&mut boot_sector).unwrap();
        assert_eq!(&boot_sector[..], &std::fs::read(&base).unwrap()[MIB..MIB + 512]);
        // The file system through embedded-sdmmc.
        let volumes: VolumeManager<_, _, 2, 2, 1> = VolumeManager::new_with_limits(SdmmcDevice::new(&backend, Blocking::new(&nothing)), Epoch, 0);
        let volume = volumes.open_volume(VolumeIdx(0)).unwrap();
        let rootdir = volume.open_root_dir().unwrap();
        let mut names = Vec::new();
        rootdir
            .iterate_dir(|e| {
                names.push((e.name.to_string(), e.size));
                ControlFlow::Continue(())
            })
            .unwrap();
        assert!(names.contains(&("HELLO.TXT".into(), 20)), "{names:?}");
        assert!(names.contains(&("BIG.BIN".into(), big.len() as u32)), "{names:?}");
        let f = rootdir.open_file_in_dir("BIG.BIN", Mode::ReadOnly).unwrap();
        let mut read = Vec::new();
        let mut buf = [0u8; 4096];
        while !f.is_eof() {
            let n = f.read(&mut buf).unwrap();
            read.extend_from_slice(&buf[..n]);
        }
        f.close().unwrap();
        assert_eq!(read, big);
        let out = rootdir.open_file_in_dir("HOST.TXT", Mode::ReadWriteCreateOrTruncate).unwrap();
        out.write(b"written through the overlay\n").unwrap();
        out.close().unwrap();
        rootdir.close().unwrap();
        volume.close().unwrap();
        drop(volumes);
        futures_lite_block_on(backend.close()).unwrap();
    }
    assert_eq!(base_mem, std::fs::read(&base).unwrap(), "the backing file is not written");
    let end = top_mem.iter().rposition(|&x| x != 0).map_or(0, |i| (i + 1).next_multiple_of(512)).max(used);
    std::fs::write(&top, &top_mem[..end]).unwrap();
    run_qemu_img(&["check", "-q", top.to_str().unwrap()]);
    let (text, listing) = read_back(&top, "HOST.TXT");
    assert_eq!(text, "written through the overlay\n");
    assert!(listing.contains("HOST     TXT"), "{listing}");
    assert_eq!(sha256sum(&base), base_before);
}

/// Polls a future to completion (the RAM disks finish requests as they are submitted).
fn futures_lite_block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    strata_embed::block_on(f)
}

#[test]
fn fat_workload_in_the_guest() {
    let dir = scratch("fat-guest");
    let (base, top, big) = fat_chain(&dir);
    let base_before = sha256sum(&base);
    let r = boot(Machine::Microvm, vec![drive(&top, "top", false)], "fat top --file BIG.BIN --write OUT.TXT");
    assert!(r.is_ok(), "{}\n{}", r.summary(), r.console);
    let entries: Vec<_> = records(&r, "fat_entry").iter().map(|e| (e["name"].as_str().unwrap().to_string(), e["size"].as_u64().unwrap())).collect();
    assert!(entries.contains(&("HELLO.TXT".into(), 20)), "{entries:?}");
    assert!(entries.contains(&("BIG.BIN".into(), big.len() as u64)), "{entries:?}");
    let want = hex(&Sha256::digest(&big));
    let fat = records(&r, "fat");
    assert_eq!(fat.len(), 1, "{}", r.console);
    assert_eq!(fat[0]["digest"], want.as_str());
    assert_eq!(fat[0]["bytes"], big.len() as u64);
    run_qemu_img(&["check", "-q", top.to_str().unwrap()]);
    let (text, listing) = read_back(&top, "OUT.TXT");
    assert_eq!(text, format!("sha256 {want} BIG.BIN\n"));
    assert!(listing.contains("OUT      TXT"), "{listing}");
    assert_eq!(sha256sum(&base), base_before, "the backing file is not written");
}
