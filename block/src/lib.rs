//! Strata's block layer: portable, `#![no_std]`, and without a heap.
//!
//! Everything here builds for bare-metal targets with no `alloc` crate and no global allocator.
//! Capacities are fixed at build or init time; running out is an error, never a panic.
//! `docs/ARCHITECTURE.md` in the repository describes the layers, the data path, the crash
//! rules and the resources.
//!
//! Layers, bottom to top (a module imports only from its own layer or below; the
//! `architecture` test enforces it): `options`, `clock`, `dev`, `codec` → `error` → `node` → `io` (the
//! lower half: what drivers may use) → `driver` → `path` (the walk and the write executor) →
//! `graph` (owns nodes, states and pools; opens chains) → `backend` → `cmd`.

#![cfg_attr(not(any(test, feature = "std")), no_std)]
// Unsafe code only where memory is handed to devices (`dev`, and the io layer's request guard);
// each such module opts in with `#![allow(unsafe_code)]` and a reason.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod backend;
pub mod clock;
pub mod cmd;
pub mod codec;
pub mod dev;
pub mod driver;
pub mod error;
pub mod graph;
pub mod io;
pub mod node;
pub mod options;
pub mod path;

pub use backend::{Backend, BackendOptions, DetectZeroes, Drained};
pub use error::{Error, Result};
pub use graph::{Graph, NodeId};
