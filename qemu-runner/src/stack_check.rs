//! The kernel's boot stack against its size. The stack has no guard page (the kernel runs with
//! identity-mapped or no paging), so a workload that ran past its end would corrupt the
//! statics below it silently. The kernel measures how deep it went (the `stack` record,
//! `kernel/src/stack_depth.rs`); the runner judges the mark: a run that came close to the end
//! fails, one that used more than half of it gets a warning. The stack is sized by these
//! measurements (`BOOT_STACK_SIZE` in `boot/src/*/entry.rs`).

/// What a run's stack mark says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Well inside the stack, or no mark reported.
    Fine,
    /// More than half used: worth knowing before the stack is made smaller.
    Tight(String),
    /// Within an eighth of the end: the run may have overflowed it.
    Exhausted(String),
}

/// Judges `deepest` bytes used out of `painted` measurable (the `stack` record's
/// `deepest_bytes` and `painted_bytes`).
pub fn judge(deepest: Option<u64>, painted: Option<u64>) -> Verdict {
    let (Some(deepest), Some(painted)) = (deepest, painted) else { return Verdict::Fine };
    if painted == 0 {
        return Verdict::Fine;
    }
    let text = |what: &str| format!("boot stack {what}: {} KiB used of {} KiB (boot/src/*/entry.rs BOOT_STACK_SIZE)", deepest / 1024, painted / 1024);
    if deepest.saturating_mul(8) > painted.saturating_mul(7) {
        Verdict::Exhausted(text("nearly exhausted, it may have overflowed"))
    } else if deepest.saturating_mul(2) > painted {
        Verdict::Tight(text("more than half used"))
    } else {
        Verdict::Fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        const MIB: u64 = 1 << 20;
        assert_eq!(judge(None, Some(4 * MIB)), Verdict::Fine);
        assert_eq!(judge(Some(MIB), Some(0)), Verdict::Fine);
        assert_eq!(judge(Some(2 * MIB), Some(4 * MIB)), Verdict::Fine);
        assert!(matches!(judge(Some(2 * MIB + 1), Some(4 * MIB)), Verdict::Tight(_)));
        assert!(matches!(judge(Some(7 * MIB / 2 + 1), Some(4 * MIB)), Verdict::Exhausted(m) if m.contains("3584 KiB used of 4096 KiB")));
    }
}
