//! qemu-io's numbers: sizes (`cvtnum`: `4096`, `64k`, `1.5M`, `0x1000`; suffixes b, k, M, G,
//! T, P, E are powers of 1024, either case) and pattern bytes (`strtol(.., 0)`: decimal, `0x`
//! hexadecimal or `0` octal, 0 to 255).

use crate::options::Options;

/// A size as qemu-io reads it; `None` if `word` is not one.
///
/// A hexadecimal number with a suffix (`0x1k`), which QEMU still takes with a deprecation
/// warning, is refused.
pub fn parse_size(word: &str) -> Option<u64> {
    // The options grammar's value parser reads QEMU's sizes; a word that is not a lone value
    // (a `,` or `=` in it) is not a size.
    if word.is_empty() || word.contains([',', '=']) {
        return None;
    }
    let opts = Options::<'_, 1>::parse(word, Some("v")).ok()?;
    opts.get("v")?.parse_size().ok()
}

/// A pattern byte as qemu-io's `parse_pattern` reads it; `None` if `word` is not one.
pub fn parse_pattern(word: &str) -> Option<u8> {
    let (digits, radix) = if let Some(hex) = word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        (hex, 16)
    } else if word.len() > 1 && word.starts_with('0') {
        (&word[1..], 8)
    } else {
        (word, 10)
    };
    if digits.is_empty() {
        return None;
    }
    let value = u32::from_str_radix(digits, radix).ok()?;
    u8::try_from(value).ok()
}
