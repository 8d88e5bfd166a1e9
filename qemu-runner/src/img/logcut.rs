//! Crash states from a dm-log-writes log ([`super::logwrites`]): what a power cut at one log
//! entry could have left on the disk, rebuilt on a copy of the disk's starting file.
//!
//! A [`Cut`] at entry `at` means entries `0..at` reached the device before the power went:
//!
//! - *stable*: every entry before the last FLUSH entry below `at` — a completed flush made them
//!   durable. Applied in log order, whole.
//! - *candidates*: the writes and discards after that flush and below `at`. The device may have
//!   kept any of them, in any order, and a multi-sector write may be *torn* (only some of its
//!   sectors landed).
//!   - `drop: None` (a *prefix* cut): all of them, whole, in log order — the disk as logged;
//!   - `drop: Some(seed)`: a random subset in a random order, some writes torn (a random prefix
//!     or a random subset of their sectors), drawn from `seed`.
//!
//! Discards are applied as zeros, as a host file punches a hole. [`plan`] picks cuts: one after
//! every flush (up to half the budget, evenly spread) and the rest inside flush epochs, a random
//! entry and subset each.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::logwrites::{Entry, Log};
use super::rng::Rng;

/// One crash point (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Entries `0..at` happened.
    pub at: usize,
    /// `None`: keep every candidate whole; `Some(seed)`: a random subset, order and tearing.
    pub drop: Option<u64>,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.drop {
            None => write!(f, "cut at entry {}", self.at),
            Some(seed) => write!(f, "cut at entry {} drop seed {seed}", self.at),
        }
    }
}

/// What a replay applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Stable entries (writes and discards before the last flush).
    pub stable: usize,
    /// Candidates applied whole.
    pub kept: usize,
    /// Candidates applied torn.
    pub torn: usize,
    /// Candidates dropped.
    pub dropped: usize,
}

/// The index after the last FLUSH entry below `at` (0 if none): entries below it are stable.
pub fn stable_end(log: &Log, at: usize) -> usize {
    log.entries.iter().take(at).rposition(Entry::is_flush).map_or(0, |f| f + 1)
}

/// Copies `base` to `out` and applies `cut` of `log` onto the copy.
pub fn replay(log: &Log, cut: Cut, base: &Path, out: &Path) -> Result<Applied, String> {
    std::fs::copy(base, out).map_err(|e| format!("copy {} to {}: {e}", base.display(), out.display()))?;
    let file = OpenOptions::new().write(true).open(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let ss = log.sector_size;
    let zeros = vec![0u8; ss as usize];
    // Writes sector `k` of `entry`.
    let put = |entry: &Entry, k: u64| -> Result<(), String> {
        let at = (entry.sector + k) * ss;
        let data = if entry.is_discard() { &zeros[..] } else { log.data(entry).get((k * ss) as usize..((k + 1) * ss) as usize).unwrap_or(&zeros) };
        file.write_all_at(data, at).map_err(|e| format!("{}: {e}", out.display()))
    };
    let whole = |entry: &Entry| (0..entry.sectors).try_for_each(|k| put(entry, k));
    let at = cut.at.min(log.entries.len());
    let stable = stable_end(log, at);
    let mut applied = Applied::default();
    for e in log.entries.iter().take(stable).filter(|e| !e.is_flush()) {
        whole(e)?;
        applied.stable += 1;
    }
    let mut candidates: Vec<&Entry> = log.entries.get(stable..at).unwrap_or_default().iter().filter(|e| !e.is_flush()).collect();
    let Some(seed) = cut.drop else {
        for e in &candidates {
            whole(e)?;
        }
        applied.kept = candidates.len();
        return Ok(applied);
    };
    let mut rng = Rng::new(seed);
    // Fisher-Yates, then keep a random fraction (0..=100 %) of the shuffled list; a quarter of
    // the kept multi-sector ones are torn.
    for i in (1..candidates.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        candidates.swap(i, j);
    }
    let percent = rng.below(101);
    for e in candidates {
        if rng.below(100) >= percent {
            applied.dropped += 1;
        } else if e.sectors > 1 && rng.below(4) == 0 {
            applied.torn += 1;
            if rng.below(2) == 0 {
                (0..rng.below(e.sectors)).try_for_each(|k| put(e, k))?;
            } else {
                for k in 0..e.sectors {
                    if rng.below(2) == 0 {
                        put(e, k)?;
                    }
                }
            }
        } else {
            applied.kept += 1;
            whole(e)?;
        }
    }
    Ok(applied)
}

/// Up to `budget` cuts of `log` (see the module docs), derived from `seed`.
pub fn plan(log: &Log, budget: usize, seed: u64) -> Vec<Cut> {
    let flushes: Vec<usize> = log.entries.iter().enumerate().filter(|(_, e)| e.is_flush()).map(|(i, _)| i).collect();
    let end = log.entries.len();
    let mut cuts = Vec::new();
    let prefixes = flushes.len().min(budget / 2).max(usize::from(!flushes.is_empty() && budget > 0));
    for i in 0..prefixes {
        cuts.push(Cut { at: flushes[i * flushes.len() / prefixes] + 1, drop: None });
    }
    // Epoch k runs from after flush k-1 to flush k (the last one to the end of the log).
    let mut bounds = vec![0];
    bounds.extend(flushes.iter().map(|f| f + 1));
    bounds.push(end);
    bounds.dedup();
    let epochs: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).filter(|(lo, hi)| hi > lo).collect();
    let mut rng = Rng::new(seed);
    let mut i = 0usize;
    while cuts.len() < budget && !epochs.is_empty() {
        let (lo, hi) = epochs[i % epochs.len()];
        let at = lo + 1 + rng.below((hi - lo) as u64) as usize;
        cuts.push(Cut { at, drop: Some(rng.next_u64() >> 1) });
        i += 1;
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::super::logwrites::{Entry, Log, DISCARD, FLUSH};
    use super::*;

    fn log() -> Log {
        // Entries: write sectors 0-1 = 1s, flush, write sector 1 = 2s, discard sector 0.
        let mut bytes = vec![0u8; 512 * 4];
        bytes[..1024].fill(1);
        bytes[1024..1536].fill(2);
        let entries = vec![
            Entry { sector: 0, sectors: 2, flags: 0, data: 0..1024 },
            Entry { sector: 0, sectors: 0, flags: FLUSH, data: 0..0 },
            Entry { sector: 1, sectors: 1, flags: 0, data: 1024..1536 },
            Entry { sector: 0, sectors: 1, flags: DISCARD, data: 0..0 },
        ];
        Log { bytes, sector_size: 512, super_entries: 4, entries }
    }

    #[test]
    fn stable_before_the_last_flush_and_prefix_cuts() {
        let dir = std::env::temp_dir().join(format!("logcut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let (base, out) = (dir.join("base"), dir.join("out"));
        std::fs::write(&base, [9u8; 1536]).unwrap_or_default();
        let l = log();
        assert_eq!(stable_end(&l, 1), 0);
        assert_eq!(stable_end(&l, 2), 2);
        let read = || std::fs::read(&out).unwrap_or_default();
        let a = replay(&l, Cut { at: 2, drop: None }, &base, &out);
        assert_eq!(a, Ok(Applied { stable: 1, ..Applied::default() }));
        assert_eq!(&read()[..1024], &[1u8; 1024][..]);
        let a = replay(&l, Cut { at: 4, drop: None }, &base, &out);
        assert_eq!(a, Ok(Applied { stable: 1, kept: 2, ..Applied::default() }));
        assert_eq!((read()[0], read()[512]), (0, 2));
        for seed in 0..20 {
            let a = replay(&l, Cut { at: 4, drop: Some(seed) }, &base, &out).unwrap_or_default();
            assert_eq!((a.stable, a.kept + a.torn + a.dropped), (1, 2));
            assert!(read()[512] == 1 || read()[512] == 2, "sector 1 holds the flushed or the later write");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn plan_has_flush_boundaries_and_epoch_cuts() {
        let cuts = plan(&log(), 6, 1);
        assert_eq!(cuts.len(), 6);
        assert_eq!(cuts[0], Cut { at: 2, drop: None });
        assert!(cuts[1..].iter().all(|c| c.drop.is_some() && (1..=4).contains(&c.at)));
    }
}
