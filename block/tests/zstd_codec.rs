//! The zstd decoder (`strata_block::codec::zstd`) against the reference encoder: data of
//! several kinds compressed by the `zstd` command at levels 1 to 22 (long-distance matching,
//! small blocks, with and without checksums, several frames in a row) decodes to the same
//! bytes; mutated and truncated frames give errors or, where no check can tell, some output,
//! never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: a test

use std::io::Write;
use std::process::{Command, Stdio};

use strata_block::codec::zstd::{decode_exact, Decoder};

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

/// Text-like data: words from a small vocabulary with skewed frequencies.
fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the ",
        "block ",
        "layer ",
        "qcow2 ",
        "cluster ",
        "of ",
        "a ",
        "zstd ",
        "frame\n",
        "and ",
        "Strata ",
        "reads ",
        "1234 ",
        "{\"k\": 7}, ",
    ];
    let mut r = Rng(seed);
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        let x = r.next();
        let i = ((x % 97) as usize * (x % 89) as usize) % WORDS.len();
        v.extend_from_slice(WORDS[i].as_bytes());
        if x.is_multiple_of(31) {
            v.extend_from_slice(format!("{}", x % 100000).as_bytes());
        }
    }
    v.truncate(len);
    v
}

/// Data of every kind the decoder meets in images, `len` bytes.
fn datasets(len: usize) -> Vec<(&'static str, Vec<u8>)> {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let random: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
    let pattern: Vec<u8> = (0..len)
        .map(|i| b"0123456789abcdefghij"[i % 20] ^ ((i / 4096) as u8))
        .collect();
    let mut mixed = Vec::with_capacity(len);
    let mut i = 0;
    while mixed.len() < len {
        let piece = match i % 4 {
            0 => text(3000 + i * 17, i as u64 + 1),
            1 => vec![0u8; 5000],
            2 => random[..2000.min(len)].to_vec(),
            _ => (0..4000).map(|j| (j % 7) as u8).collect(),
        };
        mixed.extend_from_slice(&piece);
        i += 1;
    }
    mixed.truncate(len);
    // Few distinct bytes with skewed counts: Huffman literals, small alphabets.
    let skewed: Vec<u8> = (0..len)
        .map(|_| {
            let x = r.next();
            if x % 8 < 5 {
                b'a'
            } else {
                b"bcde"[(x >> 8) as usize % 4]
            }
        })
        .collect();
    vec![
        ("text", text(len, 7)),
        ("zeros", vec![0u8; len]),
        ("random", random),
        ("pattern", pattern),
        ("mixed", mixed),
        ("skewed", skewed),
    ]
}

/// Installs the `zstd` command through the project's one installer (`scripts/setup.sh`, as the
/// runner installs QEMU) when a fresh machine lacks it.
fn ensure_zstd() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if Command::new("zstd").arg("--version").output().is_ok_and(|o| o.status.success()) {
            return;
        }
        let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/setup.sh");
        let status = Command::new(setup).status().expect("scripts/setup.sh runs");
        assert!(status.success(), "scripts/setup.sh could not install the zstd command");
    });
}

/// `zstd` with `args` over `data`.
fn compress(data: &[u8], args: &[&str]) -> Vec<u8> {
    ensure_zstd();
    let mut child = Command::new("zstd")
        .args(args)
        .args(["-q", "-c", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the zstd command (Debian package zstd) is needed by this test");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "zstd {args:?} failed");
    out.stdout
}

fn decode(frame: &[u8], len: usize) -> Result<Vec<u8>, strata_block::codec::zstd::ZstdError> {
    let mut out = vec![0u8; len];
    let mut d = Box::new(Decoder::new());
    decode_exact(&mut d, frame, &mut out)?;
    Ok(out)
}

#[test]
fn reference_frames_decode_identically() {
    let settings: &[&[&str]] = &[
        &["-1"],
        &["-3"],
        &["-3", "--no-check"],
        &["-9"],
        &["-19"],
        &["--ultra", "-22", "--long=24"],
        &["-5", "-B4096"],
        &["--fast=5"],
        &["-3", "--no-check", "--no-content-size"],
    ];
    for len in [4096usize, 65536, 300 * 1024 + 17] {
        for (name, data) in datasets(len) {
            for args in settings {
                let frame = compress(&data, args);
                let got =
                    decode(&frame, len).unwrap_or_else(|e| panic!("{name} {len} {args:?}: {e:?}"));
                assert!(got == data, "{name} {len} {args:?}: output differs");
            }
        }
    }
}

#[test]
fn frames_in_a_row_and_skippable_frames() {
    let sets = datasets(40_000);
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for (i, (_, data)) in sets.iter().enumerate() {
        if i % 2 == 0 {
            stream.extend_from_slice(&(0x184D_2A50u32 + i as u32).to_le_bytes());
            stream.extend_from_slice(&5u32.to_le_bytes());
            stream.extend_from_slice(b"skip!");
        }
        stream.extend_from_slice(&compress(data, &["-7"]));
        want.extend_from_slice(data);
    }
    // Trailing bytes after the last frame are not read (qcow2 pads the last sector).
    stream.extend_from_slice(&[0u8; 300]);
    assert!(decode(&stream, want.len()).unwrap() == want);
    // One byte less of output: the last frame overruns it.
    assert!(decode(&stream, want.len() - 1).is_err());
}

#[test]
fn mutated_and_truncated_frames_do_not_panic() {
    let sets = datasets(70_000);
    let mut r = Rng(99);
    let mut errors = 0usize;
    let mut runs = 0usize;
    for (_, data) in &sets {
        for args in [&["-3"][..], &["-19", "--no-check"][..]] {
            let frame = compress(data, args);
            for cut in [0, 1, 4, 5, 9, frame.len() / 2, frame.len() - 1] {
                assert!(decode(&frame[..cut], data.len()).is_err());
            }
            for _ in 0..300 {
                let mut m = frame.clone();
                for _ in 0..1 + r.next() % 4 {
                    let at = (r.next() as usize) % m.len();
                    m[at] ^= 1 << (r.next() % 8);
                }
                runs += 1;
                match decode(&m, data.len()) {
                    Err(_) => errors += 1,
                    Ok(out) => assert!(
                        args.contains(&"--no-check") || out == *data,
                        "a checksummed frame decoded to other bytes"
                    ),
                }
            }
        }
    }
    assert!(errors > runs / 2, "{errors} of {runs} mutations caught");
}
