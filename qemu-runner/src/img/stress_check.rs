//! `img stress --check N`: after a crash, checks a disk against the stress model
//! (`strata_block::cmd::stress`, "Checking a crashed image") instead of running the workload.
//!
//! Ops `0..N` are *covered* (a completed flush made them stable), so every block holds what the
//! last of them to touch it left — unless a later op (`N..ops`, in flight or unflushed at the
//! crash) also touched it, whose result may have landed instead. The check is per sector of the
//! device (a crash may tear a block): each sector must match the covered entry or one of the
//! later ones. Unknown expectations (never written, discarded) accept anything.

use strata_block::cmd::stress::{block_matches, expected, for_each_update, replay, Config, Entry, Expected};

/// What [`check`] verified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Sectors whose covered content was known (zeros or data) and matched (or a later op's
    /// did).
    pub sectors: u64,
    /// Of those, sectors that held a later op's result instead of the covered one.
    pub later: u64,
}

/// Checks `disk` (the virtual disk's bytes from offset 0) against run `cfg` crashed with ops
/// `0..covered` stable, comparing per `sector` bytes (a divisor of `cfg.block`, multiple of 8).
pub fn check(cfg: &Config, covered: u32, disk: &[u8], sector: usize) -> Result<Checked, String> {
    let blocks = usize::try_from(cfg.blocks()).map_err(|_| "too many blocks".to_string())?;
    let bs = cfg.block as usize;
    if sector == 0 || !bs.is_multiple_of(sector) || !sector.is_multiple_of(8) {
        return Err(format!("sector size {sector} does not divide the block size {bs} in whole words"));
    }
    let mut table = vec![0u32; blocks];
    replay(cfg, &mut table, 0..covered.min(cfg.ops));
    let mut later: Vec<Vec<Entry>> = vec![Vec::new(); blocks];
    for_each_update(cfg, covered.min(cfg.ops)..cfg.ops, |b, e| {
        if let Some(l) = usize::try_from(b).ok().and_then(|b| later.get_mut(b)) {
            l.push(e);
        }
    });
    let mut done = Checked::default();
    for (b, (&raw, later)) in table.iter().zip(&later).enumerate() {
        let stable = Entry::decode(raw);
        let block_at = cfg.start + (b * bs) as u64;
        for s in 0..bs / sector {
            let at = block_at + (s * sector) as u64;
            let data = usize::try_from(at).ok().and_then(|a| disk.get(a..a + sector)).ok_or_else(|| format!("the disk ends before byte {at}"))?;
            if expected(stable) == Expected::Unknown {
                continue;
            }
            if block_matches(cfg.seed, stable, at, data) {
                done.sectors += 1;
            } else if later.iter().any(|&e| block_matches(cfg.seed, e, at, data)) {
                done.sectors += 1;
                done.later += 1;
            } else {
                let what = |e: Entry| match expected(e) {
                    Expected::Data(i) => format!("data of op {i}"),
                    Expected::Zeros => "zeros".into(),
                    Expected::Unknown => "anything".into(),
                };
                let others: Vec<String> = later.iter().map(|&e| what(e)).collect();
                return Err(format!(
                    "sector at byte {at} (block {b}) holds neither {} (covered, ops 0..{covered}) nor a later op's result [{}]",
                    what(stable),
                    others.join(", ")
                ));
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_block::cmd::stress::{fill_data, op_at, Mix, OpKind};

    /// The disk after ops `0..n` of `cfg`, one after the other, over zeros.
    fn disk_after(cfg: &Config, n: u32) -> Vec<u8> {
        let mut disk = vec![0u8; (cfg.start + cfg.len) as usize];
        for i in 0..n {
            let op = op_at(cfg, i);
            let r = op.offset as usize..op.end() as usize;
            match op.kind {
                OpKind::Write => fill_data(cfg.seed, i, op.offset, &mut disk[r]),
                OpKind::Zeroes { .. } => disk[r].fill(0),
                _ => {}
            }
        }
        disk
    }

    #[test]
    fn covered_ops_must_hold_later_ones_may() {
        let cfg = Config { mix: Mix { read: 0, write: 70, zeroes: 20, zeroes_unmap: 0, discard: 0, flush: 10 }, ..Config::new(3, 200, 256 << 10) };
        let full = disk_after(&cfg, 200);
        assert!(check(&cfg, 200, &full, 512).is_ok_and(|c| c.sectors > 0 && c.later == 0));
        // Crashed with ops 0..100 stable and some of the later ones landed.
        let mut crashed = disk_after(&cfg, 100);
        let later = disk_after(&cfg, 150);
        crashed[4096..8192].copy_from_slice(&later[4096..8192]);
        assert!(check(&cfg, 100, &crashed, 512).is_ok());
        // A covered write lost: the sector holds what an older op left.
        let older = disk_after(&cfg, 60);
        let sec = |d: &[u8], s: usize| d[s * 512..][..512].to_vec();
        let lost = (0..crashed.len() / 512).find(|&s| sec(&older, s) != sec(&crashed, s) && sec(&later, s) == sec(&crashed, s) && sec(&older, s).iter().any(|&b| b != 0));
        assert!(lost.is_some(), "the seed gives a sector a covered op rewrote");
        let s = lost.unwrap_or_default();
        crashed[s * 512..][..512].copy_from_slice(&older[s * 512..][..512]);
        assert!(check(&cfg, 100, &crashed, 512).is_err_and(|e| e.contains("holds neither")));
    }
}
