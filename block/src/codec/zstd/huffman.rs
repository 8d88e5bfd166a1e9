//! Huffman literals (RFC 8878, section 4.2): the tree description (weights, direct or
//! FSE-compressed), the decoding table (one lookup of the longest code's bits per symbol, at most
//! 11 bits: 2048 entries), and decoding of one backward stream.

use super::bits::BackwardBits;
use super::fse::{State, Table as FseTable, MAX_SYMBOLS};
use super::ZstdError;

/// Longest code (`Max_Number_of_Bits`).
pub const MAX_BITS: u8 = 11;
/// Entries of the largest table.
const SIZE: usize = 1 << MAX_BITS;

/// A decoding table: for each `bits`-bit window, the symbol and its code length.
pub struct Table {
    symbols: [u8; SIZE],
    lengths: [u8; SIZE],
    /// Longest code length in use; 0 when no table has been read in this frame.
    bits: u8,
}

impl Table {
    /// No table.
    pub const fn new() -> Self {
        Self {
            symbols: [0; SIZE],
            lengths: [0; SIZE],
            bits: 0,
        }
    }

    /// Forgets the table (a new frame).
    pub fn clear(&mut self) {
        self.bits = 0;
    }

    /// A table has been read in this frame (treeless literals may reuse it).
    pub fn ready(&self) -> bool {
        self.bits > 0
    }

    /// Reads a tree description at the start of `src` and builds the table; returns the bytes
    /// it took.
    pub fn read(&mut self, src: &[u8]) -> Result<usize, ZstdError> {
        let mut weights = [0u8; 256];
        let (n, used) = read_weights(src, &mut weights)?;
        self.build(&weights[..n])?;
        Ok(used)
    }

    /// Builds the table from the weights of symbols `0..n-1`; the last symbol's weight is implied.
    pub fn build(&mut self, given: &[u8]) -> Result<(), ZstdError> {
        if given.is_empty() || given.len() > 255 {
            return Err(ZstdError::Corrupt("Huffman tree with no weights"));
        }
        let mut total: u32 = 0;
        for &w in given {
            if w > MAX_BITS {
                return Err(ZstdError::Corrupt("Huffman weight too large"));
            }
            if w > 0 {
                total += 1 << (w - 1);
            }
        }
        if total == 0 {
            return Err(ZstdError::Corrupt("Huffman tree with only zero weights"));
        }
        let bits = 32 - total.leading_zeros(); // highest bit + 1
        if bits > u32::from(MAX_BITS) {
            return Err(ZstdError::Corrupt("Huffman code longer than 11 bits"));
        }
        let rest = (1u32 << bits) - total;
        if !rest.is_power_of_two() {
            return Err(ZstdError::Corrupt("Huffman weights do not complete a tree"));
        }
        let last_weight = rest.trailing_zeros() + 1;
        let n = given.len() + 1;
        let weight = |s: usize| -> u32 {
            if s + 1 == n {
                last_weight
            } else {
                u32::from(given[s])
            }
        };
        // Fill by weight ascending, then symbol: each takes 2^(w-1) consecutive entries.
        let mut at = 0usize;
        for w in 1..=bits {
            for s in 0..n {
                if weight(s) != w {
                    continue;
                }
                let len = (bits + 1 - w) as u8;
                let span = 1usize << (w - 1);
                let end = at + span;
                if end > SIZE {
                    return Err(ZstdError::Corrupt("Huffman table overflow"));
                }
                self.symbols[at..end].fill(s as u8);
                self.lengths[at..end].fill(len);
                at = end;
            }
        }
        if at != 1 << bits {
            return Err(ZstdError::Corrupt("Huffman table not filled"));
        }
        self.bits = bits as u8;
        Ok(())
    }

    /// Decodes `out.len()` symbols from the stream `src`, which must end exactly there.
    pub fn decode(&self, src: &[u8], out: &mut [u8]) -> Result<(), ZstdError> {
        let mut bits = BackwardBits::new(src)?;
        let b = u32::from(self.bits);
        for o in out.iter_mut() {
            let v = bits.peek(b) as usize;
            let (Some(&s), Some(&len)) = (self.symbols.get(v), self.lengths.get(v)) else {
                return Err(ZstdError::Corrupt("Huffman lookup outside the table"));
            };
            *o = s;
            bits.consume(u32::from(len));
            if bits.overflowed() {
                return Err(ZstdError::Corrupt(
                    "Huffman stream shorter than its literals",
                ));
            }
        }
        if !bits.finished() {
            return Err(ZstdError::Corrupt(
                "Huffman stream longer than its literals",
            ));
        }
        Ok(())
    }
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads the weights of a tree description into `weights`: returns their number and the
/// bytes the description took.
fn read_weights(src: &[u8], weights: &mut [u8; 256]) -> Result<(usize, usize), ZstdError> {
    let Some(&header) = src.first() else {
        return Err(ZstdError::Corrupt("Huffman tree description missing"));
    };
    if header >= 128 {
        // Direct: 4 bits per weight, first weight in the high nibble.
        let n = usize::from(header) - 127;
        let bytes = n.div_ceil(2);
        let Some(packed) = src.get(1..1 + bytes) else {
            return Err(ZstdError::Corrupt(
                "Huffman weights past the end of the block",
            ));
        };
        for i in 0..n {
            let b = packed[i / 2];
            weights[i] = if i % 2 == 0 { b >> 4 } else { b & 15 };
        }
        return Ok((n, 1 + bytes));
    }
    // FSE-compressed weights: a table (accuracy log at most 6) and two interleaved states.
    let size = usize::from(header);
    let Some(body) = src.get(1..1 + size) else {
        return Err(ZstdError::Corrupt(
            "Huffman weights past the end of the block",
        ));
    };
    let mut table = FseTable::<64>::new();
    let used = table.read(body, MAX_SYMBOLS.min(MAX_BITS as usize + 1) - 1, 6)?;
    let Some(stream) = body.get(used..) else {
        return Err(ZstdError::Corrupt("Huffman weights stream missing"));
    };
    let mut bits = BackwardBits::new(stream)?;
    let mut s1 = State::init(&table, &mut bits);
    let mut s2 = State::init(&table, &mut bits);
    let mut n = 0usize;
    let mut push = |w: u8, n: &mut usize| -> Result<(), ZstdError> {
        let slot = weights
            .get_mut(*n)
            .ok_or(ZstdError::Corrupt("more than 255 Huffman weights"))?;
        *slot = w;
        *n += 1;
        Ok(())
    };
    loop {
        push(s1.symbol(&table), &mut n)?;
        s1.update(&table, &mut bits);
        if bits.overflowed() {
            push(s2.symbol(&table), &mut n)?;
            break;
        }
        push(s2.symbol(&table), &mut n)?;
        s2.update(&table, &mut bits);
        if bits.overflowed() {
            push(s1.symbol(&table), &mut n)?;
            break;
        }
    }
    if n > 255 {
        return Err(ZstdError::Corrupt("more than 255 Huffman weights"));
    }
    Ok((n, 1 + size))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn rfc_example_table() {
        // RFC 8878 4.2.1.3: weights 4 3 2 0 1 (and the implied last, 1) give
        // codes 0:"1", 1:"01", 2:"001", 4:"0000", 5:"0001".
        let mut t = Table::new();
        t.build(&[4, 3, 2, 0, 1]).unwrap();
        assert_eq!(t.bits, 4);
        let code = |v: usize| (t.symbols[v], t.lengths[v]);
        assert_eq!(code(0b1000), (0, 1));
        assert_eq!(code(0b1111), (0, 1));
        assert_eq!(code(0b0100), (1, 2));
        assert_eq!(code(0b0010), (2, 3));
        assert_eq!(code(0b0000), (4, 4));
        assert_eq!(code(0b0001), (5, 4));
    }

    #[test]
    fn decodes_a_hand_made_stream() {
        let mut t = Table::new();
        t.build(&[4, 3, 2, 0, 1]).unwrap();
        // Symbols 0, 1, 5 -> bits "1" "01" "0001" = 1010001 (7 bits), written backwards: the
        // first code sits just below the end marker. Byte: marker at bit 7, then 1010001.
        let src = [0b1101_0001u8];
        let mut out = [0u8; 3];
        t.decode(&src, &mut out).unwrap();
        assert_eq!(out, [0, 1, 5]);
        // One literal too many or too few is an error.
        assert!(t.decode(&src, &mut [0u8; 4]).is_err());
        assert!(t.decode(&src, &mut [0u8; 2]).is_err());
    }

    #[test]
    fn direct_weights() {
        // 5 weights, direct (header 127 + 5 = 132): 4 3 2 0 1 packed in nibbles.
        let src = [132u8, 0x43, 0x20, 0x10];
        let mut t = Table::new();
        assert_eq!(t.read(&src).unwrap(), 4);
        assert!(t.ready());
        assert_eq!(t.bits, 4);
    }

    #[test]
    fn bad_trees_are_errors() {
        let mut t = Table::new();
        assert!(t.build(&[]).is_err());
        assert!(t.build(&[0, 0]).is_err());
        assert!(t.build(&[12]).is_err());
        // 2 + 1 + 1 = 4 with weight 2, 1, 1... weights [2, 1, 2]: total 2+1+2 = 5, rest 3.
        assert!(t.build(&[2, 1, 2]).is_err());
        assert!(t.read(&[200u8, 0]).is_err());
        assert!(t.read(&[]).is_err());
        assert!(t.read(&[10, 0, 0]).is_err());
    }
}
