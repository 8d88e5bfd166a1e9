//! Where a new image's structures go and what its first cluster holds: pure functions, so they
//! are tested against what `qemu-img create` writes without any I/O.

use crate::error::{Error, Result};

use super::super::extensions::{BACKING_FORMAT, FEATURE_NAMES, MAX_FORMAT_NAME};
use super::super::header::{compat, incompat, KNOWN_HEADER_LEN, MAGIC, MAX_BACKING_NAME, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS};
use super::super::validation::{MAX_L1_BYTES, MAX_REFTABLE_BYTES};
use super::CreateOptions;

/// Where everything of a new image goes (all offsets in bytes of the image file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual size, rounded up to 512 bytes.
    pub size: u64,
    /// Entries of the L1 table.
    pub l1_entries: u32,
    /// Its offset (0 when it has no entries, as QEMU writes it).
    pub l1_offset: u64,
    /// Offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Its length in clusters.
    pub refcount_table_clusters: u32,
    /// log2 of the refcount width in bits.
    pub refcount_order: u32,
    /// Refcount blocks: block 0 right after the refcount table, the others after the L1 table
    /// in the order qemu-img allocates them ([`Layout::blocks`]).
    pub refcount_blocks: u64,
    /// Clusters in use, `0..used_clusters`, each with refcount 1.
    pub used_clusters: u64,
    /// Length of the new image file.
    pub file_size: u64,
}

impl Layout {
    /// Checks `opts` and places the tables.
    pub fn new(opts: &CreateOptions<'_>) -> Result<Layout> {
        let bad = |key, why| Err(Error::BadOption { key, why });
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&opts.cluster_bits) {
            return bad("cluster_size", "cluster size must be a power of two between 512 and 2048k");
        }
        if opts.extended_l2 && opts.cluster_bits < 14 {
            return bad("extended_l2", "extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
        }
        if opts.refcount_order > 6 {
            return bad("refcount_bits", "refcount width must be a power of two and may not exceed 64 bits");
        }
        if opts.backing_fmt.is_some() && opts.backing.is_none() {
            return bad("backing_fmt", "backing format cannot be used without backing file");
        }
        let cs = 1u64 << opts.cluster_bits;
        let size = match opts.size.checked_next_multiple_of(512) {
            Some(s) if s <= i64::MAX as u64 => s,
            _ => return bad("size", "the image size is too large for file format 'qcow2'"),
        };
        let l2_entries = cs / if opts.extended_l2 { 16 } else { 8 };
        let l1_entries = size.div_ceil(cs).div_ceil(l2_entries);
        if l1_entries > MAX_L1_BYTES / 8 {
            return bad("size", "the image size is too large for file format 'qcow2' (try using a larger cluster size)");
        }
        let l1_clusters = (l1_entries * 8).div_ceil(cs);
        let per_block = (cs * 8) >> opts.refcount_order;
        let entries_per_cluster = cs / 8;
        let mut table_clusters = 1u64;
        loop {
            // Header, refcount table, block 0, L1 table; blocks 1.. follow and count themselves.
            let before_extra = 2 + table_clusters + l1_clusters;
            let blocks = (before_extra - 1).div_ceil(per_block - 1).max(1);
            if blocks <= table_clusters * entries_per_cluster {
                let used = before_extra + blocks - 1;
                let l1_offset = if l1_entries == 0 { 0 } else { (2 + table_clusters) * cs };
                let file_size = if blocks > 1 { used * cs } else { ((2 + table_clusters) * cs).max(l1_offset + l1_entries * 8) };
                return Ok(Layout {
                    cluster_bits: opts.cluster_bits,
                    size,
                    l1_entries: l1_entries as u32,
                    l1_offset,
                    refcount_table_offset: cs,
                    refcount_table_clusters: table_clusters as u32,
                    refcount_order: opts.refcount_order,
                    refcount_blocks: blocks,
                    used_clusters: used,
                    file_size,
                });
            }
            table_clusters += 1;
            if table_clusters * cs > MAX_REFTABLE_BYTES {
                return bad("size", "the image size is too large for file format 'qcow2' (try using a larger cluster size)");
            }
        }
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Offset of refcount block `index`, if there is one.
    pub fn refcount_block(&self, index: u64) -> Option<u64> {
        self.blocks().find(|&(b, _)| b == index).map(|(_, c)| c << self.cluster_bits)
    }

    /// Clusters whose refcounts one refcount block holds.
    pub fn per_block(&self) -> u64 {
        (self.cluster_size() * 8) >> self.refcount_order
    }

    /// The refcount blocks as (index, cluster), in allocation order.
    pub fn blocks(&self) -> Blocks {
        let first_free = self.used_clusters + 1 - self.refcount_blocks;
        let per = self.per_block();
        Blocks {
            per,
            block0: 1 + u64::from(self.refcount_table_clusters),
            last_l1_block: (first_free - 1) / per,
            next_index: 1,
            next_free: first_free,
            low: 0,
            tail: (first_free / per, first_free / per),
            pending: [(0, 0); 3],
            pending_len: 0,
            started: false,
        }
    }
}

/// The refcount blocks of a new image in the order qemu-img allocates them, as (index,
/// cluster): block 0 after the refcount table; then, walking the L1 table's clusters, each
/// missing block at the next free cluster, where a block first needs its own cluster counted
/// — by a block allocated right after it (QEMU's `alloc_refcount_block`, which describes
/// itself or recurses at most twice). So the block covering the end of the L1 table comes
/// second when the others do not fit in the first block's range.
#[derive(Clone, Debug)]
pub struct Blocks {
    per: u64,
    block0: u64,
    last_l1_block: u64,
    next_index: u64,
    next_free: u64,
    /// Blocks `1..=low` exist (allocated for the L1 table).
    low: u64,
    /// Blocks in `tail.0..tail.1` exist (allocated for blocks past the L1 table).
    tail: (u64, u64),
    pending: [(u64, u64); 3],
    pending_len: usize,
    started: bool,
}

impl Blocks {
    fn exists(&self, block: u64) -> bool {
        block == 0 || block <= self.low || (self.tail.0..self.tail.1).contains(&block)
    }

    fn take(&mut self) -> u64 {
        self.next_free += 1;
        self.next_free - 1
    }

    fn place(&mut self, block: u64, cluster: u64) {
        if block >= self.tail.0 {
            self.tail.1 = self.tail.1.max(block + 1);
        }
        if let Some(slot) = self.pending.get_mut(self.pending_len) {
            *slot = (block, cluster);
            self.pending_len += 1;
        }
    }
}

impl Iterator for Blocks {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if !self.started {
            self.started = true;
            return Some((0, self.block0));
        }
        loop {
            if self.pending_len > 0 {
                self.pending_len -= 1;
                return self.pending.get(self.pending_len).copied();
            }
            if self.next_index > self.last_l1_block {
                return None;
            }
            let block = self.next_index;
            self.next_index += 1;
            if self.exists(block) {
                continue;
            }
            let new = self.take();
            let own = new / self.per;
            if !self.exists(own) {
                // The new block's cluster needs a block first: one right after it, or, if that
                // falls in the next range, one more after that one.
                let second = self.take();
                let next = second / self.per;
                if next != own {
                    let third = self.take();
                    self.place(next, third);
                }
                self.place(own, second);
            }
            self.low = block;
            self.place(block, new);
        }
    }
}

/// QEMU's feature-name table: (type, bit, name).
pub(crate) const FEATURES: [(u8, u8, &str); 8] = [
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
];
/// Bytes of one feature-name entry.
pub(crate) const FEATURE_ENTRY: usize = 48;

/// Appends `bytes` at `*at` of `buf`.
fn put(buf: &mut [u8], at: &mut usize, bytes: &[u8]) -> Result<()> {
    let end = at.checked_add(bytes.len()).ok_or(Error::NoSpace { what: "header buffer" })?;
    buf.get_mut(*at..end).ok_or(Error::NoSpace { what: "header buffer" })?.copy_from_slice(bytes);
    *at = end;
    Ok(())
}

/// Writes the header, its extensions and the backing file name into `buf` (zeroed first) and
/// returns the bytes used. Fails if they do not fit in the first cluster.
pub fn header_bytes(layout: &Layout, opts: &CreateOptions<'_>, buf: &mut [u8]) -> Result<usize> {
    buf.fill(0);
    let fmt = opts.backing_fmt.map(str::as_bytes);
    if let Some(f) = fmt {
        if f.is_empty() || f.len() > MAX_FORMAT_NAME {
            return Err(Error::BadOption { key: "backing_fmt", why: "a format name is 1 to 15 bytes" });
        }
    }
    let name = opts.backing.map(str::as_bytes);
    if let Some(n) = name {
        if n.is_empty() || n.len() > MAX_BACKING_NAME as usize {
            return Err(Error::BadOption { key: "backing_file", why: "a backing file name is 1 to 1023 bytes" });
        }
    }
    let cs = layout.cluster_size();
    let features = cs > 4096; // qemu-img leaves the table out of small clusters
    let fmt_len = fmt.map_or(0, |f| 8 + f.len().div_ceil(8) * 8);
    let ext_len = fmt_len + if features { 8 + FEATURES.len() * FEATURE_ENTRY } else { 0 } + 8;
    let name_at = KNOWN_HEADER_LEN + ext_len;
    let total = name_at + name.map_or(0, <[u8]>::len);
    if total as u64 > cs {
        return Err(Error::BadOption { key: "backing_file", why: "the backing file name does not fit in the header cluster" });
    }
    if total > buf.len() {
        return Err(Error::NoSpace { what: "header buffer" });
    }
    let mut incompatible = 0;
    if opts.extended_l2 {
        incompatible |= incompat::EXTENDED_L2;
    }
    if opts.compression == super::Compression::Zstd {
        incompatible |= incompat::COMPRESSION;
    }
    let compatible = if opts.lazy_refcounts { compat::LAZY_REFCOUNTS } else { 0 };
    let (name_off, name_len) = match name {
        Some(n) => (name_at as u64, n.len() as u32),
        None => (0, 0),
    };
    let mut at = 0;
    put(buf, &mut at, &MAGIC.to_be_bytes())?;
    put(buf, &mut at, &3u32.to_be_bytes())?;
    put(buf, &mut at, &name_off.to_be_bytes())?;
    put(buf, &mut at, &name_len.to_be_bytes())?;
    put(buf, &mut at, &layout.cluster_bits.to_be_bytes())?;
    put(buf, &mut at, &layout.size.to_be_bytes())?;
    put(buf, &mut at, &0u32.to_be_bytes())?; // crypt_method
    put(buf, &mut at, &layout.l1_entries.to_be_bytes())?;
    put(buf, &mut at, &layout.l1_offset.to_be_bytes())?;
    put(buf, &mut at, &layout.refcount_table_offset.to_be_bytes())?;
    put(buf, &mut at, &layout.refcount_table_clusters.to_be_bytes())?;
    put(buf, &mut at, &0u32.to_be_bytes())?; // nb_snapshots
    put(buf, &mut at, &0u64.to_be_bytes())?; // snapshots_offset
    put(buf, &mut at, &incompatible.to_be_bytes())?;
    put(buf, &mut at, &compatible.to_be_bytes())?;
    put(buf, &mut at, &0u64.to_be_bytes())?; // autoclear
    put(buf, &mut at, &opts.refcount_order.to_be_bytes())?;
    put(buf, &mut at, &(KNOWN_HEADER_LEN as u32).to_be_bytes())?;
    // compression_type (byte 104: 0 deflate, 1 zstd) and padding
    put(buf, &mut at, &[u8::from(opts.compression == super::Compression::Zstd)])?;
    at = KNOWN_HEADER_LEN;
    if let Some(f) = fmt {
        put(buf, &mut at, &BACKING_FORMAT.to_be_bytes())?;
        put(buf, &mut at, &(f.len() as u32).to_be_bytes())?;
        put(buf, &mut at, f)?;
        at = at.next_multiple_of(8);
    }
    if features {
        put(buf, &mut at, &FEATURE_NAMES.to_be_bytes())?;
        put(buf, &mut at, &((FEATURES.len() * FEATURE_ENTRY) as u32).to_be_bytes())?;
        for (kind, bit, text) in FEATURES {
            let start = at;
            put(buf, &mut at, &[kind, bit])?;
            put(buf, &mut at, text.as_bytes())?;
            at = start + FEATURE_ENTRY;
        }
    }
    at += 8; // end of extensions
    if let Some(n) = name {
        put(buf, &mut at, n)?;
    }
    Ok(at)
}

/// Sets refcount entry `index` (width `1 << order` bits) of `slice` to `value`; entries
/// outside `slice` are ignored.
pub fn set_refcount(slice: &mut [u8], order: u32, index: u64, value: u64) {
    let bits = 1u64 << order;
    let Some(bit) = index.checked_mul(bits) else { return };
    let Ok(byte) = usize::try_from(bit / 8) else { return };
    if bits < 8 {
        let shift = (bit % 8) as u32;
        let mask = (((1u16 << bits) - 1) as u8) << shift;
        if let Some(b) = slice.get_mut(byte) {
            *b = (*b & !mask) | (((value as u8) << shift) & mask);
        }
    } else {
        let n = (bits / 8) as usize;
        if let Some(bytes) = slice.get_mut(byte..byte + n) {
            bytes.copy_from_slice(&value.to_be_bytes()[8 - n..]);
        }
    }
}

