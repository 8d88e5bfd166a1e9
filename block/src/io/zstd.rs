//! The graph's zstd decoders for compressed qcow2 clusters (`compression_type=zstd`): each is
//! a fixed [`Decoder`] (about 9 KiB of tables), an input buffer of one block (128 KiB), and an
//! output window the caller gives it at init ([`ZstdDecoder::set_window`]).
//!
//! **Where the output goes.** A zstd match may reach back to the start of its frame (QEMU
//! compresses a whole cluster as one frame), so a cluster is decoded whole. A read that covers
//! the whole cluster is decoded straight into the caller's buffer and needs no window; a read
//! of part of a cluster is decoded into the window and copied out, so the window must hold a
//! cluster: 64 KiB for the default cluster size, 2 MiB for the largest. A window too small for
//! the cluster is [`crate::Error::NoSpace`], not a panic. The graph holds as many decoders as
//! the caller gives it ([`crate::Graph::set_zstd_decoders`]); a request waits for a free one.

use core::cell::{Cell, RefCell};

use crate::codec::zstd::{Decoder, BLOCK_MAX};

/// Input buffered per decoder: one block, the most the decoder needs at once.
pub const INPUT: usize = BLOCK_MAX;

/// A zstd decoder with its input buffer and output window (see the module docs).
pub struct ZstdDecoder<'w> {
    pub(crate) decoder: RefCell<Decoder>,
    pub(crate) input: RefCell<[u8; INPUT]>,
    pub(crate) window: RefCell<Option<&'w mut [u8]>>,
    pub(crate) busy: Cell<bool>,
}

impl<'w> ZstdDecoder<'w> {
    /// An idle decoder without a window: it decodes reads that cover whole clusters only.
    pub const fn new() -> Self {
        Self {
            decoder: RefCell::new(Decoder::new()),
            input: RefCell::new([0; INPUT]),
            window: RefCell::new(None),
            busy: Cell::new(false),
        }
    }

    /// Gives the decoder its output window for reads of part of a cluster (at least the
    /// cluster size of the images it reads).
    pub fn set_window(&mut self, window: &'w mut [u8]) {
        *self.window.get_mut() = Some(window);
    }

    /// Bytes of the output window.
    pub fn window_len(&self) -> usize {
        self.window
            .try_borrow()
            .map(|w| w.as_ref().map_or(0, |w| w.len()))
            .unwrap_or(0)
    }
}

impl Default for ZstdDecoder<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// A decoder taken from the pool; given back on drop.
pub(crate) struct TakenZstd<'a, 'w>(pub(crate) &'a ZstdDecoder<'w>);

impl Drop for TakenZstd<'_, '_> {
    fn drop(&mut self) {
        self.0.busy.set(false);
    }
}
