//! A seeded mutation harness over qcow2 images (stable Rust; `cargo fuzz` targets are the
//! coverage-guided complement). Seed images made by `qemu-img`/`qemu-io` (v2 and v3, extended L2,
//! 1-bit refcounts, compressed clusters, an internal snapshot) are mutated where parsers look:
//! header fields and extensions, L1 and L2 entries, the refcount table and blocks, the snapshot
//! table, and anywhere at random. Each mutant is read whole by Strata (on a thread under a
//! timeout) and converted by `qemu-img`; the oracle is:
//! - no panic and no hang, ever;
//! - where both read the image, the same bytes (a typed error from Strata is always allowed:
//!   Strata may refuse what QEMU accepts, never read it differently);
//! - some mutants are then written to through `img io` (a few writes, a flush, a clean close):
//!   no panic, no hang.
//!
//! The budget: `STRATA_MUTATE_SECS` (default 10) or `STRATA_MUTATE_ITERATIONS`, and the seed
//! `STRATA_MUTATE_SEED` (default 1); `scripts/mutate.sh` runs it for longer. A failing mutant is
//! kept under `target/strata/mutants/` with its seed and iteration in the name, to become a
//! regression test; with `STRATA_MUTATE_KEEP_LAX` set, so is every mutant Strata reads and
//! qemu-img refuses (`lax-*`), to study.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod qcow2_util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qcow2_util::*;
use qemu_runner::img::image::{self, OpenOptions};
use qemu_runner::img::rng::Rng;

/// The seed images: small, standalone (no backing file), covering the structures parsers read.
fn seeds(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let data = |f: &Path, cs: u64| {
        let cmds: Vec<String> = vec![
            "write -P 0x11 0 8k".into(),
            format!("write -P 0x22 {} 4k", cs + 512),
            "write -P 0x33 1M 64k".into(),
            "write -z 2M 64k".into(),
            format!("write -P 0x44 {} 1k", 4 * MIB - 1024),
        ];
        qio_out("qcow2", f, &cmds);
    };
    for (name, opts, cs) in [
        ("v3.qcow2", "cluster_size=64k", 64 * KIB),
        ("v2.qcow2", "compat=0.10,cluster_size=4k", 4 * KIB),
        ("ext.qcow2", "cluster_size=32k,extended_l2=on", 32 * KIB),
        ("rc1.qcow2", "cluster_size=4k,refcount_bits=1", 4 * KIB),
    ] {
        let f = dir.join(name);
        create(&f, opts, "4M", &[]);
        data(&f, cs);
        out.push(f);
    }
    // Compressed clusters.
    let raw = dir.join("src.raw");
    random_raw_disk(&raw, 4 * MIB, 7);
    let z = dir.join("zlib.qcow2");
    qimg(&["convert", "-q", "-c", "-O", "qcow2", "-o", "cluster_size=4k", raw.to_str().unwrap(), z.to_str().unwrap()]);
    out.push(z);
    // An internal snapshot, then changes after it (shared clusters, a second L1).
    let s = dir.join("snap.qcow2");
    create(&s, "cluster_size=4k", "4M", &[]);
    data(&s, 4 * KIB);
    qimg(&["snapshot", "-c", "one", s.to_str().unwrap()]);
    qio_out("qcow2", &s, &["write -P 0x55 0 16k"]);
    out.push(s);
    out
}

/// Big-endian helpers over a byte vector (0 past the end).
fn get64(b: &[u8], at: u64) -> u64 {
    b.get(at as usize..at as usize + 8).map_or(0, |s| u64::from_be_bytes(s.try_into().unwrap()))
}
fn get32(b: &[u8], at: u64) -> u32 {
    b.get(at as usize..at as usize + 4).map_or(0, |s| u32::from_be_bytes(s.try_into().unwrap()))
}

/// Values that tend to sit on a boundary of some check.
const INTERESTING: [u64; 14] = [0, 1, 7, 8, 9, 511, 512, 4095, 4096, 65535, 65536, 1 << 31, u64::MAX >> 1, u64::MAX];

/// Overwrites a field of `width` bytes at `at` with a mutated value.
fn mutate_field(b: &mut [u8], at: u64, width: usize, rng: &mut Rng) {
    let at = at as usize;
    let Some(field) = b.get_mut(at..at + width) else { return };
    let old = field.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
    let new = match rng.below(6) {
        0 => old ^ (1 << rng.below(width as u64 * 8)),
        1 => INTERESTING[rng.below(INTERESTING.len() as u64) as usize],
        2 => old.wrapping_add(rng.below(16) + 1),
        3 => old.wrapping_sub(rng.below(16) + 1),
        4 => old.wrapping_add(512 * (rng.below(256) + 1)),
        _ => rng.next_u64(),
    };
    let bytes = new.to_be_bytes();
    field.copy_from_slice(&bytes[8 - width..]);
}

/// Where the structures are, read from the (unmutated) header.
struct Layout {
    cluster: u64,
    l1: u64,
    l1_entries: u64,
    refcount_table: u64,
    snapshots: u64,
    header_len: u64,
}

fn layout(b: &[u8]) -> Layout {
    let version = get32(b, 4);
    Layout {
        cluster: 1u64 << get32(b, 20).min(21),
        l1: get64(b, 40),
        l1_entries: u64::from(get32(b, 36)),
        refcount_table: get64(b, 48),
        snapshots: get64(b, 64),
        header_len: if version >= 3 { u64::from(get32(b, 100)).max(104) } else { 72 },
    }
}

/// Applies one to four mutations to `b`, chosen by `rng`.
fn mutate(b: &mut Vec<u8>, rng: &mut Rng) {
    let l = layout(b);
    let file_len = b.len() as u64;
    let entry_in = |rng: &mut Rng, table: u64, entries: u64| table + 8 * rng.below(entries.max(1));
    for _ in 0..=rng.below(4) {
        match rng.below(10) {
            // A header field (all of the fixed header, 4-byte aligned, as u32 or u64).
            0 | 1 => {
                let at = 4 * rng.below(l.header_len / 4);
                mutate_field(b, at, if rng.below(2) == 0 { 4 } else { 8 }, rng);
            }
            // The header extension area (types, lengths, contents).
            2 => {
                let at = l.header_len + 4 * rng.below(64);
                mutate_field(b, at, 4, rng);
            }
            // An L1 entry.
            3 => mutate_field(b, entry_in(rng, l.l1, l.l1_entries), 8, rng),
            // An entry of an L2 table the L1 table points at.
            4 => {
                let l2 = get64(b, entry_in(rng, l.l1, l.l1_entries)) & 0x00ff_ffff_ffff_fe00;
                if l2 != 0 {
                    mutate_field(b, l2 + 8 * rng.below(l.cluster / 8), 8, rng);
                }
            }
            // A refcount table entry, or a refcount in the first block.
            5 => {
                if rng.below(2) == 0 {
                    mutate_field(b, entry_in(rng, l.refcount_table, 8), 8, rng);
                } else {
                    let block = get64(b, l.refcount_table) & !(l.cluster - 1);
                    mutate_field(b, block + 2 * rng.below(64), 2, rng);
                }
            }
            // The snapshot table.
            6 => mutate_field(b, l.snapshots + 4 * rng.below(32), 4, rng),
            // Truncate or extend the file.
            7 => {
                let len = match rng.below(3) {
                    0 => file_len.saturating_sub(rng.below(l.cluster * 4)),
                    1 => file_len + rng.below(l.cluster * 4),
                    _ => l.cluster * rng.below(file_len / l.cluster.max(1) + 1),
                };
                b.resize(len as usize, 0);
            }
            // Anywhere at all.
            _ => {
                if !b.is_empty() {
                    let at = rng.below(b.len() as u64) as usize;
                    b[at] ^= 1 << rng.below(8);
                }
            }
        }
    }
}

/// Strata's reading of `file` as qcow2: the bytes, or the error text ("timed out (hang)" and
/// "panicked" are the harness's own).
fn strata_bytes(file: &Path) -> Result<Result<Vec<u8>, String>, String> {
    let f = file.to_str().unwrap().to_string();
    with_timeout(move || {
        let opts = OpenOptions { read_only: true, format: Some("qcow2".into()), cache_bytes: Some(64 * KIB), ..OpenOptions::default() };
        image::with_image(&f, &opts, |img| {
            let size = img.backend.size();
            if size > 64 * MIB {
                // A mutated size: read only the start (the rest is the same code).
                let mut buf = vec![0u8; MIB as usize];
                image::block_on(img.backend.read(0, &mut buf)).map_err(|e| qemu_runner::img::ImgError::failed(e.to_string()))?;
                return Ok(None);
            }
            let mut out = vec![0u8; size as usize];
            for (i, chunk) in out.chunks_mut(MIB as usize).enumerate() {
                image::block_on(img.backend.read(i as u64 * MIB, chunk)).map_err(|e| qemu_runner::img::ImgError::failed(e.to_string()))?;
            }
            Ok(Some(out))
        })
        .map_err(|e| e.to_string())
    })
    .map(|r| r.and_then(|o| o.ok_or_else(|| "large: compared only for panics".to_string())))
}

/// qemu-img's reading of `file` as qcow2, if it reads it (and it is no larger than 64 MiB).
fn qemu_bytes(file: &Path) -> Option<Vec<u8>> {
    let out = file.with_extension("qemu.raw");
    let _ = std::fs::remove_file(&out);
    let ok = std::process::Command::new(qemu_img())
        .args(["convert", "-f", "qcow2", "-O", "raw", file.to_str().unwrap(), out.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let bytes = ok.then(|| std::fs::read(&out).ok()).flatten();
    let _ = std::fs::remove_file(&out);
    bytes.filter(|b| b.len() as u64 <= 64 * MIB)
}

/// A few writes, a flush and a clean close through `img io` on `file`: must not panic or hang.
fn strata_writes(file: &Path, rng: &mut Rng) -> Result<i32, String> {
    let f = file.to_str().unwrap().to_string();
    let cmds: Vec<String> = (0..3)
        .map(|_| format!("write -P {} {} {}", rng.below(256), rng.below(4 * MIB), 1 + rng.below(70_000)))
        .chain(["flush".to_string()])
        .collect();
    with_timeout(move || {
        let mut argv = vec!["io".to_string(), "-f".into(), "qcow2".into(), "--cache-size".into(), "64k".into()];
        for c in cmds {
            argv.extend(["-c".into(), c]);
        }
        argv.push(f);
        qemu_runner::img::main(&argv)
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn mutated_images_never_panic_hang_or_read_differently() {
    let dir = scratch("qcow2-mutate");
    let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/strata/mutants");
    let seeds = seeds(&dir);
    let originals: Vec<Vec<u8>> = seeds.iter().map(|s| std::fs::read(s).unwrap()).collect();
    let seed = env_u64("STRATA_MUTATE_SEED").unwrap_or(1);
    let budget = Duration::from_secs(env_u64("STRATA_MUTATE_SECS").unwrap_or(10));
    let max_iterations = env_u64("STRATA_MUTATE_ITERATIONS").unwrap_or(u64::MAX);
    let mut rng = Rng::from_state(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let start = Instant::now();
    let (mut runs, mut both_read, mut refused, mut qemu_refused, mut writes) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    while runs < max_iterations && start.elapsed() < budget {
        let which = rng.below(seeds.len() as u64) as usize;
        let mut bytes = originals[which].clone();
        mutate(&mut bytes, &mut rng);
        let mutant = dir.join("mutant.qcow2");
        std::fs::write(&mutant, &bytes).unwrap();
        let name = seeds[which].file_name().unwrap().to_string_lossy().into_owned();
        let mut fail = |why: String| {
            std::fs::create_dir_all(&keep).unwrap();
            let kept = keep.join(format!("{name}-seed{seed}-run{runs}.qcow2"));
            std::fs::write(&kept, &bytes).unwrap();
            failures.push(format!("{}: {why}", kept.display()));
        };
        match strata_bytes(&mutant) {
            Err(harness) => fail(harness),
            Ok(ours) => match (ours, qemu_bytes(&mutant)) {
                (Ok(ours), Some(theirs)) => {
                    both_read += 1;
                    if ours != theirs {
                        let at = ours.iter().zip(&theirs).position(|(a, b)| a != b);
                        fail(format!("read differently from qemu-img (sizes {} and {}, first difference at {at:?})", ours.len(), theirs.len()));
                    }
                }
                (Ok(_), None) => {
                    qemu_refused += 1;
                    // Strata laxer than QEMU: kept for study when asked (not a failure).
                    if std::env::var_os("STRATA_MUTATE_KEEP_LAX").is_some() {
                        std::fs::create_dir_all(&keep).unwrap();
                        std::fs::write(keep.join(format!("lax-{name}-seed{seed}-run{runs}.qcow2")), &bytes).unwrap();
                    }
                }
                (Err(_), _) => refused += 1,
            },
        }
        if rng.below(4) == 0 {
            writes += 1;
            if let Err(harness) = strata_writes(&mutant, &mut rng) {
                fail(format!("writing: {harness}"));
            }
        }
        runs += 1;
    }
    eprintln!(
        "mutate: seed {seed}: {runs} mutants in {:.1} s: {both_read} read alike by both, {refused} refused by Strata, \
         {qemu_refused} read by Strata and refused by qemu-img, {writes} written to; {} failures",
        start.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "{} failing mutants:\n{}", failures.len(), failures.join("\n"));
}
