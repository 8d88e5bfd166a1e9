//! Refcount entries (`qcow2.txt`, "Host cluster management"): the refcount of a host cluster
//! through the refcount table and its blocks, both paged through the metadata cache, and the
//! entry codec. Widths 1..64 bits: sub-byte entries are packed least significant bit first,
//! wider ones are big-endian. Reads need no refcounts; `img`-style tools and the allocator
//! ([`super::alloc`]) do.

use crate::error::{Error, Result};
use crate::io::Io;
use crate::node::NodeId;

use super::validation::{self, ClusterRef};
use super::Qcow2;

/// Extracts entry `index` of width `1 << order` bits from a refcount block slice that starts at
/// entry `first`.
pub fn entry(slice: &[u8], order: u32, index: u64) -> Option<u64> {
    let bits = 1u64 << order;
    let bit = index.checked_mul(bits)?;
    let byte = usize::try_from(bit / 8).ok()?;
    if bits < 8 {
        let b = *slice.get(byte)?;
        let shift = (bit % 8) as u32;
        Some(u64::from(b >> shift) & ((1u64 << bits) - 1))
    } else {
        let n = (bits / 8) as usize;
        let bytes = slice.get(byte..byte + n)?;
        Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
}

/// Stores `value` as entry `index` of width `1 << order` bits; `None` if it does not fit the
/// width or the slice.
pub fn set_entry(slice: &mut [u8], order: u32, index: u64, value: u64) -> Option<()> {
    let bits = 1u64 << order;
    if bits < 64 && value >> bits != 0 {
        return None;
    }
    let bit = index.checked_mul(bits)?;
    let byte = usize::try_from(bit / 8).ok()?;
    if bits < 8 {
        let b = slice.get_mut(byte)?;
        let shift = (bit % 8) as u32;
        let mask = (((1u16 << bits) - 1) as u8) << shift;
        *b = (*b & !mask) | ((value as u8) << shift);
    } else {
        let n = (bits / 8) as usize;
        let bytes = slice.get_mut(byte..byte + n)?;
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (value >> (8 * (n - 1 - i))) as u8;
        }
    }
    Some(())
}

impl Qcow2 {
    /// The refcount of the host cluster holding byte `host` of the image file `file`. Clusters
    /// past the refcount table, or in a block not yet allocated, have refcount 0.
    pub async fn refcount(&self, io: &Io<'_, '_>, file: NodeId, host: u64) -> Result<u64> {
        let cluster_bits = u32::from(self.cluster_bits);
        let cluster = host >> cluster_bits;
        let per_block = (self.cluster_size() * 8) >> self.refcount_order;
        let table_index = cluster / per_block;
        let in_block = cluster % per_block;
        let table_entries = self.meta.get().refcount_table.len / 8;
        if table_index >= table_entries {
            return Ok(0);
        }
        let slice_len = self.slice_len();
        let entry_at = self.meta.get().refcount_table.start + table_index * 8;
        let rt_entry = io.meta.read_u64(io, file, entry_at, slice_len).await?;
        if rt_entry & 0x1ff != 0 {
            return Err(Error::Corrupt { what: "refcount table entry: reserved bits set", offset: entry_at });
        }
        let block = rt_entry;
        if block == 0 {
            return Ok(0);
        }
        let file_size = io.node(file)?.size();
        validation::cluster_ref(block, self.cluster_size(), file_size, &self.meta.get(), entry_at, ClusterRef::RefcountBlock)?;
        let bit = in_block << self.refcount_order;
        let byte = bit / 8;
        let slice_start = byte / slice_len as u64 * slice_len as u64;
        let index_in_slice = in_block - slice_start * 8 / (1u64 << self.refcount_order);
        let order = u32::from(self.refcount_order);
        io
            .meta
            .with_slice(io, file, block + slice_start, slice_len, |s| entry(s, order, index_in_slice))
            .await?
            .ok_or(Error::Corrupt { what: "refcount block entry outside its slice", offset: block + byte })
    }
}

#[cfg(test)]
mod tests {
    use super::entry;

    #[test]
    fn set_round_trips() {
        for order in 0..=6u32 {
            let max = if order == 6 { u64::MAX } else { (1u64 << (1 << order)) - 1 };
            let mut s = [0u8; 64];
            for index in 0..8u64 {
                let v = max.wrapping_sub(index) & max;
                assert_eq!(super::set_entry(&mut s, order, index, v), Some(()));
                assert_eq!(entry(&s, order, index), Some(v), "order {order} index {index}");
            }
            if order < 6 {
                assert_eq!(super::set_entry(&mut s, order, 0, max + 1), None);
            }
            for index in 0..8u64 {
                assert_eq!(entry(&s, order, index), Some(max.wrapping_sub(index) & max));
            }
        }
    }

    #[test]
    fn widths() {
        let s = [0b1011_0010u8, 0xff, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
        assert_eq!(entry(&s, 0, 0), Some(0));
        assert_eq!(entry(&s, 0, 1), Some(1));
        assert_eq!(entry(&s, 0, 7), Some(1));
        assert_eq!(entry(&s, 1, 0), Some(0b10));
        assert_eq!(entry(&s, 1, 3), Some(0b10));
        assert_eq!(entry(&s, 2, 1), Some(0b1011));
        assert_eq!(entry(&s, 3, 2), Some(0x12));
        assert_eq!(entry(&s, 4, 1), Some(0x1234));
        assert_eq!(entry(&s, 5, 1), Some(0x5678_9abc));
        assert_eq!(entry(&s, 6, 0), Some(0xb2ff_1234_5678_9abc));
        assert_eq!(entry(&s, 6, 1), None);
    }
}
