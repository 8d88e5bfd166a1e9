//! Finite State Entropy tables (RFC 8878, section 4.1): reading a table description
//! (normalized counts), building the decoding table, and the predefined distributions of
//! sequence codes. A table is a fixed array sized for the largest accuracy log a field allows.

use super::bits::{BackwardBits, ForwardBits};
use super::ZstdError;

/// One decoding state: the symbol it emits, the bits to read for the next state and the base
/// those bits are added to.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Decoded symbol.
    pub symbol: u8,
    /// Bits read to find the next state.
    pub bits: u8,
    /// Next state before adding those bits.
    pub base: u16,
}

/// A decoding table of at most `N` states (`N` a power of two: the largest accuracy log's).
#[derive(Clone, Copy, Debug)]
pub struct Table<const N: usize> {
    entries: [Entry; N],
    /// Accuracy log of the table in use (0 for an RLE table's single state).
    log: u8,
}

/// Largest symbol count of any FSE field (match lengths: 53 codes).
pub const MAX_SYMBOLS: usize = 53;

impl<const N: usize> Table<N> {
    /// An empty table (one state, symbol 0).
    pub const fn new() -> Self {
        Self {
            entries: [Entry {
                symbol: 0,
                bits: 0,
                base: 0,
            }; N],
            log: 0,
        }
    }

    /// Accuracy log.
    pub fn log(&self) -> u8 {
        self.log
    }

    /// The state `state` (masked to the table).
    pub fn entry(&self, state: usize) -> Entry {
        let mask = (1usize << self.log) - 1;
        self.entries.get(state & mask).copied().unwrap_or_default()
    }

    /// A table of one state that always emits `symbol` and reads no bits (RLE mode).
    pub fn set_rle(&mut self, symbol: u8) {
        self.log = 0;
        if let Some(e) = self.entries.first_mut() {
            *e = Entry {
                symbol,
                bits: 0,
                base: 0,
            };
        }
    }

    /// Reads a table description from the start of `src` (symbols up to `max_symbol`, accuracy
    /// log up to `max_log`), builds the table, and returns the bytes the description took.
    pub fn read(&mut self, src: &[u8], max_symbol: usize, max_log: u8) -> Result<usize, ZstdError> {
        let mut counts = [0i16; MAX_SYMBOLS];
        let (log, symbols, used) = read_counts(src, &mut counts, max_symbol, max_log)?;
        self.build(&counts[..symbols], log)?;
        Ok(used)
    }

    /// Builds the decoding table of normalized `counts` (-1 for "less than one") whose absolute
    /// values add up to `1 << log`.
    pub fn build(&mut self, counts: &[i16], log: u8) -> Result<(), ZstdError> {
        let size = 1usize << log;
        if size > N || counts.len() > MAX_SYMBOLS {
            return Err(ZstdError::Corrupt("FSE accuracy log too large"));
        }
        let total: usize = counts.iter().map(|&c| c.unsigned_abs() as usize).sum();
        if total != size {
            return Err(ZstdError::Corrupt(
                "FSE counts do not add up to the table size",
            ));
        }
        let mut next = [0u16; MAX_SYMBOLS];
        let mut high = size - 1;
        // "Less than one" symbols take the last states, one each.
        for (s, &c) in counts.iter().enumerate() {
            if c == -1 {
                self.entries[high].symbol = s as u8;
                high = high.wrapping_sub(1);
                next[s] = 1;
            } else {
                next[s] = c.max(0) as u16;
            }
        }
        let step = (size >> 1) + (size >> 3) + 3;
        let mask = size - 1;
        let mut pos = 0usize;
        for (s, &c) in counts.iter().enumerate() {
            for _ in 0..c.max(0) {
                self.entries[pos].symbol = s as u8;
                pos = (pos + step) & mask;
                // `high` may have wrapped (every state is "less than one"): then nothing is free.
                let mut guard = 0;
                while pos > high && high < size {
                    pos = (pos + step) & mask;
                    guard += 1;
                    if guard > size {
                        return Err(ZstdError::Corrupt("FSE table cannot be spread"));
                    }
                }
            }
        }
        if pos != 0 {
            return Err(ZstdError::Corrupt(
                "FSE table spread does not end at state 0",
            ));
        }
        for e in self.entries[..size].iter_mut() {
            let s = usize::from(e.symbol);
            let n = next[s];
            next[s] = n.wrapping_add(1);
            if n == 0 {
                return Err(ZstdError::Corrupt("FSE table state without a count"));
            }
            let bits = u32::from(log) - (15 - n.leading_zeros());
            e.bits = bits as u8;
            e.base = ((u32::from(n) << bits) - size as u32) as u16;
        }
        self.log = log;
        Ok(())
    }
}

impl<const N: usize> Default for Table<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads normalized counts into `counts`: returns the accuracy log, the number of symbols and
/// the bytes used.
fn read_counts(
    src: &[u8],
    counts: &mut [i16; MAX_SYMBOLS],
    max_symbol: usize,
    max_log: u8,
) -> Result<(u8, usize, usize), ZstdError> {
    let mut bits = ForwardBits::new(src);
    if src.is_empty() {
        return Err(ZstdError::Corrupt("FSE table description missing"));
    }
    let log = bits.read(4) as u8 + 5;
    if log > max_log {
        return Err(ZstdError::Corrupt(
            "FSE accuracy log above the field's maximum",
        ));
    }
    let mut remaining: i32 = (1 << log) + 1;
    let mut threshold: i32 = 1 << log;
    let mut nbits: u32 = u32::from(log) + 1;
    let mut symbol = 0usize;
    while remaining > 1 {
        if symbol > max_symbol {
            return Err(ZstdError::Corrupt(
                "FSE counts run past the field's last symbol",
            ));
        }
        let max = (2 * threshold - 1) - remaining;
        let low = bits.peek(nbits - 1) as i32;
        let value = if low < max {
            bits.skip(nbits - 1);
            low
        } else {
            let mut v = bits.peek(nbits) as i32;
            if v >= threshold {
                v -= max;
            }
            bits.skip(nbits);
            v
        };
        let count = value - 1;
        remaining -= count.abs();
        counts[symbol] = count as i16;
        symbol += 1;
        if count == 0 {
            // Repeat flags: runs of further zero counts, 3 at a time while the flag is 3.
            loop {
                let flag = bits.read(2) as usize;
                for _ in 0..flag {
                    if symbol > max_symbol {
                        return Err(ZstdError::Corrupt(
                            "FSE zero run past the field's last symbol",
                        ));
                    }
                    counts[symbol] = 0;
                    symbol += 1;
                }
                if flag != 3 {
                    break;
                }
            }
        }
        while remaining < threshold && threshold > 1 {
            nbits -= 1;
            threshold >>= 1;
        }
        bits.bytes_used()?;
    }
    if remaining != 1 {
        return Err(ZstdError::Corrupt("FSE counts do not add up"));
    }
    Ok((log, symbol, bits.bytes_used()?))
}

/// A decoding state over a table.
pub struct State {
    state: usize,
}

impl State {
    /// Reads the initial state (the table's accuracy log in bits).
    pub fn init<const N: usize>(table: &Table<N>, bits: &mut BackwardBits<'_>) -> Self {
        Self {
            state: bits.read(u32::from(table.log())) as usize,
        }
    }

    /// The symbol of the current state.
    pub fn symbol<const N: usize>(&self, table: &Table<N>) -> u8 {
        table.entry(self.state).symbol
    }

    /// Moves to the next state.
    pub fn update<const N: usize>(&mut self, table: &Table<N>, bits: &mut BackwardBits<'_>) {
        let e = table.entry(self.state);
        self.state = usize::from(e.base) + bits.read(u32::from(e.bits)) as usize;
    }
}

/// Predefined literal-length distribution (accuracy log 6).
pub const LL_DEFAULT: [i16; 36] = [
    4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1,
    -1, -1, -1, -1,
];
/// Predefined match-length distribution (accuracy log 6).
pub const ML_DEFAULT: [i16; 53] = [
    1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1,
];
/// Predefined offset-code distribution (accuracy log 5).
pub const OF_DEFAULT: [i16; 29] = [
    1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1,
];

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;

    #[test]
    fn predefined_tables_build() {
        let mut t = Table::<512>::new();
        t.build(&LL_DEFAULT, 6).unwrap();
        // RFC 8878 appendix A: state 0 emits literal length code 0 with 4 bits, base 0;
        // the "less than one" codes 32..35 take the last states from the top, 6 bits each.
        assert_eq!(
            t.entry(0),
            Entry {
                symbol: 0,
                bits: 4,
                base: 0
            }
        );
        assert_eq!(
            t.entry(1),
            Entry {
                symbol: 0,
                bits: 4,
                base: 16
            }
        );
        assert_eq!(
            t.entry(63),
            Entry {
                symbol: 32,
                bits: 6,
                base: 0
            }
        );
        assert_eq!(
            t.entry(60),
            Entry {
                symbol: 35,
                bits: 6,
                base: 0
            }
        );
        t.build(&ML_DEFAULT, 6).unwrap();
        assert_eq!(
            t.entry(0),
            Entry {
                symbol: 0,
                bits: 6,
                base: 0
            }
        );
        assert_eq!(
            t.entry(1),
            Entry {
                symbol: 1,
                bits: 4,
                base: 0
            }
        );
        let mut o = Table::<256>::new();
        o.build(&OF_DEFAULT, 5).unwrap();
        assert_eq!(
            o.entry(0),
            Entry {
                symbol: 0,
                bits: 5,
                base: 0
            }
        );
        assert_eq!(
            o.entry(1),
            Entry {
                symbol: 6,
                bits: 4,
                base: 0
            }
        );
    }

    #[test]
    #[allow(clippy::unusual_byte_groupings)] // reason: the groups are the fields
    fn counts_round_trip_through_a_description() {
        // Accuracy log 5 (low nibble 0), then counts for a 2-symbol table 16/16:
        // hand-encoded: remaining 33, threshold 32, nbits 6; value 17 (count 16).
        // 17 < max (63 - 33 = 30) so it takes 5 bits: 10001.
        // Then remaining 17, threshold 16 (nbits 5); max = 31 - 17 = 14; value 17 >= 14:
        // 5 bits, raw = 17 + 14 = 31 (>= 16, so minus 14 gives 17): 11111.
        let v: u32 = 0b11111_10001_0000;
        let src = v.to_le_bytes();
        let mut counts = [0i16; MAX_SYMBOLS];
        let (log, n, used) = read_counts(&src, &mut counts, 10, 9).unwrap();
        assert_eq!((log, n, used), (5, 2, 2));
        assert_eq!(&counts[..2], &[16, 16]);
    }

    #[test]
    fn bad_descriptions_are_errors() {
        let mut t = Table::<64>::new();
        // Accuracy log 5 + 15 = 20, above any maximum.
        assert!(t.read(&[0x0f, 0, 0, 0], 35, 9).is_err());
        // All zero bits: counts never add up before the symbols run out.
        assert!(t.read(&[0; 8], 35, 6).is_err());
        assert!(t.read(&[], 35, 6).is_err());
        // Counts that do not add up to the table size.
        assert!(t.build(&[3, 3], 2).is_err());
        // A table larger than its storage.
        assert!(t.build(&[64, 64], 7).is_err());
    }
}
