//! The sequences section of a compressed block (RFC 8878, sections 3.1.1.3.2 and 3.1.1.4):
//! the three FSE tables (predefined, RLE, described, or repeated from the previous block),
//! the interleaved backward bitstream, repeat offsets, and the execution of each sequence
//! (copy literals, then a match from earlier output of the frame) as it is decoded.

use super::bits::BackwardBits;
use super::fse::{State, Table, LL_DEFAULT, ML_DEFAULT, OF_DEFAULT};
use super::{ZstdError, BLOCK_MAX};

/// Largest literal-length code.
const LL_MAX: usize = 35;
/// Largest match-length code.
const ML_MAX: usize = 52;
/// Largest offset code this decoder accepts (offsets below 2^31).
const OF_MAX: usize = 31;

/// Literal-length codes 16 and up: (base, extra bits).
const LL_CODES: [(u32, u8); 20] = [
    (16, 1),
    (18, 1),
    (20, 1),
    (22, 1),
    (24, 2),
    (28, 2),
    (32, 3),
    (40, 3),
    (48, 4),
    (64, 6),
    (128, 7),
    (256, 8),
    (512, 9),
    (1024, 10),
    (2048, 11),
    (4096, 12),
    (8192, 13),
    (16384, 14),
    (32768, 15),
    (65536, 16),
];
/// Match-length codes 32 and up: (base, extra bits).
const ML_CODES: [(u32, u8); 21] = [
    (35, 1),
    (37, 1),
    (39, 1),
    (41, 1),
    (43, 2),
    (47, 2),
    (51, 3),
    (59, 3),
    (67, 4),
    (83, 4),
    (99, 5),
    (131, 7),
    (259, 8),
    (515, 9),
    (1027, 10),
    (2051, 11),
    (4099, 12),
    (8195, 13),
    (16387, 14),
    (32771, 15),
    (65539, 16),
];

/// The sequence decoding state a frame carries from block to block.
pub struct Tables {
    ll: Table<512>,
    of: Table<256>,
    ml: Table<512>,
    /// Each table (LL, OF, ML) holds something a "repeat" mode may reuse.
    ready: [bool; 3],
    /// Repeat offsets.
    rep: [u32; 3],
}

impl Tables {
    /// Empty tables (all zeros, so a `static` of them needs no initialised data; [`Tables::reset`]
    /// sets the repeat offsets at each frame).
    pub const fn new() -> Self {
        Self {
            ll: Table::new(),
            of: Table::new(),
            ml: Table::new(),
            ready: [false; 3],
            rep: [0; 3],
        }
    }

    /// A new frame: no table to repeat, initial repeat offsets.
    pub fn reset(&mut self) {
        self.ready = [false; 3];
        self.rep = [1, 4, 8];
    }
}

impl Default for Tables {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a block's output goes: the whole output buffer, the current position, the start of
/// the frame (matches may not reach before it) and the block's literals, already decoded into
/// `out[lit_at..lit_at + lit_len]` (the unused tail of `out`).
pub struct Sink<'o> {
    /// Output of every frame so far, and room for the rest.
    pub out: &'o mut [u8],
    /// Next byte to write.
    pub pos: usize,
    /// First byte of the current frame.
    pub frame_start: usize,
    /// First literal.
    pub lit_at: usize,
    /// Literals of the block.
    pub lit_len: usize,
}

impl Sink<'_> {
    /// Copies the next `n` literals (`used` of them consumed so far).
    fn literals(&mut self, used: &mut usize, n: usize) -> Result<(), ZstdError> {
        if n > self.lit_len - *used {
            return Err(ZstdError::Corrupt(
                "sequences use more literals than the block has",
            ));
        }
        let from = self.lit_at + *used;
        self.out.copy_within(from..from + n, self.pos);
        self.pos += n;
        *used += n;
        Ok(())
    }

    /// Copies `len` bytes from `offset` back (`used` literals consumed so far).
    fn matched(&mut self, used: usize, offset: usize, len: usize) -> Result<(), ZstdError> {
        if offset == 0 || offset > self.pos - self.frame_start {
            return Err(ZstdError::Corrupt(
                "match offset before the start of the frame",
            ));
        }
        // The literals not yet consumed must stay intact: the match ends before them.
        if len > self.lit_at + used - self.pos {
            return Err(ZstdError::Corrupt("block decodes to more than its output"));
        }
        let start = self.pos - offset;
        if offset == 1 {
            let b = self.out[start];
            self.out[self.pos..self.pos + len].fill(b);
        } else {
            // Copy in chunks that never overlap their source: the copied region stays periodic,
            // so each chunk may be as long as everything from `start` to the write position.
            let mut done = 0;
            while done < len {
                let n = (len - done).min(offset + done);
                self.out.copy_within(start..start + n, self.pos + done);
                done += n;
            }
        }
        self.pos += len;
        Ok(())
    }
}

/// Decodes the sequences section `src` and executes it into `sink`; then copies the literals
/// left over.
pub fn execute(src: &[u8], tables: &mut Tables, sink: &mut Sink<'_>) -> Result<(), ZstdError> {
    let short = ZstdError::Corrupt("sequences header past the end of the block");
    let block_start = sink.pos;
    let b0 = usize::from(*src.first().ok_or(short)?);
    let byte = |i: usize| src.get(i).copied().map(usize::from).ok_or(short);
    let (count, mut at) = match b0 {
        0..=127 => (b0, 1),
        128..=254 => (((b0 - 128) << 8) + byte(1)?, 2),
        _ => (byte(1)? + (byte(2)? << 8) + 0x7f00, 3),
    };
    let mut used = 0usize;
    if count == 0 {
        if src.len() != at {
            return Err(ZstdError::Corrupt("bytes after an empty sequences section"));
        }
        return sink.literals(&mut used, sink.lit_len);
    }
    let modes = byte(at)?;
    at += 1;
    if modes & 3 != 0 {
        return Err(ZstdError::Corrupt(
            "reserved bits set in the sequence compression modes",
        ));
    }
    at += table(
        &mut tables.ll,
        &mut tables.ready[0],
        (modes >> 6) & 3,
        src.get(at..).unwrap_or(&[]),
        &LL_DEFAULT,
        6,
        LL_MAX,
        9,
    )?;
    at += table(
        &mut tables.of,
        &mut tables.ready[1],
        (modes >> 4) & 3,
        src.get(at..).unwrap_or(&[]),
        &OF_DEFAULT,
        5,
        OF_MAX,
        8,
    )?;
    at += table(
        &mut tables.ml,
        &mut tables.ready[2],
        (modes >> 2) & 3,
        src.get(at..).unwrap_or(&[]),
        &ML_DEFAULT,
        6,
        ML_MAX,
        9,
    )?;
    let mut bits = BackwardBits::new(src.get(at..).unwrap_or(&[]))?;
    let (ll_t, of_t, ml_t) = (&tables.ll, &tables.of, &tables.ml);
    let mut ll = State::init(ll_t, &mut bits);
    let mut of = State::init(of_t, &mut bits);
    let mut ml = State::init(ml_t, &mut bits);
    let rep = &mut tables.rep;
    for i in 0..count {
        let (ll_code, of_code, ml_code) = (ll.symbol(ll_t), of.symbol(of_t), ml.symbol(ml_t));
        if usize::from(of_code) > OF_MAX {
            return Err(ZstdError::Corrupt("offset code too large"));
        }
        let of_value = (1u32 << of_code) + bits.read(u32::from(of_code));
        let ml_len = length(ml_code, 3, 32, &ML_CODES, &mut bits)?;
        let ll_len = length(ll_code, 0, 16, &LL_CODES, &mut bits)?;
        if i + 1 < count {
            ll.update(ll_t, &mut bits);
            ml.update(ml_t, &mut bits);
            of.update(of_t, &mut bits);
        }
        if bits.overflowed() {
            return Err(ZstdError::Corrupt(
                "sequences bitstream shorter than its sequences",
            ));
        }
        let offset = if of_value > 3 {
            let o = of_value - 3;
            *rep = [o, rep[0], rep[1]];
            o
        } else {
            let index = of_value as usize - 1 + usize::from(ll_len == 0);
            if index == 0 {
                rep[0]
            } else {
                let o = if index == 3 {
                    rep[0].wrapping_sub(1)
                } else {
                    rep[index]
                };
                if index > 1 {
                    rep[2] = rep[1];
                }
                rep[1] = rep[0];
                rep[0] = o;
                o
            }
        };
        sink.literals(&mut used, ll_len as usize)?;
        sink.matched(used, offset as usize, ml_len as usize)?;
        if sink.pos - block_start > BLOCK_MAX {
            return Err(ZstdError::Corrupt("block decodes to more than 128 KiB"));
        }
    }
    if !bits.finished() {
        return Err(ZstdError::Corrupt(
            "sequences bitstream longer than its sequences",
        ));
    }
    let rest = sink.lit_len - used;
    sink.literals(&mut used, rest)?;
    if sink.pos - block_start > BLOCK_MAX {
        return Err(ZstdError::Corrupt("block decodes to more than 128 KiB"));
    }
    Ok(())
}

/// A literal or match length of `code`: codes below `direct` are `code + add`, the others a
/// base from `codes` plus extra bits.
fn length(
    code: u8,
    add: u32,
    direct: u8,
    codes: &[(u32, u8)],
    bits: &mut BackwardBits<'_>,
) -> Result<u32, ZstdError> {
    if code < direct {
        return Ok(u32::from(code) + add);
    }
    let &(base, extra) = codes
        .get(usize::from(code - direct))
        .ok_or(ZstdError::Corrupt("length code too large"))?;
    Ok(base + bits.read(u32::from(extra)))
}

/// Sets up `table` for compression `mode` from the start of `src`: returns the bytes used.
#[allow(clippy::too_many_arguments)] // reason: one field's constants, spelled out at the call
fn table<const N: usize>(
    table: &mut Table<N>,
    ready: &mut bool,
    mode: usize,
    src: &[u8],
    default: &[i16],
    default_log: u8,
    max_symbol: usize,
    max_log: u8,
) -> Result<usize, ZstdError> {
    let used = match mode {
        0 => {
            table.build(default, default_log)?;
            0
        }
        1 => {
            let &s = src.first().ok_or(ZstdError::Corrupt(
                "RLE sequence symbol past the end of the block",
            ))?;
            if usize::from(s) > max_symbol {
                return Err(ZstdError::Corrupt("RLE sequence symbol too large"));
            }
            table.set_rle(s);
            1
        }
        2 => table.read(src, max_symbol, max_log)?,
        _ => {
            if !*ready {
                return Err(ZstdError::Corrupt(
                    "repeated sequence table without a previous one",
                ));
            }
            0
        }
    };
    *ready = true;
    Ok(used)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    fn sink(out: &mut [u8], pos: usize, lit_len: usize) -> Sink<'_> {
        let lit_at = out.len() - lit_len;
        Sink {
            out,
            pos,
            frame_start: 0,
            lit_at,
            lit_len,
        }
    }

    #[test]
    fn overlapping_matches_repeat_their_pattern() {
        let mut out = [0u8; 16];
        out[..3].copy_from_slice(b"abc");
        let mut s = sink(&mut out, 3, 0);
        s.matched(0, 3, 10).unwrap();
        assert_eq!(&s.out[..13], b"abcabcabcabca");
        let mut s = sink(&mut out, 13, 0);
        s.matched(0, 1, 3).unwrap();
        assert_eq!(&out[13..16], b"aaa");
    }

    #[test]
    fn matches_stay_inside_the_frame_and_before_the_literals() {
        let mut out = [0u8; 16];
        let mut s = sink(&mut out, 4, 4);
        assert!(s.matched(0, 5, 1).is_err());
        assert!(s.matched(0, 0, 1).is_err());
        assert!(s.matched(0, 2, 9).is_err());
        s.matched(0, 2, 8).unwrap();
        let mut used = 0;
        assert!(s.literals(&mut used, 5).is_err());
        s.literals(&mut used, 4).unwrap();
        assert_eq!(s.pos, 16);
    }

    #[test]
    fn empty_section_copies_the_literals() {
        let mut out = [0u8; 8];
        out[5..].copy_from_slice(b"xyz");
        let mut s = sink(&mut out, 0, 3);
        execute(&[0], &mut Tables::new(), &mut s).unwrap();
        assert_eq!(s.pos, 3);
        assert_eq!(&out[..3], b"xyz");
        let mut s = sink(&mut out, 0, 3);
        assert!(execute(&[0, 0], &mut Tables::new(), &mut s).is_err());
        let mut s = sink(&mut out, 0, 3);
        assert!(execute(&[], &mut Tables::new(), &mut s).is_err());
    }

    #[test]
    fn repeat_mode_needs_a_previous_table() {
        let mut out = [0u8; 8];
        let mut s = sink(&mut out, 0, 0);
        // One sequence, all three tables "repeat".
        assert!(execute(&[1, 0b1111_1100, 0x80], &mut Tables::new(), &mut s).is_err());
    }
}
