//! Feature negotiation and the configuration space (virtio 1.2 §5.2.4): what the device offers,
//! what we accept, and the [`DeviceInfo`] the io layer plans requests by.

use virtio_drivers::transport::Transport;

use super::wire::SECTOR;
use crate::dev::{DeviceFeatures, DeviceInfo};

bitflags::bitflags! {
    /// virtio-blk feature bits we may negotiate.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct Features: u64 {
        /// `size_max` is valid.
        const SIZE_MAX = 1 << 1;
        /// `seg_max` is valid.
        const SEG_MAX = 1 << 2;
        /// The device is read-only.
        const RO = 1 << 5;
        /// `blk_size` is valid.
        const BLK_SIZE = 1 << 6;
        /// The device has a cache that FLUSH writes back.
        const FLUSH = 1 << 9;
        /// The topology fields are valid.
        const TOPOLOGY = 1 << 10;
        /// DISCARD requests and their limits.
        const DISCARD = 1 << 13;
        /// WRITE_ZEROES requests and their limits.
        const WRITE_ZEROES = 1 << 14;
        /// A virtio 1.0+ device (must be accepted when offered).
        const VERSION_1 = 1 << 32;
    }
}

/// What we ask for. Not `RING_EVENT_IDX`: virtio-drivers 0.13's `should_notify` compares the
/// 16-bit ring indices without wrapping, so after 65536 requests it would stop notifying; the
/// device's `NO_NOTIFY` flag suppresses doorbells while it is busy anyway. Not
/// `RING_INDIRECT_DESC`: without `alloc` virtio-drivers cannot build indirect tables.
pub const WANTED: Features = Features::all();

// Byte offsets in `struct virtio_blk_config`.
const CAPACITY: usize = 0;
const SIZE_MAX_OFF: usize = 8;
const SEG_MAX_OFF: usize = 12;
const BLK_SIZE_OFF: usize = 20;
const PHYSICAL_BLOCK_EXP: usize = 24;
const MIN_IO_SIZE: usize = 26;
const OPT_IO_SIZE: usize = 28;
const MAX_DISCARD_SECTORS: usize = 36;
const MAX_DISCARD_SEG: usize = 40;
const DISCARD_SECTOR_ALIGNMENT: usize = 44;
const MAX_WRITE_ZEROES_SECTORS: usize = 48;
const MAX_WRITE_ZEROES_SEG: usize = 52;
const WRITE_ZEROES_MAY_UNMAP: usize = 56;

/// The configuration fields as the device reported them (0 where the feature is absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Geometry {
    /// Negotiated features.
    pub features: Features,
    /// Capacity in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Most bytes in one segment.
    pub size_max: u32,
    /// Most data segments in one request.
    pub seg_max: u32,
    /// Logical block size.
    pub blk_size: u32,
    /// log2 of physical blocks per logical block.
    pub physical_block_exp: u8,
    /// Minimum I/O size in logical blocks.
    pub min_io_size: u16,
    /// Optimal I/O size in logical blocks.
    pub opt_io_size: u32,
    /// Most sectors in one discard segment.
    pub max_discard_sectors: u32,
    /// Most discard segments in one request.
    pub max_discard_seg: u32,
    /// Discard granularity in sectors.
    pub discard_sector_alignment: u32,
    /// Most sectors in one write-zeroes segment.
    pub max_write_zeroes_sectors: u32,
    /// Most write-zeroes segments in one request.
    pub max_write_zeroes_seg: u32,
    /// Write-zeroes with the unmap flag may deallocate.
    pub write_zeroes_may_unmap: bool,
}

impl Geometry {
    /// Reads the configuration space (consistently, by its generation counter). Fields of
    /// features that were not negotiated stay 0.
    pub fn read<T: Transport>(transport: &T, features: Features) -> virtio_drivers::Result<Self> {
        transport.read_consistent(|| {
            let u32_at = |off: usize| transport.read_config_space::<u32>(off).map(u32::from_le);
            let u16_at = |off: usize| transport.read_config_space::<u16>(off).map(u16::from_le);
            let u8_at = |off: usize| transport.read_config_space::<u8>(off);
            let has = |f: Features| features.contains(f);
            let mut g = Geometry { features, ..Geometry::default() };
            g.capacity_sectors = u64::from(u32_at(CAPACITY)?) | (u64::from(u32_at(CAPACITY + 4)?) << 32);
            if has(Features::SIZE_MAX) {
                g.size_max = u32_at(SIZE_MAX_OFF)?;
            }
            if has(Features::SEG_MAX) {
                g.seg_max = u32_at(SEG_MAX_OFF)?;
            }
            if has(Features::BLK_SIZE) {
                g.blk_size = u32_at(BLK_SIZE_OFF)?;
            }
            if has(Features::TOPOLOGY) {
                g.physical_block_exp = u8_at(PHYSICAL_BLOCK_EXP)?;
                g.min_io_size = u16_at(MIN_IO_SIZE)?;
                g.opt_io_size = u32_at(OPT_IO_SIZE)?;
            }
            if has(Features::DISCARD) {
                g.max_discard_sectors = u32_at(MAX_DISCARD_SECTORS)?;
                g.max_discard_seg = u32_at(MAX_DISCARD_SEG)?;
                g.discard_sector_alignment = u32_at(DISCARD_SECTOR_ALIGNMENT)?;
            }
            if has(Features::WRITE_ZEROES) {
                g.max_write_zeroes_sectors = u32_at(MAX_WRITE_ZEROES_SECTORS)?;
                g.max_write_zeroes_seg = u32_at(MAX_WRITE_ZEROES_SEG)?;
                g.write_zeroes_may_unmap = u8_at(WRITE_ZEROES_MAY_UNMAP)? != 0;
            }
            Ok(g)
        })
    }

    /// Logical block size: `blk_size` when offered and sane (a power of two from 512 to 64 KiB),
    /// else 512.
    pub fn block_size(&self) -> u32 {
        match self.blk_size {
            b if self.features.contains(Features::BLK_SIZE) && b.is_power_of_two() && (512..=65536).contains(&b) => b,
            _ => SECTOR as u32,
        }
    }

    /// The limits and features the io layer must respect. `max_segments` caps the data segments
    /// per request (the caller's slot storage and its in-flight guarantee); `most_bytes` caps a
    /// transfer.
    pub fn device_info(&self, max_segments: u16, most_bytes: u32, queue_depth: u16) -> DeviceInfo {
        let bs = self.block_size();
        let capacity = self.capacity_sectors.saturating_mul(SECTOR) / u64::from(bs) * u64::from(bs);
        let mut info = DeviceInfo::new(capacity, bs);
        info.read_only = self.features.contains(Features::RO);
        // Without SEG_MAX the device promises nothing beyond one data segment.
        let segs = if self.features.contains(Features::SEG_MAX) { self.seg_max.max(1) } else { 1 };
        info.max_segments = segs.min(u32::from(max_segments)).max(1) as u16;
        info.max_segment_size = if self.features.contains(Features::SIZE_MAX) && self.size_max >= bs { self.size_max } else { most_bytes };
        let mut max = most_bytes.min(info.max_segment_size.saturating_mul(u32::from(info.max_segments)));
        let mut features = DeviceFeatures::empty();
        if self.features.contains(Features::FLUSH) {
            features |= DeviceFeatures::FLUSH;
        }
        // Discard and write-zeroes requests are cut at max_transfer by the io layer; keep them
        // within the device's per-segment limits by lowering it (QEMU offers ~2 GiB for both).
        let sectors_to_bytes = |s: u32| u32::try_from(u64::from(s) * SECTOR).unwrap_or(u32::MAX);
        if self.features.contains(Features::DISCARD) && self.max_discard_sectors > 0 && self.max_discard_seg > 0 {
            features |= DeviceFeatures::DISCARD;
            max = max.min(sectors_to_bytes(self.max_discard_sectors).max(bs));
        }
        if self.features.contains(Features::WRITE_ZEROES) && self.max_write_zeroes_sectors > 0 && self.max_write_zeroes_seg > 0 {
            features |= DeviceFeatures::WRITE_ZEROES;
            if self.write_zeroes_may_unmap {
                features |= DeviceFeatures::WRITE_ZEROES_UNMAP;
            }
            max = max.min(sectors_to_bytes(self.max_write_zeroes_sectors).max(bs));
        }
        info.max_transfer = (max / bs * bs).max(bs);
        info.features = features;
        info.discard_alignment = sectors_to_bytes(self.discard_sector_alignment).max(bs).checked_next_power_of_two().unwrap_or(bs);
        if self.features.contains(Features::TOPOLOGY) {
            info.opt_transfer = self.opt_io_size.saturating_mul(bs);
        }
        info.queue_depth = queue_depth;
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_like() -> Geometry {
        Geometry {
            features: Features::SEG_MAX | Features::BLK_SIZE | Features::FLUSH | Features::TOPOLOGY | Features::DISCARD | Features::WRITE_ZEROES | Features::VERSION_1,
            capacity_sectors: 2 * 1024 * 1024,
            seg_max: 254,
            blk_size: 512,
            max_discard_sectors: 0x3fff_ffff,
            max_discard_seg: 1,
            discard_sector_alignment: 8,
            max_write_zeroes_sectors: 0x3fff_ffff,
            max_write_zeroes_seg: 1,
            write_zeroes_may_unmap: true,
            ..Geometry::default()
        }
    }

    #[test]
    fn limits_from_a_qemu_like_device() {
        let info = qemu_like().device_info(6, 4 << 20, 64);
        assert_eq!(info.capacity, 1 << 30);
        assert_eq!(info.block_size, 512);
        assert_eq!(info.max_segments, 6, "capped for 32 requests in flight");
        assert_eq!(info.max_transfer, 4 << 20);
        assert_eq!(info.discard_alignment, 4096);
        assert_eq!(info.queue_depth, 64);
        assert!(!info.read_only);
        assert_eq!(info.features, DeviceFeatures::all());
    }

    #[test]
    fn absent_features_promise_nothing() {
        let g = Geometry { features: Features::RO, capacity_sectors: 7, seg_max: 100, blk_size: 4096, ..Geometry::default() };
        let info = g.device_info(6, 4 << 20, 32);
        assert!(info.read_only);
        assert_eq!(info.block_size, 512, "blk_size ignored without BLK_SIZE");
        assert_eq!(info.max_segments, 1, "one segment without SEG_MAX");
        assert_eq!(info.capacity, 7 * 512);
        assert_eq!(info.features, DeviceFeatures::empty());
    }

    #[test]
    fn small_device_limits_lower_max_transfer() {
        let mut g = qemu_like();
        g.features |= Features::SIZE_MAX;
        g.size_max = 64 * 1024;
        g.max_discard_sectors = 256;
        g.features |= Features::BLK_SIZE;
        g.blk_size = 4096;
        g.capacity_sectors = 1001; // not a whole number of 4 KiB blocks
        let info = g.device_info(6, 4 << 20, 32);
        assert_eq!(info.block_size, 4096);
        assert_eq!(info.capacity, 1000 * 512 / 4096 * 4096);
        assert_eq!(info.max_segment_size, 64 * 1024);
        assert_eq!(info.max_transfer, 128 * 1024, "discard's 256 sectors bound every request");
        g.blk_size = 3000; // nonsense: falls back to 512
        assert_eq!(g.device_info(6, 4 << 20, 32).block_size, 512);
        g.max_discard_seg = 0; // no usable discard
        assert!(!g.device_info(6, 4 << 20, 32).features.contains(DeviceFeatures::DISCARD));
    }
}
