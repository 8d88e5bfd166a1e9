//! Strata's block layer: portable, `#![no_std]`, and without a heap.
//!
//! Everything here builds for bare-metal targets with no `alloc` crate and no global allocator.
//! Capacities are fixed at build or init time; running out is an error, never a panic.
//! See `../shared/DESIGN.md` for the architecture this crate grows into.

#![cfg_attr(not(any(test, feature = "std")), no_std)]
// Unsafe code only where memory is handed to devices (`dev`, and the io layer's request guard);
// each such module opts in with `#![allow(unsafe_code)]` and a reason.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod backend;
pub mod cmd;
pub mod dev;
pub mod driver;
pub mod error;
pub mod graph;
pub mod io;
pub mod options;

pub use backend::{Backend, BackendOptions, DetectZeroes, Drained};
pub use error::{Error, Result};
pub use graph::{Graph, NodeId};
