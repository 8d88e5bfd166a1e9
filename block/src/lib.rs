//! Strata's block layer: portable, `#![no_std]`, and without a heap.
//!
//! Everything here builds for bare-metal targets with no `alloc` crate and no global allocator.
//! Capacities are fixed at build or init time; running out is an error, never a panic.
//! See `../shared/DESIGN.md` for the architecture this crate grows into.

#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

pub mod options;
