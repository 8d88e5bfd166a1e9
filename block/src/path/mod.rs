//! The upper half of the io layer, above the drivers: the walk over the graph (map, then move),
//! the write executor (plan, execute, commit), range operations and whole-graph flush. It works
//! on a [`Stack`], the graph's [`crate::io::Io`] view plus every driver node's state.

#[cfg(feature = "copy-on-read")]
pub(crate) mod cor;
pub(crate) mod flush;
pub(crate) mod route;
pub(crate) mod range;
pub(crate) mod request;
pub(crate) mod skip;
mod stack;
pub(crate) mod walk;
#[cfg(feature = "blkverify")]
pub(crate) mod verify;
pub(crate) mod write;

pub(crate) use skip::Skip;
pub use stack::Stack;
pub use walk::{block_status, Extent, ExtentKind, KeptAt};
