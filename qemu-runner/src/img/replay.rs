//! `img replay`: rebuilds what a crash could have left on disk from a crash log
//! ([`super::crashlog`]) and a copy of the starting image.
//!
//! A [`Cut`] is a point `at` in the log's seq order plus a choice for the unstable writes:
//!
//! - *guaranteed*: writes that completed before the submission of a flush that completed before
//!   the cut (the latest such flush counts). Always applied, in completion order.
//! - *candidates*: every other write submitted before the cut (completed or still in flight,
//!   failed ones too). A real crash keeps any subset of them, landed in any order.
//!   - `drop: None` (a *prefix* cut): every candidate that completed successfully before the cut
//!     is applied in completion order, the in-flight ones are dropped — the disk as the device
//!     last reported it;
//!   - `drop: Some(seed)`: a random subset, in random order, drawn from `seed`.
//!
//! Grows before the cut are applied (a file only ever grows). Discards are applied as zeros, as a
//! host file punches a hole. Writes are applied whole: sector tearing is not modelled.
//!
//! [`plan`] picks cuts: one after every flush (up to half the budget, evenly spread) and the rest
//! inside flush epochs, a random point and subset each.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use strata_block::dev::record::Seq;

use super::crashlog::{read_log, Change, Record};
use super::output;
use super::ImgError;
use super::rng::Rng;

/// One crash point (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Records with a lower seq happened before the crash.
    pub at: Seq,
    /// `None`: keep every completed write; `Some(seed)`: a random subset in random order.
    pub drop: Option<u64>,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.drop {
            None => write!(f, "--cut {}", self.at),
            Some(seed) => write!(f, "--cut {} --drop {seed}", self.at),
        }
    }
}

/// What a replay applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Guaranteed writes applied.
    pub guaranteed: usize,
    /// Candidates applied.
    pub kept: usize,
    /// Candidates dropped.
    pub dropped: usize,
}

/// The mutations a cut applies, in order, and how many of each kind.
pub fn select(records: &[Record], cut: Cut) -> (Vec<&Record>, Applied) {
    let stable_below = records
        .iter()
        .filter_map(|r| match r {
            Record::Flushed { seq, submitted, ok: true } if *seq < cut.at => Some(*submitted),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut guaranteed = Vec::new();
    let mut candidates = Vec::new();
    for r in records {
        if let Record::Mutation { seq, submitted, ok, .. } = r {
            if *ok && *seq < stable_below {
                guaranteed.push(r);
            } else if *submitted < cut.at {
                candidates.push(r);
            }
        }
    }
    guaranteed.sort_by_key(|r| r.seq());
    let mut applied = Applied { guaranteed: guaranteed.len(), ..Applied::default() };
    let kept: Vec<&Record> = match cut.drop {
        None => {
            let mut kept: Vec<&Record> = candidates
                .iter()
                .copied()
                .filter(|r| matches!(r, Record::Mutation { seq, ok: true, .. } if *seq < cut.at))
                .collect();
            kept.sort_by_key(|r| r.seq());
            kept
        }
        Some(seed) => {
            let mut rng = Rng::new(seed);
            // Fisher-Yates, then keep a random fraction (0..=100 %) of the shuffled list.
            for i in (1..candidates.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                candidates.swap(i, j);
            }
            let percent = rng.below(101);
            candidates.iter().copied().filter(|_| rng.below(100) < percent).collect()
        }
    };
    applied.kept = kept.len();
    applied.dropped = records.iter().filter(|r| matches!(r, Record::Mutation { submitted, .. } if *submitted < cut.at)).count()
        - applied.guaranteed
        - applied.kept;
    guaranteed.extend(kept);
    (guaranteed, applied)
}

/// Copies `base` to `out` and applies `cut` of `records` onto the copy.
pub fn replay(records: &[Record], cut: Cut, base: &Path, out: &Path) -> Result<Applied, String> {
    std::fs::copy(base, out).map_err(|e| format!("copy {} to {}: {e}", base.display(), out.display()))?;
    let file = OpenOptions::new().write(true).open(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let io = |e: std::io::Error| format!("{}: {e}", out.display());
    let grown = records
        .iter()
        .filter_map(|r| match r {
            Record::Grow { seq, capacity } if *seq < cut.at => Some(*capacity),
            _ => None,
        })
        .max();
    if let Some(capacity) = grown {
        if capacity > file.metadata().map_err(io)?.len() {
            file.set_len(capacity).map_err(io)?;
        }
    }
    let (ops, applied) = select(records, cut);
    let zeros = vec![0u8; 1 << 20];
    for r in ops {
        let Record::Mutation { offset, len, change, .. } = r else { continue };
        match change {
            Change::Data(data) => file.write_all_at(data, *offset).map_err(io)?,
            Change::Zeroes { .. } | Change::Discard => {
                let mut done = 0;
                while done < *len {
                    let n = (*len - done).min(zeros.len() as u64);
                    file.write_all_at(&zeros[..n as usize], offset + done).map_err(io)?;
                    done += n;
                }
            }
        }
    }
    Ok(applied)
}

/// Up to `budget` cuts for `records` (see the module docs), derived from `seed`.
pub fn plan(records: &[Record], budget: usize, seed: u64) -> Vec<Cut> {
    let flushes: Vec<Seq> = records
        .iter()
        .filter_map(|r| match r {
            Record::Flushed { seq, ok: true, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    let end = records.iter().map(Record::seq).max().map_or(0, |s| s + 1);
    let mut cuts = Vec::new();
    let prefixes = flushes.len().min(budget / 2).max(usize::from(!flushes.is_empty()));
    for i in 0..prefixes {
        let f = flushes[i * flushes.len() / prefixes];
        cuts.push(Cut { at: f + 1, drop: None });
    }
    // Epoch k runs from the completion of flush k-1 to the completion of flush k (the last one
    // to the end of the log).
    let mut bounds = vec![0];
    bounds.extend(flushes.iter().map(|f| f + 1));
    bounds.push(end.max(1));
    bounds.dedup();
    let epochs = bounds.len().saturating_sub(1).max(1);
    let mut rng = Rng::new(seed);
    let mut i = 0usize;
    while cuts.len() < budget {
        let k = i % epochs;
        let (lo, hi) = (bounds.get(k).copied().unwrap_or(0), bounds.get(k + 1).copied().unwrap_or(end));
        let at = lo + 1 + rng.below(hi.saturating_sub(lo));
        cuts.push(Cut { at, drop: Some(rng.next_u64() >> 1) });
        i += 1;
    }
    cuts
}

/// `img replay LOG BASE OUT --cut SEQ [--drop SEED]`, or `img replay LOG --plan N [--seed S]`.
pub fn run(args: &[String]) -> Result<(), ImgError> {
    let mut positional = Vec::new();
    let (mut at, mut drop, mut plan_n, mut seed) = (None, None, None, 1u64);
    let mut it = args.iter();
    let num = |flag: &str, v: Option<&String>| -> Result<u64, ImgError> {
        v.and_then(|v| v.parse().ok()).ok_or_else(|| ImgError::usage(format!("{flag} needs a number")))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--cut" => at = Some(num("--cut", it.next())?),
            "--drop" => drop = Some(num("--drop", it.next())?),
            "--plan" => plan_n = Some(num("--plan", it.next())?),
            "--seed" => seed = num("--seed", it.next())?,
            s if s.starts_with('-') => return Err(ImgError::usage(format!("replay: unknown option {s}"))),
            _ => positional.push(a.as_str()),
        }
    }
    let log = positional.first().ok_or_else(|| ImgError::usage("replay: LOG expected".into()))?;
    let records = read_log(Path::new(log)).map_err(ImgError::failed)?;
    if let Some(n) = plan_n {
        for cut in plan(&records, n as usize, seed) {
            println!("{cut}");
        }
        return Ok(());
    }
    let [_, base, out] = positional[..] else {
        return Err(ImgError::usage("replay: LOG BASE OUT --cut SEQ [--drop SEED] expected".into()));
    };
    let at = at.ok_or_else(|| ImgError::usage("replay: --cut SEQ expected".into()))?;
    output::refuse_inputs(Path::new(out), &[PathBuf::from(log), PathBuf::from(base)])?;
    let applied = replay(&records, Cut { at, drop }, Path::new(base), Path::new(out)).map_err(ImgError::failed)?;
    println!("applied {} guaranteed and {} more writes, dropped {}", applied.guaranteed, applied.kept, applied.dropped);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(seq: Seq, submitted: Seq, offset: u64) -> Record {
        Record::Mutation { seq, submitted, offset, len: 1, change: Change::Data(vec![seq as u8]), ok: true }
    }

    #[test]
    fn flush_covers_writes_completed_before_its_submission() {
        let records = vec![
            write(1, 0, 0),
            Record::FlushSubmitted { seq: 3 },
            write(4, 2, 1), // in flight when the flush was submitted: not covered
            Record::Flushed { seq: 5, submitted: 3, ok: true },
            write(7, 6, 2),
        ];
        let (ops, a) = select(&records, Cut { at: 6, drop: Some(7) });
        assert_eq!(a.guaranteed, 1);
        assert_eq!(ops[0], &records[0]);
        assert_eq!(a.kept + a.dropped, 1);
        let (ops, a) = select(&records, Cut { at: 8, drop: None });
        assert_eq!((a.guaranteed, a.kept, a.dropped), (1, 2, 0));
        assert_eq!(ops.iter().map(|r| r.seq()).collect::<Vec<_>>(), [1, 4, 7]);
        // Before the flush completed nothing is guaranteed; in flight writes are candidates.
        let (_, a) = select(&records, Cut { at: 3, drop: None });
        assert_eq!((a.guaranteed, a.kept, a.dropped), (0, 1, 1));
    }

    #[test]
    fn plans_prefix_and_epoch_cuts() {
        let mut records = Vec::new();
        for k in 0..10u64 {
            records.push(write(k * 4 + 1, k * 4, k));
            records.push(Record::FlushSubmitted { seq: k * 4 + 2 });
            records.push(Record::Flushed { seq: k * 4 + 3, submitted: k * 4 + 2, ok: true });
        }
        let cuts = plan(&records, 50, 1);
        assert_eq!(cuts.len(), 50);
        assert_eq!(cuts.iter().filter(|c| c.drop.is_none()).count(), 10);
        assert!(cuts.iter().all(|c| c.at >= 1 && c.at <= 41));
    }
}
