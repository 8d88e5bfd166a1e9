//! The embedding example (`examples/embed`): its `run` opens a qcow2 overlay over a raw
//! backing file made by `qemu-img`, reads through the chain and writes into the overlay; the
//! overlay it leaves passes `qemu-img check` and reads (`qemu-img compare`) like the same write
//! done by `qemu-io`. And the example links as a bare-metal image for x86_64, aarch64 and
//! riscv64 (their Rust targets added through `scripts/setup.sh` when missing).

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use std::path::Path;
use std::process::Command;

use strata_embed::disk::SliceDisk;
use strata_embed::{Memory, PATTERN, WRITE_AT};
use strata_tests::{ensure_qemu, qemu_img, run_qemu_img, scratch};

fn qemu_io(fmt: &str, file: &Path, cmd: &str) {
    let io = std::env::var("QEMU_IO").unwrap_or_else(|_| "qemu-io".into());
    let out = Command::new(io).args(["-f", fmt, "-c", cmd]).arg(file).output().unwrap();
    assert!(out.status.success(), "qemu-io {cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn example_reads_and_writes_a_qcow2_chain() {
    ensure_qemu();
    let dir = scratch("embed-example");
    let base = dir.join("base.raw");
    let top = dir.join("top.qcow2");
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    run_qemu_img(&["create", "-q", "-f", "raw", b, "1M"]);
    qemu_io("raw", &base, "write -P 0x11 0 1M");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", t]);
    qemu_io("qcow2", &top, "write -P 0x22 64k 4k");
    // The expected result: the same write done by qemu-io on a copy.
    let expected = dir.join("expected.qcow2");
    std::fs::copy(&top, &expected).unwrap();
    qemu_io("qcow2", &expected, &format!("write -P 0x5a {WRITE_AT} {}", PATTERN.len()));

    // The overlay in a RAM disk with room to grow (new clusters go past the file's end).
    let mut top_mem = std::fs::read(&top).unwrap();
    let used = top_mem.len();
    top_mem.resize(used + (1 << 20), 0);
    let mut base_mem = std::fs::read(&base).unwrap();
    let seen = {
        let (top_disk, base_disk) = (SliceDisk::new(&mut top_mem, "top"), SliceDisk::new(&mut base_mem, "base"));
        let mut memory: Box<Memory<{ 4 * strata_embed::BOUNCE }, 8>> = Box::default();
        strata_embed::run(&top_disk, &base_disk, "base.raw", &mut memory).unwrap()
    };
    assert_eq!(seen.size, 1 << 20);
    assert_eq!(seen.before, [0x11; 16], "read from the backing file");
    assert_eq!(seen.after[..8], [0x11; 8]);
    assert_eq!(seen.after[8..], [0x5a; 8]);
    assert!(base_mem.iter().all(|&x| x == 0x11), "the backing file is not written");
    // Back to a file, without the unused tail.
    let end = top_mem.iter().rposition(|&x| x != 0).map_or(0, |i| (i + 1).next_multiple_of(512)).max(used);
    std::fs::write(&top, &top_mem[..end]).unwrap();
    run_qemu_img(&["check", "-q", t]);
    run_qemu_img(&["compare", "-q", expected.to_str().unwrap(), t]);
}

#[test]
fn read_only_example_hashes_a_qcow2_chain_as_qemu_img_reads_it() {
    ensure_qemu();
    let dir = scratch("embed-example-ro");
    let base = dir.join("base.raw");
    let top = dir.join("top.qcow2");
    let (b, t) = (base.to_str().unwrap(), top.to_str().unwrap());
    run_qemu_img(&["create", "-q", "-f", "raw", b, "1M"]);
    qemu_io("raw", &base, "write -P 0x11 0 1M");
    run_qemu_img(&["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", t]);
    qemu_io("qcow2", &top, "write -P 0x22 64k 4k");
    qemu_io("qcow2", &top, "write -z 256k 64k");
    qemu_io("qcow2", &top, "write -P 0x33 1020k 4k");
    // What the guest sees, according to qemu-img.
    let flat = dir.join("flat.raw");
    run_qemu_img(&["convert", "-O", "raw", t, flat.to_str().unwrap()]);
    let expected = strata_embed::fnv1a(strata_embed::FNV_START, &std::fs::read(&flat).unwrap());

    let (mut top_mem, mut base_mem) = (std::fs::read(&top).unwrap(), std::fs::read(&base).unwrap());
    let (top_before, base_before) = (top_mem.clone(), base_mem.clone());
    let hashed = {
        let (top_disk, base_disk) = (SliceDisk::new(&mut top_mem, "top"), SliceDisk::new(&mut base_mem, "base"));
        let mut memory: Box<Memory<{ 4 * strata_embed::BOUNCE }, 8>> = Box::default();
        strata_embed::run_read_only(&top_disk, &base_disk, "base.raw", &mut memory).unwrap()
    };
    assert_eq!(hashed.size, 1 << 20);
    assert_eq!(hashed.hash, expected, "the chain as read differs from qemu-img convert's");
    assert!(top_mem == top_before && base_mem == base_before, "a read-only open wrote to a device");
}

/// The toolchain's `rustc` (the one `cargo` runs).
fn rustc() -> String {
    std::env::var("RUSTC").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "rustc".into())
}

#[test]
fn example_links_for_three_bare_metal_targets() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Its own target directory: the `cargo test` running this holds the workspace's.
    let target_dir = root.join("target/embed");
    // The full example, and the read-only one over a strata-block without its default
    // features (no writes, compression, commands or filters); each image is checked before the
    // next build replaces it.
    for (target, read_only) in ["x86_64-unknown-none", "aarch64-unknown-none", "riscv64gc-unknown-none-elf"].into_iter().flat_map(|t| [(t, false), (t, true)]) {
        qemu_runner::install::ensure_target(rustc().as_ref(), target).unwrap();
        let features = match read_only {
            false => &["--features", "firmware"][..],
            true => &["--no-default-features", "--features", "firmware,read-only"][..],
        };
        let out = Command::new(&cargo)
            .args(["build", "-q", "-p", "strata-embed", "--release", "--target", target])
            .args(features)
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(&root)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .unwrap();
        assert!(out.status.success(), "{target} (read-only: {read_only}): {}", String::from_utf8_lossy(&out.stderr));
        let elf = target_dir.join(target).join("release/embed-firmware");
        let bytes = std::fs::read(&elf).unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF", "{}", elf.display());
    }
    let _ = qemu_img;
}
