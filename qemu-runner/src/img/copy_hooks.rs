//! The host's hooks for block's copy loop ([`strata_block::cmd::copy`]), shared by `img convert`
//! and `img commit`: holes of the source's host files (SEEK_HOLE), the `-p` line, a `-r` rate.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use strata_block::cmd::copy::{Action, CopyHooks, RateLimit};
use strata_block::NodeId;

use super::holes::HostFiles;
use super::image::Image;
use super::progress::Progress;

/// The hooks of one copy from `src`.
pub(super) struct HostHooks<'i, 'g, 'd, 'w> {
    src: &'i Image<'g, 'd>,
    files: RefCell<HostFiles<'i, 'g, 'd>>,
    /// The `-p` line, once the caller knows how much there is to copy.
    pub(super) progress: RefCell<Option<Progress<'w>>>,
    rate: RefCell<Option<(RateLimit, Instant)>>,
    /// Which claimed pieces the progress line counts.
    counted: fn(Action) -> bool,
}

impl<'i, 'g, 'd> HostHooks<'i, 'g, 'd, '_> {
    /// Hooks for a copy from `src` at `rate` bytes per second (0: unlimited), counting the
    /// pieces `counted` accepts as progress.
    pub(super) fn new(src: &'i Image<'g, 'd>, rate: u64, counted: fn(Action) -> bool) -> Self {
        Self {
            src,
            files: RefCell::new(HostFiles::new(src)),
            progress: RefCell::new(None),
            rate: RefCell::new((rate > 0).then(|| (RateLimit::new(rate, 100_000_000), Instant::now()))),
            counted,
        }
    }
}

impl CopyHooks for HostHooks<'_, '_, '_, '_> {
    fn host_hole(&self, leaf: NodeId, offset: u64, len: u64) -> Option<(bool, u64)> {
        let graph = self.src.backend.graph();
        let mut files = self.files.borrow_mut();
        let path = graph.node(leaf).ok().and_then(|n| n.device()).and_then(|d| files.path(d))?;
        Some(files.hole(&path, offset, len))
    }

    fn claimed(&self, _offset: u64, len: u64, action: Action) {
        if (self.counted)(action) {
            if let Some(p) = self.progress.borrow_mut().as_mut() {
                p.add(len);
            }
        }
    }

    async fn pace(&self, len: u64) {
        let wait = match self.rate.borrow_mut().as_mut() {
            Some((limit, start)) => limit.delay_ns(start.elapsed().as_nanos() as u64, len),
            None => 0,
        };
        if wait > 0 {
            // One thread runs every worker: sleeping holds them all, which a rate limit wants.
            std::thread::sleep(Duration::from_nanos(wait));
        }
    }
}
