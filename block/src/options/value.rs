//! Option values: unescaping and interpretation as booleans, numbers and sizes.

use core::fmt;

/// The value of one option, borrowed from the input and still escaped (`,,` for a comma).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value<'a> {
    /// The text between `=` and the separating `,`, escapes included.
    raw: &'a str,
    /// True if `raw` contains a `,,` escape.
    escaped: bool,
    /// Byte offset of `raw` in the input.
    offset: usize,
}

/// Why a value could not be interpreted or unescaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueError {
    /// The value is empty where a number or size was expected.
    Empty,
    /// Not one of `on`, `yes`, `true`, `y`, `off`, `no`, `false`, `n` (see
    /// [`Value::parse_bool`]).
    NotBool,
    /// Not a decimal or `0x` hexadecimal number (see [`Value::parse_u64`]).
    NotNumber,
    /// Not a size such as `512`, `64k`, `1.5G` or `0x1000` (see [`Value::parse_size`]).
    NotSize,
    /// A number or size starts with `-`.
    Negative,
    /// The number or size does not fit in 64 bits.
    Overflow,
    /// [`Value::unescape_into`] was given a buffer shorter than the unescaped value.
    BufferTooSmall {
        /// The buffer length needed: [`Value::unescaped_len`].
        needed: usize,
    },
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::Empty => f.write_str("the value is empty"),
            ValueError::NotBool => f.write_str("expected on/off, yes/no, true/false or y/n"),
            ValueError::NotNumber => {
                f.write_str("expected a decimal number without leading zeros, or 0x and hex digits")
            }
            ValueError::NotSize => f.write_str(
                "expected a size such as 512, 64k, 1.5G or 0x1000 \
                 (suffixes b, k, M, G, T, P, E are powers of 1024)",
            ),
            ValueError::Negative => f.write_str("negative values are not allowed"),
            ValueError::Overflow => f.write_str("the value does not fit in 64 bits"),
            ValueError::BufferTooSmall { needed } => {
                write!(f, "the value needs a buffer of {needed} bytes")
            }
        }
    }
}

impl<'a> Value<'a> {
    /// A value with text `raw` (escaped if `escaped`) at byte `offset` of the input.
    pub(super) const fn new(raw: &'a str, escaped: bool, offset: usize) -> Self {
        Value {
            raw,
            escaped,
            offset,
        }
    }

    /// The value as written in the input, with `,,` escapes.
    pub const fn raw(&self) -> &'a str {
        self.raw
    }

    /// True if the value contains a `,,` escape (so [`Value::as_str`] is `None`).
    pub const fn is_escaped(&self) -> bool {
        self.escaped
    }

    /// Byte offset of the value in the input.
    pub const fn offset(&self) -> usize {
        self.offset
    }

    /// The value as a string without copying, or `None` if it contains a `,,` escape; then use
    /// [`Value::unescape_into`], [`Value::parts`] or [`Value::eq_str`].
    pub const fn as_str(&self) -> Option<&'a str> {
        if self.escaped {
            None
        } else {
            Some(self.raw)
        }
    }

    /// The pieces of the unescaped value, in order: `a,,b` yields `a,` and `b`. Concatenated
    /// they are the value; the empty value yields nothing.
    pub fn parts(&self) -> ValueParts<'a> {
        ValueParts { rest: self.raw }
    }

    /// Length in bytes of the unescaped value.
    pub fn unescaped_len(&self) -> usize {
        self.parts().map(str::len).sum()
    }

    /// Copies the unescaped value into the start of `buf` and returns it.
    ///
    /// Fails with [`ValueError::BufferTooSmall`] if `buf` is shorter than
    /// [`Value::unescaped_len`].
    pub fn unescape_into<'b>(&self, buf: &'b mut [u8]) -> Result<&'b str, ValueError> {
        let needed = self.unescaped_len();
        let too_small = ValueError::BufferTooSmall { needed };
        let out = buf.get_mut(..needed).ok_or(too_small)?;
        let mut filled = 0;
        for part in self.parts() {
            let end = filled + part.len();
            out.get_mut(filled..end)
                .ok_or(too_small)?
                .copy_from_slice(part.as_bytes());
            filled = end;
        }
        // Each part is a whole `str`, so the copy is valid UTF-8 and this cannot fail.
        core::str::from_utf8(out).map_err(|_| too_small)
    }

    /// True if the unescaped value equals `s`; needs no buffer.
    pub fn eq_str(&self, s: &str) -> bool {
        let mut rest = s;
        for part in self.parts() {
            match rest.strip_prefix(part) {
                Some(tail) => rest = tail,
                None => return false,
            }
        }
        rest.is_empty()
    }

    /// The value as a QEMU boolean: `on`, `yes`, `true`, `y` are true and `off`, `no`, `false`,
    /// `n` are false (exactly QEMU's `qapi_bool_parse`, case-sensitive).
    pub fn parse_bool(&self) -> Result<bool, ValueError> {
        match self.raw {
            "on" | "yes" | "true" | "y" => Ok(true),
            "off" | "no" | "false" | "n" => Ok(false),
            _ => Err(ValueError::NotBool),
        }
    }

    /// The value as an unsigned number: decimal (`4096`) or hexadecimal with `0x`/`0X`
    /// (`0x1000`).
    ///
    /// Signs, spaces and decimal numbers with leading zeros (`010`) are refused: QEMU would read
    /// the last as octal, and guessing differently would be worse than an error.
    pub fn parse_u64(&self) -> Result<u64, ValueError> {
        let s = self.unsigned_text(ValueError::NotNumber)?;
        if let Some(hex) = strip_hex_prefix(s) {
            return parse_digits(hex, 16)
                .ok_or_else(|| digits_error(hex, 16, ValueError::NotNumber));
        }
        if s.len() > 1 && s.starts_with('0') {
            return Err(ValueError::NotNumber);
        }
        parse_digits(s, 10).ok_or_else(|| digits_error(s, 10, ValueError::NotNumber))
    }

    /// The value as a size in bytes, like QEMU's `qemu_strtosz`.
    ///
    /// Accepted: decimal `512`; a suffix `b`/`B` (bytes), `k`/`K`, `m`/`M`, `g`/`G`, `t`/`T`,
    /// `p`/`P`, `e`/`E` for powers of 1024 (`64k` = 65536); a decimal fraction with a suffix
    /// larger than bytes (`1.5G`, `.5k`, `1.k`), computed exactly and rounded to the nearest
    /// byte, halves up; hexadecimal `0x1000` without suffix or fraction (`0x1b` is 27).
    /// Refused: signs ([`ValueError::Negative`] for `-`), spaces, exponents (`1e3`), a non-zero
    /// fraction without a suffix (`1.5`), and results above `u64::MAX`
    /// ([`ValueError::Overflow`], e.g. `16E`).
    pub fn parse_size(&self) -> Result<u64, ValueError> {
        let s = self.unsigned_text(ValueError::NotSize)?;
        if let Some(hex) = strip_hex_prefix(s) {
            return parse_digits(hex, 16).ok_or_else(|| digits_error(hex, 16, ValueError::NotSize));
        }
        parse_decimal_size(s)
    }

    /// The raw text for the number parsers: refuses empty and negative values, and escaped ones
    /// with `malformed`.
    fn unsigned_text(&self, malformed: ValueError) -> Result<&'a str, ValueError> {
        match self.raw.as_bytes().first() {
            None => Err(ValueError::Empty),
            Some(b'-') => Err(ValueError::Negative),
            // A comma is never part of a number.
            Some(_) if self.escaped => Err(malformed),
            Some(_) => Ok(self.raw),
        }
    }
}

impl fmt::Display for Value<'_> {
    /// Writes the unescaped value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parts().try_for_each(|part| f.write_str(part))
    }
}

/// Iterator over the pieces of an unescaped [`Value`]; see [`Value::parts`].
#[derive(Clone, Debug)]
pub struct ValueParts<'a> {
    /// The escaped text not yet returned.
    rest: &'a str,
}

impl<'a> Iterator for ValueParts<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        // Return up to and including the first comma of a `,,` pair, and skip the second.
        let (part, rest) = match self.rest.find(",,") {
            Some(i) => (self.rest.get(..=i), self.rest.get(i + 2..)),
            None => (Some(self.rest), Some("")),
        };
        // The split points are next to ASCII commas, so both slices exist.
        self.rest = rest.unwrap_or("");
        part
    }
}

/// `s` without a leading `0x` or `0X`, if it has one.
fn strip_hex_prefix(s: &str) -> Option<&str> {
    s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))
}

/// The number written with one or more `radix` digits (10 or 16) and nothing else, or `None` if
/// `s` is not that or the number overflows; [`digits_error`] tells which.
fn parse_digits(s: &str, radix: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.chars().try_fold(0u64, |acc, ch| {
        let digit = ch.to_digit(radix)?;
        acc.checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))
    })
}

/// Why [`parse_digits`] failed on `s`: [`ValueError::Overflow`] if `s` is all digits, else
/// `malformed`.
fn digits_error(s: &str, radix: u32, malformed: ValueError) -> ValueError {
    if !s.is_empty() && s.chars().all(|ch| ch.is_digit(radix)) {
        ValueError::Overflow
    } else {
        malformed
    }
}

/// The multiplier of a size suffix, or `None` if `ch` is not one.
fn suffix_multiplier(ch: u8) -> Option<u64> {
    let shift = match ch.to_ascii_uppercase() {
        b'B' => 0,
        b'K' => 10,
        b'M' => 20,
        b'G' => 30,
        b'T' => 40,
        b'P' => 50,
        b'E' => 60,
        _ => return None,
    };
    Some(1 << shift)
}

/// Parses `integer[.fraction][suffix]` for [`Value::parse_size`]; `s` is not empty, negative or
/// hexadecimal.
fn parse_decimal_size(s: &str) -> Result<u64, ValueError> {
    let (number, multiplier) = match s.as_bytes().last().copied().and_then(suffix_multiplier) {
        // The suffix is one ASCII byte, so the slice exists.
        Some(multiplier) => (s.get(..s.len() - 1).unwrap_or(""), multiplier),
        None => (s, 1),
    };
    let (integer, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if integer.len() + fraction.len() == 0 || !all_digits(integer) || !all_digits(fraction) {
        return Err(ValueError::NotSize);
    }
    // QEMU insists on a unit larger than bytes for a fraction; `1.0` and `1.` are still fine.
    if multiplier == 1 && fraction.bytes().any(|b| b != b'0') {
        return Err(ValueError::NotSize);
    }
    let integer = if integer.is_empty() {
        0
    } else {
        parse_digits(integer, 10).ok_or(ValueError::Overflow)?
    };
    let whole = u128::from(integer) * u128::from(multiplier);
    let total = whole + fraction_times(fraction, multiplier);
    u64::try_from(total).map_err(|_| ValueError::Overflow)
}

/// `0.fraction × multiplier` rounded to the nearest integer, halves up, computed exactly.
///
/// `fraction` holds only ASCII digits (any number of them) and `multiplier` is at most 2^60.
fn fraction_times(fraction: &str, multiplier: u64) -> u128 {
    // Horner's rule from the last digit. For any integer m,
    //     floor(m × 0.d1 d2 … dn) = floor((d1 × m + floor(m × 0.d2 … dn)) / 10),
    // so integers suffice and nothing is lost. With y = multiplier × 0.d1 … dn, taking
    // m = 2 × multiplier gives floor(2y), and round-half-up(y) = floor((floor(2y) + 1) / 2).
    // The accumulator stays below m ≤ 2^61, so nothing overflows a u128.
    let m = 2 * u128::from(multiplier);
    // (`saturating_sub` only guards against a non-digit, which the caller has excluded.)
    let twice = fraction.bytes().rev().fold(0u128, |acc, b| {
        (u128::from(b.saturating_sub(b'0')) * m + acc) / 10
    });
    // floor((t + 1) / 2) is ceil(t / 2).
    twice.div_ceil(2)
}
