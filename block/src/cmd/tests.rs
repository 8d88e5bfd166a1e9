//! Tests of the qemu-io commands and the stress engine on RAM disks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::executor::block_on;

use super::stress::{self, Config, Entry, Event, Expected, Mix, Stress, StressError};
use super::*;
use crate::dev::ram::{RamConfig, RamDisk};
use crate::{Backend, BackendOptions, Graph};

fn clock() -> u64 {
    0
}

#[test]
fn parses_qemu_io_syntax() {
    use Command::*;
    assert_eq!(parse("read 0 4k"), Ok(Read { offset: 0, len: 4096, pattern: None, quiet: false }));
    assert_eq!(parse("read -P 0xaa -q 1M 64k"), Ok(Read { offset: 1 << 20, len: 65536, pattern: Some(0xaa), quiet: true }));
    assert_eq!(parse("read -qP1 512 1.5k"), Ok(Read { offset: 512, len: 1536, pattern: Some(1), quiet: true }));
    assert_eq!(parse("r 0x10 0x10 -P 010"), Ok(Read { offset: 16, len: 16, pattern: Some(8), quiet: false }));
    assert_eq!(parse("write 0 1"), Ok(Write { offset: 0, len: 1, fill: Fill::Pattern(0xcd), quiet: false }));
    assert_eq!(parse("write -zu 4k 1k"), Ok(Write { offset: 4096, len: 1024, fill: Fill::Zeroes { unmap: true }, quiet: false }));
    assert_eq!(parse("write -z -q 0 1G"), Ok(Write { offset: 0, len: 1 << 30, fill: Fill::Zeroes { unmap: false }, quiet: true }));
    assert_eq!(parse("  write\t-P 255 0 1 "), Ok(Write { offset: 0, len: 1, fill: Fill::Pattern(255), quiet: false }));
    assert_eq!(parse("discard -q 0 64k"), Ok(Discard { offset: 0, len: 65536, quiet: true }));
    assert_eq!(parse("flush"), Ok(Flush));
    // qemu-io 9.0+'s `-r` (register the buffer) is accepted and changes nothing.
    assert_eq!(parse("read -r -P 7 0 1"), Ok(Read { offset: 0, len: 1, pattern: Some(7), quiet: false }));
    assert_eq!(parse("write -rq 0 1"), Ok(Write { offset: 0, len: 1, fill: Fill::Pattern(0xcd), quiet: true }));
    assert_eq!(parse("discard -r 0 1"), Err(ParseError::InvalidOption { command: "discard", option: 'r' }));
    assert_eq!(parse_words("write,-P,0xaa,0,64k".split(',')), Ok(Write { offset: 0, len: 65536, fill: Fill::Pattern(0xaa), quiet: false }));
}

#[test]
fn parse_errors_name_the_word_and_print_qemu_io_messages() {
    let cases: &[(&str, ParseError<'_>, &str)] = &[
        ("", ParseError::Empty, "no command given"),
        ("bogus 1 2", ParseError::UnknownCommand("bogus"), "command \"bogus\" not found"),
        ("read -x 0 1", ParseError::InvalidOption { command: "read", option: 'x' }, "read: invalid option -- 'x'"),
        ("read 0 -1", ParseError::InvalidOption { command: "read", option: '1' }, "read: invalid option -- '1'"),
        ("read 0 1 -P", ParseError::MissingValue { command: "read", option: 'P' }, "read: option requires an argument -- 'P'"),
        ("read -P 0x1aa 0 1", ParseError::BadPattern("0x1aa"), "0x1aa is not a valid pattern byte"),
        ("read -Pq 0 1", ParseError::BadPattern("q"), "q is not a valid pattern byte"),
        ("read 1x 2", ParseError::BadNumber("1x"), "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- 1x"),
        ("read 0", ParseError::ArgCount { command: "read", given: 1 }, "bad argument count 1 to read, expected at least 2 arguments"),
        ("flush now", ParseError::ArgCount { command: "flush", given: 1 }, "bad argument count 1 to flush, expected 0 arguments"),
        ("read -q 0", ParseError::Usage("read"), "read [-abCqrv] [-P pattern [-s off] [-l len]] off len -- reads a number of bytes at a specified offset"),
        ("write 0 1 2", ParseError::Usage("write"), "write [-bcCfnqruz] [-P pattern | -s source_file] off len -- writes a number of bytes at a specified offset"),
        ("write -z -P 1 0 1", ParseError::ZeroAndPattern, "Only one of -z, -P, and -s can be specified at the same time"),
        ("write -u 0 1", ParseError::UnmapWithoutZero, "-u requires -z to be specified"),
        ("read -z 0 1", ParseError::InvalidOption { command: "read", option: 'z' }, "read: invalid option -- 'z'"),
        ("discard -P 1 0 1", ParseError::InvalidOption { command: "discard", option: 'P' }, "discard: invalid option -- 'P'"),
        ("read 0 3G", ParseError::TooLong("3G"), "length cannot exceed 2147483136, given 3G"),
        ("read 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", ParseError::TooManyWords, "too many words in one command"),
    ];
    for (line, error, message) in cases {
        let got = parse(line);
        assert_eq!(got, Err(*error), "{line}");
        assert_eq!(got.unwrap_err().to_string(), *message, "{line}");
    }
    assert!(parse("read -x 0 1").unwrap_err().usage_after().unwrap().starts_with("read [-abCqrv]"));
    assert_eq!(parse("read 0").unwrap_err().usage_after(), None);
    // `--` ends the options: what follows is positional, and "-1" is then not a size.
    assert_eq!(parse("read -- 0 -1"), Err(ParseError::BadNumber("-1")));
}

#[test]
fn sizes_and_patterns() {
    assert_eq!(parse_size("512"), Some(512));
    assert_eq!(parse_size("4k"), Some(4096));
    assert_eq!(parse_size("4K"), Some(4096));
    assert_eq!(parse_size("2M"), Some(2 << 20));
    assert_eq!(parse_size("1G"), Some(1 << 30));
    assert_eq!(parse_size("0x200"), Some(512));
    assert_eq!(parse_size("1.5k"), Some(1536));
    for bad in ["", "x", "1x", "-1", "1,2", "a=1", "1.5"] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
    assert_eq!(parse_pattern("0"), Some(0));
    assert_eq!(parse_pattern("255"), Some(255));
    assert_eq!(parse_pattern("0xAB"), Some(0xab));
    assert_eq!(parse_pattern("017"), Some(15));
    for bad in ["", "256", "-1", "0x", "08", "x"] {
        assert_eq!(parse_pattern(bad), None, "{bad}");
    }
}

#[test]
fn report_lines_as_qemu_io() {
    assert_eq!(Rate(512).to_string(), "512 bytes");
    assert_eq!(Rate(4096).to_string(), "4 KiB");
    assert_eq!(Rate(6144).to_string(), "6 KiB");
    assert_eq!(Rate(1536).to_string(), "1.500 KiB");
    assert_eq!(Rate(3 << 30).to_string(), "3 GiB");
    let mut s = String::new();
    Stats { bytes: 4096, ops: 1, ns: 500_000 }.write_report(&mut s, "wrote", 0).unwrap();
    assert_eq!(s, "wrote 4096/4096 bytes at offset 0\n4 KiB, 1 ops; 00.00 sec (7.812 MiB/sec and 2000.0000 ops/sec)\n");
}

/// Runs `f` on a backend over a RAM disk of `size` bytes (512-byte blocks, completions delayed
/// and shuffled); returns the disk's memory afterwards.
fn on_ram_disk(size: usize, f: impl FnOnce(&Backend<'_, '_>)) -> Vec<u8> {
    let mut mem = vec![0u8; size];
    {
        let disk = RamDisk::<64>::new(&mut mem, 512, RamConfig { delay_polls: 2, shuffle_seed: 11 });
        let mut bounce = vec![0u8; 8 * 8192 + 4096];
        let mut graph: Graph<'_, 4, 64> = Graph::new(&mut bounce, 8192);
        let leaf = graph.add_leaf("d0", &disk).unwrap();
        let backend = Backend::new(&graph, leaf, BackendOptions::default()).unwrap();
        f(&backend);
    }
    mem
}

fn exec(backend: &Backend<'_, '_>, line: &str, buf: &mut [u8]) -> (Status, String) {
    let mut out = String::new();
    let cmd = parse(line).unwrap();
    let status = block_on(run(backend, &cmd, buf, &mut out, clock));
    (status, out)
}

/// The first line of a report (the statistics line has timings).
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[test]
fn commands_run_in_buffer_sized_pieces_and_verify() {
    let mem = on_ram_disk(1 << 20, |be| {
        let mut buf = vec![0u8; 4096];
        let (st, out) = exec(be, "write -P 0xaa 0 64k", &mut buf);
        assert_eq!((st, first_line(&out)), (Status::Ok, "wrote 65536/65536 bytes at offset 0"));
        assert!(out.lines().nth(1).unwrap().starts_with("64 KiB, 1 ops; "), "{out}");
        let (st, out) = exec(be, "read -P 0xaa 0 64k", &mut buf);
        assert_eq!((st, first_line(&out)), (Status::Ok, "read 65536/65536 bytes at offset 0"));
        let (st, out) = exec(be, "read -P 0xab 512 1k", &mut buf);
        assert_eq!(st, Status::Failed);
        assert_eq!(first_line(&out), "Pattern verification failed at offset 512, 1024 bytes");
        assert_eq!(out.lines().nth(1), Some("read 1024/1024 bytes at offset 512"));
        let (st, out) = exec(be, "read -q -P 0xaa 0 4k", &mut buf);
        assert_eq!((st, out.as_str()), (Status::Ok, ""));
        let (st, out) = exec(be, "write -z 4k 4k", &mut buf);
        assert_eq!((st, first_line(&out)), (Status::Ok, "wrote 4096/4096 bytes at offset 4096"));
        let (st, out) = exec(be, "write -z -u 8k 4k", &mut buf);
        assert_eq!((st, first_line(&out)), (Status::Ok, "wrote 4096/4096 bytes at offset 8192"));
        let (st, out) = exec(be, "discard 16k 4k", &mut buf);
        assert_eq!((st, first_line(&out)), (Status::Ok, "discard 4096/4096 bytes at offset 16384"));
        assert_eq!(exec(be, "read -P 0 4k 8k", &mut buf).0, Status::Ok);
        assert_eq!(exec(be, "flush", &mut buf), (Status::Ok, String::new()));
        // Unaligned and odd sizes go through the block layer's read-modify-write.
        assert_eq!(exec(be, "write -P 7 100001 3333", &mut buf).0, Status::Ok);
        assert_eq!(exec(be, "read -P 7 100001 3333", &mut buf).0, Status::Ok);
        assert_eq!(exec(be, "write -P 1 0 0", &mut buf).0, Status::Ok);
        let (st, out) = exec(be, "read 1M 1", &mut buf);
        assert_eq!((st, out.as_str()), (Status::Failed, "read failed: Input/output error\n"));
        let (st, out) = exec(be, "write 1023k 2k", &mut buf);
        assert_eq!((st, out.as_str()), (Status::Failed, "write failed: Input/output error\n"));
        let (st, out) = exec(be, "read 0 1", &mut []);
        assert_eq!((st, out.as_str()), (Status::Failed, "read failed: out of data buffer\n"));
    });
    assert!(mem[..4096].iter().all(|&b| b == 0xaa));
    assert!(mem[4096..12288].iter().all(|&b| b == 0));
    assert!(mem[12288..16384].iter().all(|&b| b == 0xaa));
    assert!(mem[16384..20480].iter().all(|&b| b == 0), "the RAM disk zeroes discarded blocks");
    assert!(mem[100_001..103_334].iter().all(|&b| b == 7));
    assert_eq!(mem[100_000], 0);
}

/// Runs a stress configuration on a fresh RAM disk; returns the memory, the markers and the
/// final model table.
fn stress_run(cfg: Config, size: usize) -> (Vec<u8>, Vec<stress::FlushMarker>, Vec<u32>, stress::Summary) {
    let mut markers = Vec::new();
    let mut table = vec![0u32; (cfg.blocks()) as usize];
    let mut summary = None;
    let mem = on_ram_disk(size, |be| {
        let mut sink = |e: Event| {
            if let Event::Flush(m) = e {
                markers.push(m);
            }
        };
        let engine = Stress::new(be, cfg, &mut table, &mut sink).unwrap();
        let mut bufs = vec![0u8; cfg.qd as usize * 8192];
        let workers = bufs.chunks_mut(8192).map(|b| engine.worker(b));
        block_on(futures::future::join_all(workers));
        summary = Some(block_on(engine.finish()).unwrap());
    });
    (mem, markers, table, summary.unwrap())
}

#[test]
fn stress_is_deterministic_across_queue_depths_and_matches_its_model() {
    let mut cfg = Config::new(42, 3000, 1 << 20);
    cfg.block = 512;
    cfg.max_len = 24 << 10;
    cfg.start = 64 << 10;
    cfg.len = 512 << 10;
    let (mem1, markers1, table1, sum1) = stress_run(Config { qd: 1, ..cfg }, 1 << 20);
    let (mem16, markers16, table16, sum16) = stress_run(Config { qd: 16, ..cfg }, 1 << 20);
    assert!(mem1 == mem16, "qd 1 and qd 16 leave different disks");
    assert_eq!(markers1, markers16);
    assert_eq!(table1, table16);
    assert_eq!(sum1.ops, cfg.ops);
    assert_eq!(sum1.by_kind, sum16.by_kind);
    assert!(sum16.max_in_flight > 1 && sum16.max_in_flight <= 16, "{sum16:?}");
    assert!(sum1.verified > 0 && sum1.by_kind.iter().all(|&n| n > 0), "{sum1:?}");
    // Outside the region nothing changed.
    assert!(mem1[..64 << 10].iter().chain(&mem1[576 << 10..]).all(|&b| b == 0));
    // Markers count up, the last covers every op; the table is the replay of every op.
    for (k, m) in markers1.iter().enumerate() {
        assert_eq!(m.flush, k as u32);
        assert_eq!(stress::op_at(&cfg, m.ops).kind == stress::OpKind::Flush, k + 1 < markers1.len());
    }
    assert_eq!(markers1.last().unwrap().ops, cfg.ops);
    assert_eq!(markers1.last().unwrap().to_string(), format!("flush {} covers ops 0..{}", markers1.len() - 1, cfg.ops));
    let mut replayed = vec![0u32; table1.len()];
    stress::replay(&cfg, &mut replayed, 0..cfg.ops);
    assert_eq!(replayed, table1);
    // Every block holds what the model says (discarded blocks read as zeros on a RAM disk).
    let mut expected = [0u8; 512];
    for (b, &raw) in table1.iter().enumerate() {
        let offset = cfg.start + b as u64 * 512;
        let data = &mem1[offset as usize..offset as usize + 512];
        assert!(stress::block_matches(cfg.seed, Entry::decode(raw), offset, data), "block {b}");
        if stress::expected_block(cfg.seed, Entry::decode(raw), offset, &mut expected) {
            assert_eq!(&expected[..], data);
        }
    }
    // Another seed, another disk.
    let (other, ..) = stress_run(Config { seed: 43, qd: 4, ..cfg }, 1 << 20);
    assert!(other != mem1);
}

#[test]
fn stress_markers_and_the_crash_replay() {
    let mut cfg = Config::new(7, 400, 256 << 10);
    cfg.mix = Mix { read: 1, write: 4, zeroes: 1, zeroes_unmap: 1, discard: 1, flush: 1 };
    cfg.qd = 8;
    let (mem, markers, ..) = stress_run(cfg, 256 << 10);
    assert!(markers.len() > 10);
    // At a marker, the replayed prefix predicts every block unless a later op (up to the next
    // flush) may have changed it: here nothing is cut, so the last marker predicts all.
    let last = *markers.last().unwrap();
    let mut table = vec![0u32; cfg.blocks() as usize];
    stress::replay(&cfg, &mut table, 0..last.ops);
    for (b, &raw) in table.iter().enumerate() {
        let offset = b as u64 * 4096;
        assert!(stress::block_matches(cfg.seed, Entry::decode(raw), offset, &mem[offset as usize..][..4096]));
    }
    // The updates between two markers are exactly the ops between them.
    let (a, b) = (markers[0].ops, markers[1].ops);
    let mut n = 0;
    stress::for_each_update(&cfg, a..b, |block, entry| {
        assert!(block < cfg.blocks());
        assert!(!matches!(entry, Entry::Initial));
        n += 1;
    });
    let blocks: u64 = (a..b).map(|i| stress::op_at(&cfg, i)).filter(|op| Entry::after(op).is_some()).map(|op| op.len / 4096).sum();
    assert_eq!(n, blocks);
}

#[test]
fn stress_model_entries_and_bad_configs() {
    assert_eq!(Mix::parse("1:2:3:4:5:6"), Some(Mix { read: 1, write: 2, zeroes: 3, zeroes_unmap: 4, discard: 5, flush: 6 }));
    for bad in ["", "1:2:3:4:5", "1:2:3:4:5:6:7", "1:2:3:4:5:x", "1:2:3:4:5:-1"] {
        assert_eq!(Mix::parse(bad), None, "{bad}");
    }
    assert_eq!(stress::expected(Entry::Discarded(3)), Expected::Unknown);
    for e in [Entry::Initial, Entry::Data(5), Entry::Zero((1 << 30) - 1), Entry::Discarded(0)] {
        assert_eq!(Entry::decode(e.encode()), e);
    }
    let mut data = [0u8; 512];
    stress::fill_data(1, 2, 4096, &mut data);
    assert!(stress::block_matches(1, Entry::Data(2), 4096, &data));
    assert!(!stress::block_matches(1, Entry::Data(3), 4096, &data));
    assert!(!stress::block_matches(1, Entry::Data(2), 4608, &data));
    data[100] ^= 1;
    assert!(!stress::block_matches(1, Entry::Data(2), 4096, &data));
    assert!(!stress::block_matches(1, Entry::Zero(2), 4096, &data));
    assert!(stress::block_matches(1, Entry::Initial, 4096, &data));

    on_ram_disk(64 << 10, |be| {
        let mut table = vec![0u32; 16];
        let mut sink = |_: Event| {};
        let bad = |cfg: Config, table: &mut [u32], sink: &mut dyn FnMut(Event)| Stress::new(be, cfg, table, sink).err();
        let ok = Config::new(1, 10, 64 << 10);
        assert!(bad(ok, &mut table, &mut sink).is_none());
        assert!(matches!(bad(Config { qd: 65, ..ok }, &mut table, &mut sink), Some(StressError::Config(_))));
        assert!(matches!(bad(Config { block: 1000, ..ok }, &mut table, &mut sink), Some(StressError::Config(_))));
        assert!(matches!(bad(Config { len: 128 << 10, ..ok }, &mut table, &mut sink), Some(StressError::Config(_))));
        assert!(matches!(bad(Config { max_len: 100, ..ok }, &mut table, &mut sink), Some(StressError::Config(_))));
        assert!(matches!(bad(ok, &mut table[..15], &mut sink), Some(StressError::Config(_))));
        // A worker whose buffer is smaller than a block fails the run.
        let engine = Stress::new(be, ok, &mut table, &mut sink).unwrap();
        block_on(engine.worker(&mut [0u8; 100]));
        assert!(matches!(block_on(engine.finish()), Err(StressError::Config(_))));
    });
}
