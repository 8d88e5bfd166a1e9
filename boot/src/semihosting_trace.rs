//! The trace sink shared by the boards whose defmt goes to a semihosting console (aarch64 and
//! riscv64 `virt`; the runner points the console at a file with `-semihosting-config
//! enable=on,chardev=...`).
//!
//! The console's calls take NUL-terminated text (SYS_WRITE0) or one byte (SYS_WRITEC). defmt's
//! rzcobs frames hold no zero byte except the one ending each frame, so each run of non-zero
//! bytes goes out with one SYS_WRITE0 and each zero with one SYS_WRITEC: a trap per run of up to
//! [`RUN`] bytes, not per byte.

/// Longest run written by one call.
const RUN: usize = 256;

/// Writes `bytes` through `write0` (a NUL-terminated run, NUL included) and `writec` (one
/// byte).
pub(crate) fn write(bytes: &[u8], write0: impl Fn(&[u8]), writec: impl Fn(u8)) {
    let mut run = [0u8; RUN + 1];
    let mut len = 0;
    let flush = |run: &mut [u8; RUN + 1], len: &mut usize| {
        if *len > 0 {
            run[*len] = 0;
            write0(&run[..=*len]);
            *len = 0;
        }
    };
    for &b in bytes {
        if b == 0 {
            flush(&mut run, &mut len);
            writec(0);
        } else {
            run[len] = b;
            len += 1;
            if len == RUN {
                flush(&mut run, &mut len);
            }
        }
    }
    flush(&mut run, &mut len);
}
