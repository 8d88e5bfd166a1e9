//! A fixed pool of bounce buffers carved from caller memory, for the parts of requests that
//! cannot go straight between device and caller: unaligned heads and tails (read-modify-write),
//! buffers the device cannot address at their alignment, and zeros for write-zeroes fallbacks.
//!
//! A request takes all the buffers it needs at once (at most [`MAX_TAKE`]) or none, so two
//! requests never hold part of the pool each while waiting for the rest. When the pool is empty a
//! request waits for a buffer to come back (back-pressure); asking for more than the pool has is
//! an error, never a hang.

use core::cell::RefCell;

use crate::error::{Error, Result};
use crate::io::wait_for;

/// Most buffers in a pool.
pub const MAX_BUFFERS: usize = 64;
/// Most buffers one request takes at once.
pub const MAX_TAKE: usize = 2;

/// The pool.
pub struct BouncePool<'m> {
    free: RefCell<heapless::Vec<&'m mut [u8], MAX_BUFFERS>>,
    buffer_size: usize,
    total: usize,
}

impl<'m> BouncePool<'m> {
    /// Carves `memory` into buffers of `buffer_size` bytes (at most [`MAX_BUFFERS`]), each
    /// starting at an address aligned to `buffer_size`'s power-of-two factor, capped at 4 KiB.
    pub fn new(memory: &'m mut [u8], buffer_size: usize) -> Self {
        let mut free = heapless::Vec::new();
        let align = if buffer_size == 0 { 1 } else { (1usize << buffer_size.trailing_zeros()).min(4096) };
        let skip = memory.as_ptr().align_offset(align).min(memory.len());
        let (_, mut rest) = memory.split_at_mut(skip);
        while buffer_size > 0 && rest.len() >= buffer_size && !free.is_full() {
            let (buf, tail) = rest.split_at_mut(buffer_size);
            let _ = free.push(buf);
            rest = tail;
        }
        let total = free.len();
        Self { free: RefCell::new(free), buffer_size, total }
    }

    /// Bytes per buffer.
    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// Buffers in the pool.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Buffers free now.
    pub fn available(&self) -> usize {
        self.free.borrow().len()
    }

    /// Takes `n` buffers (1..=[`MAX_TAKE`]), waiting while the pool has fewer free.
    pub async fn take(&self, n: usize) -> Result<Bounce<'_, 'm>> {
        if n == 0 || n > MAX_TAKE || n > self.total {
            return Err(Error::NoSpace { what: "bounce buffers (pool too small for this request)" });
        }
        let bufs = wait_for(|| {
            let mut free = self.free.borrow_mut();
            if free.len() < n {
                return None;
            }
            let mut bufs = heapless::Vec::new();
            for _ in 0..n {
                if let Some(b) = free.pop() {
                    let _ = bufs.push(b);
                }
            }
            Some(bufs)
        })
        .await;
        Ok(Bounce { pool: self, bufs })
    }
}

impl<'m> BouncePool<'m> {
    /// Takes `n` buffers for a copy that will issue leaf requests while holding them (a
    /// copy-on-write): waits until taking them still leaves one free, so the leaf requests' own
    /// bounces (which take one and hold nothing else) always find one and copies cannot starve
    /// each other. Needs a pool of at least `n + 1`.
    pub async fn take_for_copy(&self, n: usize) -> Result<Bounce<'_, 'm>> {
        if n == 0 || n > MAX_TAKE || self.total < n + 1 {
            return Err(Error::NoSpace { what: "bounce buffers (a copy-on-write needs one more than it takes)" });
        }
        let bufs = wait_for(|| {
            let mut free = self.free.borrow_mut();
            if free.len() < n + 1 {
                return None;
            }
            let mut bufs = heapless::Vec::new();
            for _ in 0..n {
                if let Some(b) = free.pop() {
                    let _ = bufs.push(b);
                }
            }
            Some(bufs)
        })
        .await;
        Ok(Bounce { pool: self, bufs })
    }
}

/// Buffers taken from a pool; returned on drop.
pub struct Bounce<'p, 'm> {
    pool: &'p BouncePool<'m>,
    bufs: heapless::Vec<&'m mut [u8], MAX_TAKE>,
}

impl<'m> Bounce<'_, 'm> {
    /// Buffer `i`.
    pub fn get(&mut self, i: usize) -> Option<&mut [u8]> {
        self.bufs.get_mut(i).map(|b| &mut **b)
    }

    /// The first two buffers at once (the second `None` if only one was taken).
    pub fn pair(&mut self) -> (Option<&mut [u8]>, Option<&mut [u8]>) {
        let mut it = self.bufs.iter_mut();
        (it.next().map(|b| &mut **b), it.next().map(|b| &mut **b))
    }
}

impl Drop for Bounce<'_, '_> {
    fn drop(&mut self) {
        let mut free = self.pool.free.borrow_mut();
        while let Some(b) = self.bufs.pop() {
            let _ = free.push(b);
        }
    }
}
