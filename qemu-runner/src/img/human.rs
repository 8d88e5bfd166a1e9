//! Sizes as QEMU prints them for people (`size_to_str`): `img info`'s sizes and `img snapshot
//! -l`'s VM state column.

/// QEMU's human sizes (`size_to_str`): the unit switches up once the number would reach 1000
/// (so 1000 KiB is `0.977 MiB`), printed as C's `%0.3g`: `64 MiB`, `1.5 GiB`, `3.01 MiB`,
/// `512 B`, `0.977 KiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    // frexp(bytes * 1024 / 1000): the binary exponent picks the unit.
    let scaled = bytes as f64 / (1000.0 / 1024.0);
    let exponent = if scaled == 0.0 { 0 } else { scaled.log2().floor() as i64 + 1 };
    let unit = (((exponent - 1) / 10).max(0) as usize).min(UNITS.len() - 1);
    let value = bytes as f64 / (1u64 << (unit * 10)) as f64;
    format!("{} {}", format_g3(value), UNITS[unit])
}

/// C's `%0.3g` of a non-negative `v`.
fn format_g3(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    // The exponent after rounding to three significant digits.
    let sci = format!("{v:.2e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |t: &str| if t.contains('.') { t.trim_end_matches('0').trim_end_matches('.').to_string() } else { t.to_string() };
    if !(-4..3).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim(mantissa), exp.abs());
    }
    let decimals = (2 - exp) as usize;
    trim(&format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human_size(512), "512 B");
        assert_eq!(super::human_size(64 << 20), "64 MiB");
        assert_eq!(super::human_size(3 << 29), "1.5 GiB");
        assert_eq!(super::human_size(3080 * 1024), "3.01 MiB");
        assert_eq!(super::human_size(220 * 1024), "220 KiB");
        assert_eq!(super::human_size(10 << 20), "10 MiB");
        // qemu-img 10.0.2's own text for these sizes (`size_to_str`).
        assert_eq!(super::human_size(0), "0 B");
        assert_eq!(super::human_size(1000), "0.977 KiB");
        assert_eq!(super::human_size(1047552), "0.999 MiB");
        assert_eq!(super::human_size(1024000), "0.977 MiB");
        assert_eq!(super::human_size(1023488), "1e+03 KiB");
        assert_eq!(super::human_size(1000448), "977 KiB");
        assert_eq!(super::human_size(5000192), "4.77 MiB");
        assert_eq!(super::human_size(197120), "192 KiB");
    }
}
