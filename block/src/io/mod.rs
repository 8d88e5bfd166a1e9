//! The request path: limits, alignment and read-modify-write, splitting, tracked requests,
//! flush generations, write-zeroes and discard with fallbacks, zero detection. Users reach it
//! through [`crate::backend::Backend`].

pub mod bounce;
pub mod events;
pub(crate) mod child_io;
mod device;
pub mod flush;
pub(crate) mod leaf;
pub mod limits;
pub mod tracked;
mod wait;
pub(crate) use wait::{take as wait_for, until as wait_until};
pub(crate) mod walk;
pub mod zero;

pub use walk::{block_status, Extent, ExtentKind, RangeOp};
