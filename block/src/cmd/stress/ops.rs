//! The stress configuration and its ops: op `i` is a pure function of `(config, i)`.

use core::fmt;

/// Deepest queue the engine runs.
pub const MAX_QD: u32 = 64;
/// Most ops in one run (op indexes fit in an [`super::Entry`]'s 30 bits).
pub const MAX_OPS: u32 = 1 << 30;

/// Relative weights of the op kinds (any scale; their sum must be positive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Reads, verified against the model.
    pub read: u32,
    /// Writes of seeded data.
    pub write: u32,
    /// Write-zeroes that must not deallocate.
    pub zeroes: u32,
    /// Write-zeroes that may deallocate.
    pub zeroes_unmap: u32,
    /// Discards.
    pub discard: u32,
    /// Flushes (barriers with a marker).
    pub flush: u32,
}

impl Default for Mix {
    /// 30% reads, 40% writes, 8% write-zeroes, 7% with unmap, 10% discards, 5% flushes.
    fn default() -> Self {
        Self { read: 30, write: 40, zeroes: 8, zeroes_unmap: 7, discard: 10, flush: 5 }
    }
}

impl Mix {
    /// Parses `R:W:Z:ZU:D:F` (six weights: reads, writes, write-zeroes, write-zeroes with
    /// unmap, discards, flushes), e.g. `30:40:8:7:10:5`; `None` if it is not that.
    pub fn parse(text: &str) -> Option<Self> {
        let mut w = [0u32; 6];
        let mut parts = text.split(':');
        for slot in &mut w {
            *slot = parts.next()?.parse().ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        let [read, write, zeroes, zeroes_unmap, discard, flush] = w;
        Some(Self { read, write, zeroes, zeroes_unmap, discard, flush })
    }
}

/// One stress run's parameters; everything the ops derive from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The seed.
    pub seed: u64,
    /// Ops to issue.
    pub ops: u32,
    /// Ops in flight at most (the caller runs this many workers), 1 to [`MAX_QD`].
    pub qd: u32,
    /// Longest op in bytes (a multiple of `block`).
    pub max_len: u64,
    /// Alignment and granularity of every op and of the model: a power of two, 512 to 1 MiB.
    pub block: u32,
    /// Start of the region under test (a multiple of `block`).
    pub start: u64,
    /// Length of the region under test (a multiple of `block`).
    pub len: u64,
    /// The op kinds' weights.
    pub mix: Mix,
}

impl Config {
    /// A run over `[0, len)` with qd 1, ops of up to 64 KiB (or `len`) in 4 KiB blocks and the
    /// default mix.
    pub fn new(seed: u64, ops: u32, len: u64) -> Self {
        Self { seed, ops, qd: 1, max_len: (64 << 10).min(len / 4096 * 4096), block: 4096, start: 0, len, mix: Mix::default() }
    }

    /// Blocks in the region: the model table's entries.
    pub fn blocks(&self) -> u64 {
        self.len / u64::from(self.block.max(1))
    }

    /// Checks the configuration against a disk of `disk_size` bytes and a table of `table_len`
    /// entries.
    pub fn check(&self, disk_size: u64, table_len: usize) -> Result<(), ConfigError> {
        let bs = u64::from(self.block);
        if !self.block.is_power_of_two() || !(512..=1 << 20).contains(&self.block) {
            return Err(ConfigError::Block(self.block));
        }
        if self.qd == 0 || self.qd > MAX_QD {
            return Err(ConfigError::QueueDepth(self.qd));
        }
        if self.ops >= MAX_OPS {
            return Err(ConfigError::TooManyOps(self.ops));
        }
        let end = self.start.checked_add(self.len);
        if self.len == 0 || !self.start.is_multiple_of(bs) || !self.len.is_multiple_of(bs) || end.is_none_or(|e| e > disk_size) {
            return Err(ConfigError::Region { start: self.start, len: self.len, disk_size });
        }
        if self.max_len == 0 || !self.max_len.is_multiple_of(bs) || self.max_len > self.len {
            return Err(ConfigError::MaxLen(self.max_len));
        }
        let m = self.mix;
        let total = [m.read, m.write, m.zeroes, m.zeroes_unmap, m.discard, m.flush].iter().try_fold(0u32, |a, &w| a.checked_add(w));
        if total.is_none_or(|t| t == 0) {
            return Err(ConfigError::Mix);
        }
        if (table_len as u64) < self.blocks() {
            return Err(ConfigError::TableTooSmall { needed: self.blocks(), given: table_len });
        }
        Ok(())
    }
}

/// Why a [`Config`] cannot run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The block size is not a power of two from 512 to 1 MiB.
    Block(u32),
    /// The queue depth is not 1 to 64.
    QueueDepth(u32),
    /// Ops must be fewer than [`MAX_OPS`].
    TooManyOps(u32),
    /// The region is empty, unaligned or past the disk's end.
    Region {
        /// Its start.
        start: u64,
        /// Its length.
        len: u64,
        /// The disk's size.
        disk_size: u64,
    },
    /// The longest op is zero, unaligned or longer than the region.
    MaxLen(u64),
    /// The mix's weights sum to zero (or overflow).
    Mix,
    /// The model table has fewer entries than the region has blocks.
    TableTooSmall {
        /// Entries needed.
        needed: u64,
        /// Entries given.
        given: usize,
    },
    /// A worker's data buffer is smaller than one block.
    BufferTooSmall(usize),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Block(b) => write!(f, "block size {b}: expected a power of two from 512 to 1M"),
            Self::QueueDepth(q) => write!(f, "queue depth {q}: expected 1 to {MAX_QD}"),
            Self::TooManyOps(n) => write!(f, "{n} ops: expected fewer than {MAX_OPS}"),
            Self::Region { start, len, disk_size } => {
                write!(f, "region of {len} bytes at {start}: must be non-empty, block-aligned and inside the disk ({disk_size} bytes)")
            }
            Self::MaxLen(n) => write!(f, "longest op {n}: expected a positive multiple of the block size, at most the region"),
            Self::Mix => f.write_str("the op mix's weights sum to zero"),
            Self::TableTooSmall { needed, given } => write!(f, "model table of {given} entries: the region needs {needed}"),
            Self::BufferTooSmall(n) => write!(f, "data buffer of {n} bytes per worker: at least one block needed"),
        }
    }
}

/// What an op does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Read and verify.
    Read,
    /// Write seeded data.
    Write,
    /// Write-zeroes; `unmap` may deallocate.
    Zeroes {
        /// May deallocate.
        unmap: bool,
    },
    /// Discard.
    Discard,
    /// Flush (a barrier).
    Flush,
}

impl OpKind {
    /// A short name for reports: `read`, `write`, `zeroes`, `zeroes-unmap`, `discard`, `flush`.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Zeroes { unmap: false } => "zeroes",
            OpKind::Zeroes { unmap: true } => "zeroes-unmap",
            OpKind::Discard => "discard",
            OpKind::Flush => "flush",
        }
    }
}

/// One op: byte offset (absolute, on the disk) and length; both 0 for a flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// Its index in the run.
    pub index: u32,
    /// What it does.
    pub kind: OpKind,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

impl Op {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// splitmix64's finaliser: a good 64-bit mix.
pub(super) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Op `index` of the run `cfg` describes (assumes `cfg` passed [`Config::check`]; degenerate
/// configurations give flushes rather than panics).
pub fn op_at(cfg: &Config, index: u32) -> Op {
    let r = mix64(cfg.seed ^ mix64(u64::from(index) | 0x5354_5241_0000_0000));
    let m = cfg.mix;
    let weights = [m.read, m.write, m.zeroes, m.zeroes_unmap, m.discard, m.flush];
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let flush = Op { index, kind: OpKind::Flush, offset: 0, len: 0 };
    if total == 0 {
        return flush;
    }
    let mut pick = (r >> 32) % total;
    let mut chosen = 5;
    for (i, &w) in weights.iter().enumerate() {
        if pick < u64::from(w) {
            chosen = i;
            break;
        }
        pick -= u64::from(w);
    }
    let kind = match chosen {
        0 => OpKind::Read,
        1 => OpKind::Write,
        2 => OpKind::Zeroes { unmap: false },
        3 => OpKind::Zeroes { unmap: true },
        4 => OpKind::Discard,
        _ => return flush,
    };
    let bs = u64::from(cfg.block.max(1));
    let (region, longest) = (cfg.len / bs, (cfg.max_len / bs).min(cfg.len / bs));
    if region == 0 || longest == 0 {
        return flush;
    }
    let r2 = mix64(r);
    let blocks = 1 + (r2 % longest);
    let first = (r2 >> 32) % (region - blocks + 1);
    Op { index, kind, offset: cfg.start + first * bs, len: blocks * bs }
}
