//! virtio-blk's wire formats (virtio 1.2 §5.2.6): the request header, the discard/write-zeroes
//! range, request types and status codes, and the per-slot memory the device reads and writes.

/// Bytes per virtio-blk sector: request addresses are always in 512-byte units, whatever the
/// logical block size.
pub const SECTOR: u64 = 512;

/// `VIRTIO_BLK_T_IN`: read.
pub const T_IN: u32 = 0;
/// `VIRTIO_BLK_T_OUT`: write.
pub const T_OUT: u32 = 1;
/// `VIRTIO_BLK_T_FLUSH`.
pub const T_FLUSH: u32 = 4;
/// `VIRTIO_BLK_T_GET_ID`: the serial, 20 bytes.
pub const T_GET_ID: u32 = 8;
/// `VIRTIO_BLK_T_DISCARD`.
pub const T_DISCARD: u32 = 11;
/// `VIRTIO_BLK_T_WRITE_ZEROES`.
pub const T_WRITE_ZEROES: u32 = 13;

/// `VIRTIO_BLK_S_OK`.
pub const S_OK: u8 = 0;
/// `VIRTIO_BLK_S_UNSUPP`.
pub const S_UNSUPP: u8 = 2;
/// What a slot's status byte holds until the device writes it: no valid status, so a request
/// the device "completed" without writing a status is an error, not a success.
pub const S_UNWRITTEN: u8 = 0xff;

/// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`.
pub const WZ_FLAG_UNMAP: u32 = 1;

/// Length of the serial GetId returns (`VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = 20;

/// `struct virtio_blk_req`'s header (device-readable).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    /// Request type (`T_*`), little-endian.
    pub type_: u32,
    /// Reserved (0).
    pub reserved: u32,
    /// First sector, little-endian.
    pub sector: u64,
}

impl Header {
    /// A header in the device's byte order.
    pub fn new(type_: u32, sector: u64) -> Self {
        Self { type_: type_.to_le(), reserved: 0, sector: sector.to_le() }
    }
}

/// `struct virtio_blk_discard_write_zeroes` (device-readable).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Range {
    /// First sector, little-endian.
    pub sector: u64,
    /// Sectors, little-endian.
    pub num_sectors: u32,
    /// `WZ_FLAG_UNMAP` or 0, little-endian.
    pub flags: u32,
}

/// The memory of one request slot that the device reads (header, range) and writes (status).
/// Lives inside the device object, so no allocation is needed; only ever touched through raw
/// pointers while a request is in flight.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug)]
pub struct SlotMem {
    /// The request header.
    pub header: Header,
    /// The range of a discard or write-zeroes.
    pub range: Range,
    /// The status byte.
    pub status: u8,
}

impl SlotMem {
    /// A blank slot.
    pub const BLANK: Self = Self { header: Header { type_: 0, reserved: 0, sector: 0 }, range: Range { sector: 0, num_sectors: 0, flags: 0 }, status: S_UNWRITTEN };
}

/// Bytes of [`Header`] and of [`Range`] on the wire.
pub const HEADER_BYTES: usize = core::mem::size_of::<Header>();
/// Bytes of [`Range`] on the wire.
pub const RANGE_BYTES: usize = core::mem::size_of::<Range>();

const _: () = assert!(HEADER_BYTES == 16 && RANGE_BYTES == 16);
