//! Tests of the options grammar: every rule, every error with its offset and message, values,
//! a round-trip property test and a no-panic fuzz test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use super::*;

/// Parses with room for 16 entries and no implied key.
fn ok(input: &str) -> Options<'_, 16> {
    parse(input, None).unwrap_or_else(|e| panic!("{input:?} failed: {e}"))
}

/// Parses with room for 16 entries, expecting an error.
fn fail<'a>(input: &'a str, implied: Option<&'a str>) -> OptionsError<'a> {
    match parse::<16>(input, implied) {
        Ok(opts) => panic!("{input:?} parsed to {:?}", pairs(&opts.root())),
        Err(e) => e,
    }
}

/// The `(key, unescaped value)` pairs of a view, in order.
fn pairs(view: &OptionsView<'_, '_>) -> Vec<(String, String)> {
    view.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Shorthand for expected pairs.
fn expect(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|&(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Checks an error's kind, offset, key and message.
fn check_err(
    e: OptionsError<'_>,
    kind: OptionsErrorKind,
    offset: usize,
    key: Option<&str>,
    msg: &str,
) {
    assert_eq!((e.kind, e.offset, e.key), (kind, offset, key), "{e}");
    assert_eq!(e.to_string(), msg);
}

// ---- grammar ----

#[test]
fn empty_input_is_empty_set() {
    let opts = ok("");
    assert_eq!(opts.len(), 0);
    assert!(opts.is_empty());
    assert_eq!(opts.get("a"), None);
    assert_eq!(opts.iter().count(), 0);
    assert!(!opts.root().has_children());
    assert!(opts.child("a").is_none());
    assert_eq!(opts.capacity(), 16);
    assert!(Options::<4>::default().is_empty());
    assert!(parse::<4>("", Some("file")).unwrap().is_empty());
}

#[test]
fn design_example() {
    let input = "driver=qcow2,file=top,backing.driver=raw,backing.file=base,read-only=on";
    let opts = ok(input);
    assert_eq!(opts.len(), 5);
    assert_eq!(
        pairs(&opts.root()),
        expect(&[
            ("driver", "qcow2"),
            ("file", "top"),
            ("backing.driver", "raw"),
            ("backing.file", "base"),
            ("read-only", "on"),
        ])
    );
    assert_eq!(opts.get("backing.file").unwrap().as_str(), Some("base"));
    assert_eq!(opts.get("read-only").unwrap().parse_bool(), Ok(true));
    let backing = opts.child("backing").unwrap();
    assert_eq!(backing.prefix(), "backing.");
    assert_eq!(backing.get("driver").unwrap().as_str(), Some("raw"));
    assert_eq!(
        pairs(&backing),
        expect(&[("driver", "raw"), ("file", "base")])
    );
    // Offsets of values and the same result through `Options::parse`.
    assert_eq!(opts.get("file").unwrap().offset(), 18);
    let again = Options::<5>::parse(input, None).unwrap();
    assert!(again.iter().eq(opts.iter()));
}

#[test]
fn values_may_hold_equals_and_be_empty() {
    let opts = ok("a=b=c,e=,f=");
    assert_eq!(
        pairs(&opts.root()),
        expect(&[("a", "b=c"), ("e", ""), ("f", "")])
    );
    assert_eq!(opts.get("e").unwrap().as_str(), Some(""));
    assert_eq!(opts.get("e").unwrap().parts().count(), 0);
}

#[test]
fn key_characters() {
    let opts = ok("A-z_09.x-y=1");
    assert_eq!(opts.get("A-z_09.x-y").unwrap().as_str(), Some("1"));
}

#[test]
fn escaped_commas() {
    let cases: &[(&str, &str, &str)] = &[
        ("file=a,,b", "a,,b", "a,b"),
        ("a=1,,", "1,,", "1,"),
        ("a=,,", ",,", ","),
        ("a=,,,,", ",,,,", ",,"),
        ("a=x,,,,y", "x,,,,y", "x,,y"),
        ("a=,,x", ",,x", ",x"),
    ];
    for &(input, raw, unescaped) in cases {
        let opts = ok(input);
        assert_eq!(opts.len(), 1, "{input}");
        let v = opts.iter().next().unwrap().1;
        assert_eq!(v.raw(), raw);
        assert!(v.is_escaped());
        assert_eq!(v.as_str(), None);
        assert_eq!(v.to_string(), unescaped);
        assert_eq!(v.unescaped_len(), unescaped.len());
        assert!(v.eq_str(unescaped));
        let mut buf = [0u8; 16];
        assert_eq!(v.unescape_into(&mut buf), Ok(unescaped));
    }
    // An escaped comma at the end of a value, then the next element.
    let opts = ok("a=,,,b=2,c=x,,,d=y");
    assert_eq!(
        pairs(&opts.root()),
        expect(&[("a", ","), ("b", "2"), ("c", "x,"), ("d", "y")])
    );
    // `,,` right after a separator is part of the next value, never an empty element.
    assert_eq!(pairs(&ok("a=1,,,,b=2").root()), expect(&[("a", "1,,b=2")]));
}

#[test]
fn eq_str_and_parts() {
    let opts = ok("v=a,,b,e=");
    let v = opts.get("v").unwrap();
    assert!(v.eq_str("a,b"));
    assert!(!v.eq_str("a,,b"));
    assert!(!v.eq_str("a,"));
    assert!(!v.eq_str("a,bc"));
    assert!(!v.eq_str(""));
    assert_eq!(v.parts().collect::<Vec<_>>(), vec!["a,", "b"]);
    let e = opts.get("e").unwrap();
    assert!(e.eq_str(""));
    assert!(!e.eq_str("x"));
}

#[test]
fn unescape_into_buffer_sizes() {
    let opts = ok("v=ab,,cd");
    let v = opts.get("v").unwrap();
    let mut exact = [0u8; 5];
    assert_eq!(v.unescape_into(&mut exact), Ok("ab,cd"));
    let mut short = [0u8; 4];
    assert_eq!(
        v.unescape_into(&mut short),
        Err(ValueError::BufferTooSmall { needed: 5 })
    );
    assert_eq!(
        ValueError::BufferTooSmall { needed: 5 }.to_string(),
        "the value needs a buffer of 5 bytes"
    );
    let mut long = [b'x'; 8];
    assert_eq!(v.unescape_into(&mut long), Ok("ab,cd"));
    // Non-ASCII text survives unescaping.
    let opts = ok("v=é,,ü");
    let mut buf = [0u8; 8];
    assert_eq!(opts.get("v").unwrap().unescape_into(&mut buf), Ok("é,ü"));
}

// ---- implied key ----

#[test]
fn implied_key() {
    let opts = parse::<4>("disk0", Some("device")).unwrap();
    assert_eq!(pairs(&opts.root()), expect(&[("device", "disk0")]));
    let opts = parse::<4>("disk0,read-only=on", Some("device")).unwrap();
    assert_eq!(
        pairs(&opts.root()),
        expect(&[("device", "disk0"), ("read-only", "on")])
    );
    // An explicit first key still works.
    let opts = parse::<4>("device=disk0,x=1", Some("device")).unwrap();
    assert_eq!(
        pairs(&opts.root()),
        expect(&[("device", "disk0"), ("x", "1")])
    );
    // The implied value may hold anything but a lone comma, escapes included.
    let opts = parse::<4>("/img/a b.qcow2,x=1", Some("file")).unwrap();
    assert_eq!(opts.get("file").unwrap().as_str(), Some("/img/a b.qcow2"));
    let opts = parse::<4>("a,,b=c,x=1", Some("file")).unwrap();
    assert_eq!(
        pairs(&opts.root()),
        expect(&[("file", "a,b=c"), ("x", "1")])
    );
    let opts = parse::<4>(",,", Some("file")).unwrap();
    assert_eq!(pairs(&opts.root()), expect(&[("file", ",")]));
    // A dotted implied key nests like any other.
    let opts = parse::<4>("base.img", Some("file.filename")).unwrap();
    assert!(opts
        .child("file")
        .unwrap()
        .get("filename")
        .unwrap()
        .eq_str("base.img"));
}

#[test]
fn implied_key_errors() {
    let e = fail("disk0,device=x", Some("device"));
    check_err(
        e,
        OptionsErrorKind::DuplicateKey,
        6,
        Some("device"),
        "at byte 6: duplicate key \"device\"",
    );
    // Only the first element may omit its key.
    let e = fail("disk0,flag", Some("device"));
    check_err(
        e,
        OptionsErrorKind::MissingEquals,
        6,
        Some("flag"),
        "at byte 6: expected key=value, found \"flag\"",
    );
    let e = fail(",a=1", Some("device"));
    assert_eq!((e.kind, e.offset), (OptionsErrorKind::EmptyElement, 0));
    let e = fail("=x", Some("device"));
    assert_eq!((e.kind, e.offset), (OptionsErrorKind::EmptyKey, 0));
    // The implied key is checked like any key; the offset points into it.
    let e = fail("disk0", Some("a..b"));
    assert_eq!(
        (e.kind, e.offset, e.key),
        (OptionsErrorKind::EmptyKeyComponent, 1, Some("a..b"))
    );
    let e = fail("disk0", Some(""));
    assert_eq!(e.kind, OptionsErrorKind::EmptyKey);
    // The implied key is only used when needed.
    assert!(parse::<4>("a=1", Some("")).is_ok());
}

// ---- errors ----

#[test]
fn missing_equals() {
    check_err(
        fail("disk0", None),
        OptionsErrorKind::MissingEquals,
        0,
        Some("disk0"),
        "at byte 0: expected key=value, found \"disk0\"",
    );
    check_err(
        fail("a=1,flag,b=2", None),
        OptionsErrorKind::MissingEquals,
        4,
        Some("flag"),
        "at byte 4: expected key=value, found \"flag\"",
    );
}

#[test]
fn empty_element() {
    let msg = |at: usize| {
        format!("at byte {at}: empty option (stray \",\"; write \",,\" for a comma inside a value)")
    };
    check_err(
        fail("a=1,", None),
        OptionsErrorKind::EmptyElement,
        4,
        None,
        &msg(4),
    );
    check_err(
        fail(",a=1", None),
        OptionsErrorKind::EmptyElement,
        0,
        None,
        &msg(0),
    );
    check_err(
        fail(",", None),
        OptionsErrorKind::EmptyElement,
        0,
        None,
        &msg(0),
    );
    // `1,` is the value, then a trailing comma.
    check_err(
        fail("a=1,,,", None),
        OptionsErrorKind::EmptyElement,
        6,
        None,
        &msg(6),
    );
}

#[test]
fn empty_key() {
    let msg = |at: usize| format!("at byte {at}: empty key before \"=\"");
    check_err(
        fail("=on", None),
        OptionsErrorKind::EmptyKey,
        0,
        None,
        &msg(0),
    );
    check_err(
        fail("a=1,=2", None),
        OptionsErrorKind::EmptyKey,
        4,
        None,
        &msg(4),
    );
    check_err(
        fail("=", None),
        OptionsErrorKind::EmptyKey,
        0,
        None,
        &msg(0),
    );
}

#[test]
fn bad_key_char() {
    let e = fail("a b=1", None);
    check_err(
        e,
        OptionsErrorKind::BadKeyChar { ch: ' ' },
        1,
        Some("a b"),
        "at byte 1: invalid character ' ' in key \"a b\" (keys use ASCII letters, digits, '-', '_' and '.')",
    );
    let e = fail("x=1,ké=2", None);
    assert_eq!(
        (e.kind, e.offset, e.key),
        (OptionsErrorKind::BadKeyChar { ch: 'é' }, 5, Some("ké"))
    );
    let e = fail("/img/a=1", None);
    assert_eq!(
        (e.kind, e.offset),
        (OptionsErrorKind::BadKeyChar { ch: '/' }, 0)
    );
}

#[test]
fn empty_key_component() {
    let msg =
        |at: usize, key: &str| format!("at byte {at}: empty component in dotted key \"{key}\"");
    let kind = OptionsErrorKind::EmptyKeyComponent;
    check_err(fail("a..b=1", None), kind, 1, Some("a..b"), &msg(1, "a..b"));
    check_err(fail(".a=1", None), kind, 0, Some(".a"), &msg(0, ".a"));
    check_err(fail("a.=1", None), kind, 1, Some("a."), &msg(1, "a."));
    check_err(
        fail("x=1,a..b=1", None),
        kind,
        5,
        Some("a..b"),
        &msg(5, "a..b"),
    );
    check_err(fail(".=1", None), kind, 0, Some("."), &msg(0, "."));
}

#[test]
fn duplicate_key() {
    check_err(
        fail("file=a,file=b", None),
        OptionsErrorKind::DuplicateKey,
        7,
        Some("file"),
        "at byte 7: duplicate key \"file\"",
    );
    let e = fail("a.b=1,c=2,a.b=3", None);
    assert_eq!(
        (e.kind, e.offset, e.key),
        (OptionsErrorKind::DuplicateKey, 10, Some("a.b"))
    );
}

#[test]
fn scalar_and_children() {
    let kind = OptionsErrorKind::ScalarAndChildren;
    let msg =
        |at: usize| format!("at byte {at}: key \"backing\" has both a value and child options");
    check_err(
        fail("backing=foo,backing.driver=raw", None),
        kind,
        12,
        Some("backing"),
        &msg(12),
    );
    check_err(
        fail("backing.driver=raw,backing=foo", None),
        kind,
        19,
        Some("backing"),
        &msg(19),
    );
    check_err(
        fail("backing.file.driver=raw,backing=foo", None),
        kind,
        24,
        Some("backing"),
        &msg(24),
    );
    // Shared text is not shared components.
    assert_eq!(ok("ab=1,a.b=2,a.bc=3,a.b-c=4").len(), 4);
}

#[test]
fn capacity_exactly_n_and_n_plus_one() {
    let opts = parse::<3>("a=1,b=2,c=3", None).unwrap();
    assert_eq!(opts.len(), 3);
    assert_eq!(opts.capacity(), 3);
    let e = parse::<3>("a=1,b=2,c=3,d=4", None).unwrap_err();
    check_err(
        e,
        OptionsErrorKind::TooManyEntries { capacity: 3 },
        12,
        Some("d"),
        "at byte 12: too many options at key \"d\" (at most 3)",
    );
    let e = parse::<0>("a=1", None).unwrap_err();
    assert_eq!(
        (e.kind, e.offset),
        (OptionsErrorKind::TooManyEntries { capacity: 0 }, 0)
    );
    assert!(parse::<0>("", None).unwrap().is_empty());
    // A duplicate is reported as such even when the options are full.
    let e = parse::<1>("a=1,a=2", None).unwrap_err();
    assert_eq!(e.kind, OptionsErrorKind::DuplicateKey);
}

#[test]
fn unknown_key_and_bad_value_messages() {
    let e = ok("driver=raw,foo=1").check_only(&["driver"]).unwrap_err();
    check_err(
        e,
        OptionsErrorKind::UnknownKey,
        11,
        Some("foo"),
        "at byte 11: unknown option \"foo\"",
    );

    let input = "size=1.5";
    let opts = ok(input);
    let v = opts.get("size").unwrap();
    let e = OptionsError::bad_value("size", &v, v.parse_size().unwrap_err());
    check_err(
        e,
        OptionsErrorKind::BadValue(ValueError::NotSize),
        5,
        Some("size"),
        "at byte 5: invalid value for \"size\": expected a size such as 512, 64k, 1.5G or 0x1000 \
         (suffixes b, k, M, G, T, P, E are powers of 1024)",
    );
}

// ---- views ----

#[test]
fn nesting_three_deep() {
    let input = "driver=qcow2,backing.driver=qcow2,backing.file.driver=file,\
                 backing.file.filename=base.img,backing.backing.file.driver=null";
    let opts = ok(input);
    let backing = opts.child("backing").unwrap();
    let file = backing.child("file").unwrap();
    assert_eq!(file.prefix(), "backing.file.");
    assert!(file.get("driver").unwrap().eq_str("file"));
    assert!(file.get("filename").unwrap().eq_str("base.img"));
    assert_eq!(file.get("backing"), None);
    assert_eq!(
        pairs(&file),
        expect(&[("driver", "file"), ("filename", "base.img")])
    );
    // Relative keys include deeper levels.
    assert_eq!(
        pairs(&backing),
        expect(&[
            ("driver", "qcow2"),
            ("file.driver", "file"),
            ("file.filename", "base.img"),
            ("backing.file.driver", "null"),
        ])
    );
    assert!(backing.get("file.driver").unwrap().eq_str("file"));
    let deep = backing.child("backing").unwrap().child("file").unwrap();
    assert_eq!(deep.prefix(), "backing.backing.file.");
    assert!(deep.get("driver").unwrap().eq_str("null"));
    // A dotted child name is the same as stepping one level at a time.
    let direct = opts.child("backing.file").unwrap();
    assert_eq!(direct.prefix(), file.prefix());
    assert!(opts
        .root()
        .child("backing")
        .unwrap()
        .child("file")
        .is_some());
    assert_eq!(opts.root().prefix(), "");
    assert!(file.has_children());
    assert!(opts.root().has_children());
}

#[test]
fn child_edge_cases() {
    let opts = ok("driver=raw,backing.driver=raw");
    assert!(opts.child("driver").is_none(), "a scalar has no children");
    assert!(opts.child("").is_none());
    assert!(opts.child("back").is_none(), "partial component");
    assert!(opts.child("backing.").is_none());
    assert!(opts.child("nope").is_none());
    assert!(opts.child("backing").unwrap().child("driver").is_none());
    assert_eq!(opts.get("backing"), None);
    assert_eq!(opts.get("backing."), None);
}

#[test]
fn check_only_levels() {
    let opts = ok("driver=qcow2,file=top,backing.driver=raw,backing.foo=1");
    assert_eq!(opts.check_only(&["driver", "file", "backing"]), Ok(()));
    let e = opts.check_only(&["driver", "file"]).unwrap_err();
    assert_eq!(
        (e.kind, e.offset, e.key),
        (OptionsErrorKind::UnknownKey, 22, Some("backing"))
    );
    let backing = opts.child("backing").unwrap();
    let e = backing.check_only(&["driver", "file"]).unwrap_err();
    check_err(
        e,
        OptionsErrorKind::UnknownKey,
        41,
        Some("backing.foo"),
        "at byte 41: unknown option \"backing.foo\"",
    );
    assert_eq!(backing.check_only(&["driver", "foo"]), Ok(()));
    assert_eq!(ok("").check_only(&[]), Ok(()));
    // The implied entry is reported at its value.
    let opts = parse::<4>("disk0", Some("device")).unwrap();
    let e = opts.check_only(&[]).unwrap_err();
    assert_eq!((e.offset, e.key), (0, Some("device")));
}

// ---- values ----

#[test]
fn parse_bool_values() {
    let opts = ok("a=on,b=yes,c=true,d=y,e=off,f=no,g=false,h=n,i=ON,j=,k=1,l=o,,n");
    let get = |k: &str| opts.get(k).unwrap().parse_bool();
    for k in ["a", "b", "c", "d"] {
        assert_eq!(get(k), Ok(true), "{k}");
    }
    for k in ["e", "f", "g", "h"] {
        assert_eq!(get(k), Ok(false), "{k}");
    }
    for k in ["i", "j", "k", "l"] {
        assert_eq!(get(k), Err(ValueError::NotBool), "{k}");
    }
    assert_eq!(
        ValueError::NotBool.to_string(),
        "expected on/off, yes/no, true/false or y/n"
    );
}

/// The value of `v=<text>`, parsed as a `u64` or a size.
fn number(text: &str, size: bool) -> Result<u64, ValueError> {
    let input = format!("v={text}");
    let opts = parse::<1>(&input, None).unwrap();
    let v = opts.get("v").unwrap();
    if size {
        v.parse_size()
    } else {
        v.parse_u64()
    }
}

#[test]
fn parse_u64_values() {
    use ValueError::*;
    let cases: &[(&str, Result<u64, ValueError>)] = &[
        ("0", Ok(0)),
        ("4096", Ok(4096)),
        ("0x1000", Ok(4096)),
        ("0X1f", Ok(31)),
        ("0xFFFFFFFFFFFFFFFF", Ok(u64::MAX)),
        ("18446744073709551615", Ok(u64::MAX)),
        ("18446744073709551616", Err(Overflow)),
        ("99999999999999999999999", Err(Overflow)),
        ("0x10000000000000000", Err(Overflow)),
        ("", Err(Empty)),
        ("-1", Err(Negative)),
        ("-", Err(Negative)),
        ("+1", Err(NotNumber)),
        (" 1", Err(NotNumber)),
        ("010", Err(NotNumber)),
        ("00", Err(NotNumber)),
        ("0x", Err(NotNumber)),
        ("0xg", Err(NotNumber)),
        ("1k", Err(NotNumber)),
        ("1.0", Err(NotNumber)),
        ("1,,2", Err(NotNumber)),
    ];
    for (text, want) in cases {
        assert_eq!(number(text, false), *want, "{text:?}");
    }
}

#[test]
fn parse_size_values() {
    use ValueError::*;
    const K: u64 = 1 << 10;
    const E: u64 = 1 << 60;
    let cases: &[(&str, Result<u64, ValueError>)] = &[
        ("0", Ok(0)),
        ("512", Ok(512)),
        ("08", Ok(8)),
        ("512b", Ok(512)),
        ("512B", Ok(512)),
        ("1k", Ok(1024)),
        ("64k", Ok(64 * K)),
        ("4K", Ok(4 * K)),
        ("1M", Ok(1 << 20)),
        ("1m", Ok(1 << 20)),
        ("2G", Ok(2 << 30)),
        ("1T", Ok(1 << 40)),
        ("1P", Ok(1 << 50)),
        ("15E", Ok(15 * E)),
        ("1.5G", Ok(3 << 29)),
        ("1.5k", Ok(1536)),
        (".5k", Ok(512)),
        ("1.k", Ok(1024)),
        ("1.", Ok(1)),
        ("1.0", Ok(1)),
        ("1.000b", Ok(1)),
        ("0.1k", Ok(102)),         // 102.4 rounds down
        ("0.0005k", Ok(1)),        // 0.512 rounds up
        ("0.00048828125k", Ok(1)), // exactly 0.5: halves round up
        ("0.00048828124k", Ok(0)), // just below 0.5
        ("0.999999999999999999999999k", Ok(1024)),
        ("1.00000000000000000000000000001k", Ok(1024)),
        ("18446744073709551615", Ok(u64::MAX)),
        ("18446744073709551615b", Ok(u64::MAX)),
        ("18446744073709551616", Err(Overflow)),
        ("16E", Err(Overflow)),
        ("15.9999999999999999999999999E", Err(Overflow)),
        ("15.9999999999999999995E", Ok(u64::MAX)), // rounds to just below 2^64
        ("17179869184G", Err(Overflow)),
        ("17179869183G", Ok(17_179_869_183 << 30)),
        ("0x1000", Ok(4096)),
        ("0x1b", Ok(27)),
        ("0X1E", Ok(30)),
        ("0xffffffffffffffff", Ok(u64::MAX)),
        ("0x10000000000000000", Err(Overflow)),
        ("0x10k", Err(NotSize)),
        ("0x1.8", Err(NotSize)),
        ("0x", Err(NotSize)),
        ("", Err(Empty)),
        ("-1", Err(Negative)),
        ("-0", Err(Negative)),
        ("-1k", Err(Negative)),
        ("1.5", Err(NotSize)),
        ("1.5b", Err(NotSize)),
        (".", Err(NotSize)),
        ("k", Err(NotSize)),
        (".k", Err(NotSize)),
        ("1e3", Err(NotSize)),
        ("1kb", Err(NotSize)),
        ("1KiB", Err(NotSize)),
        ("1.2.3k", Err(NotSize)),
        (" 1", Err(NotSize)),
        ("+1", Err(NotSize)),
        ("1 k", Err(NotSize)),
        ("1x", Err(NotSize)),
        ("1,,0", Err(NotSize)),
    ];
    for (text, want) in cases {
        assert_eq!(number(text, true), *want, "{text:?}");
    }
}

#[test]
fn value_error_messages() {
    assert_eq!(ValueError::Empty.to_string(), "the value is empty");
    assert_eq!(
        ValueError::Negative.to_string(),
        "negative values are not allowed"
    );
    assert_eq!(
        ValueError::Overflow.to_string(),
        "the value does not fit in 64 bits"
    );
    assert_eq!(
        ValueError::NotNumber.to_string(),
        "expected a decimal number without leading zeros, or 0x and hex digits"
    );
}

// ---- property and fuzz tests ----

/// A small deterministic PRNG (xorshift64*), so the tests need no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A random element of `items` (non-empty).
    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }
}

/// A random dotted key of 1 to 3 components.
fn random_key(rng: &mut Rng) -> String {
    const COMPONENTS: &[&str] = &["a", "b", "file", "driver", "x-y", "read_only", "0", "B9"];
    let depth = 1 + rng.below(3);
    let parts: Vec<&str> = (0..depth).map(|_| *rng.pick(COMPONENTS)).collect();
    parts.join(".")
}

/// A random value, commas and non-ASCII text included.
fn random_value(rng: &mut Rng) -> String {
    const CHARS: &[char] = &['a', 'z', '0', ',', '=', '.', ' ', '/', 'é', '-'];
    let len = rng.below(7);
    (0..len).map(|_| *rng.pick(CHARS)).collect()
}

/// QEMU escaping: every comma doubled.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// True if `new` can join `keys`: not a duplicate, and no parent/child clash.
fn compatible(keys: &[(String, String)], new: &str) -> bool {
    keys.iter()
        .all(|(k, _)| k != new && !is_parent_of(k, new) && !is_parent_of(new, k))
}

#[test]
fn property_round_trip() {
    let mut rng = Rng(0x5EED_0F0B_7105);
    for round in 0..3000 {
        let count = rng.below(8);
        let mut map: Vec<(String, String)> = Vec::new();
        while map.len() < count {
            let key = random_key(&mut rng);
            if compatible(&map, &key) {
                map.push((key, random_value(&mut rng)));
            }
        }
        // Sometimes write the first entry with an implied key, when that is unambiguous.
        let use_implied = rng.below(2) == 0
            && map.first().is_some_and(|(_, v)| {
                !v.is_empty() && v.find(['=', ',']).is_none_or(|i| v.as_bytes()[i] == b',')
            });
        let text: Vec<String> = map
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                if i == 0 && use_implied {
                    escape(v)
                } else {
                    format!("{k}={}", escape(v))
                }
            })
            .collect();
        let input = text.join(",");
        let implied = if use_implied {
            map.first().map(|(k, _)| k.as_str())
        } else {
            None
        };

        let opts = parse::<8>(&input, implied)
            .unwrap_or_else(|e| panic!("round {round}: {input:?} ({implied:?}) failed: {e}"));
        assert_eq!(pairs(&opts.root()), map, "round {round}: {input:?}");
        for (k, v) in &map {
            let value = opts.get(k).unwrap();
            assert!(value.eq_str(v));
            assert_eq!(value.as_str().is_some(), !v.contains(','));
            let mut buf = [0u8; 32];
            assert_eq!(value.unescape_into(&mut buf), Ok(v.as_str()));
            // The same value through a view of its first component.
            if let Some((head, tail)) = k.split_once('.') {
                assert!(opts.child(head).unwrap().get(tail).unwrap().eq_str(v));
            }
        }
        // One entry too many for the capacity is an error, not a panic.
        if count > 0 {
            let e = parse::<0>(&input, implied).unwrap_err();
            assert_eq!(e.kind, OptionsErrorKind::TooManyEntries { capacity: 0 });
        }
    }
}

/// Exercises every reader on a parse result; must not panic.
fn touch_everything(opts: &Options<'_, 4>) {
    let mut buf = [0u8; 8];
    for (key, value) in opts.iter() {
        let _ = (value.parse_bool(), value.parse_u64(), value.parse_size());
        let _ = (
            value.unescape_into(&mut buf),
            value.eq_str("a,b"),
            value.to_string(),
        );
        assert!(opts.get(key).is_some());
        let _ = opts.root().check_only(&["a", "b"]);
        if let Some((head, _)) = key.split_once('.') {
            let child = opts.child(head).unwrap();
            assert!(child.has_children());
            let _ = child.check_only(&["b"]);
            assert!(child.iter().count() > 0);
        }
    }
}

#[test]
fn fuzz_no_panic() {
    const ALPHABET: &[u8] = b"a.b=,_-0x";
    let mut rng = Rng(0xF022_1234_ABCD);
    let mut parsed = 0;
    for _ in 0..20_000 {
        let len = rng.below(20);
        let bytes: Vec<u8> = (0..len).map(|_| *rng.pick(ALPHABET)).collect();
        let input = String::from_utf8(bytes).unwrap();
        let implied = *rng.pick(&[None, Some("a"), Some("b.a"), Some("a..")]);
        match parse::<4>(&input, implied) {
            Ok(opts) => {
                parsed += 1;
                touch_everything(&opts);
            }
            Err(e) => {
                let _ = e.to_string();
                assert!(
                    e.offset <= input.len().max(implied.map_or(0, str::len)),
                    "{input:?}: {e}"
                );
            }
        }
    }
    // The alphabet is meant to reach both outcomes often.
    assert!(parsed > 500, "only {parsed} inputs parsed");
}

#[test]
fn fuzz_values_no_panic() {
    // Random values over the number alphabet, parsed as booleans, numbers and sizes.
    const ALPHABET: &[u8] = b"0123456789.xXkKmGEeb-,";
    let mut rng = Rng(0xBADC_0FFE_E0DD_F00D);
    for _ in 0..20_000 {
        let len = rng.below(24);
        let text: String = (0..len).map(|_| *rng.pick(ALPHABET) as char).collect();
        let input = format!("v={}", escape(&text));
        let opts = parse::<1>(&input, None).unwrap();
        let v = opts.get("v").unwrap();
        let _ = (v.parse_bool(), v.parse_u64(), v.parse_size());
    }
}
