//! The lower half of the io layer: what drivers may use. Leaf requests (limits, alignment and
//! read-modify-write, splitting, bounce buffers, tracked requests), flush generations at leaves,
//! write-zeroes and discard with fallbacks, a format's I/O on its file child, the metadata slice
//! cache, waiting, and the [`Io`] view of a graph all of these take. Nothing here names a
//! driver; the walk over the graph and the write executor are above the drivers, in
//! [`crate::path`].

pub mod bounce;
pub mod cache;
pub mod child_io;
mod ctx;
#[cfg_attr(not(feature = "blkdebug"), allow(dead_code))] // reason: its rules are installed only by the blkdebug driver
pub mod debug;
mod device;
pub mod events;
pub mod flush;
mod overlap_filter;
pub(crate) mod leaf;
pub mod throttle;
pub mod tracked;
pub(crate) mod verify;
pub mod wait;
pub mod zero;
#[cfg_attr(not(feature = "compress"), allow(dead_code))] // reason: decoders are taken only by compressed reads
pub mod zstd;

pub use ctx::Io;
pub(crate) use wait::{take as wait_for, until as wait_until};
pub use zero::RangeOp;
