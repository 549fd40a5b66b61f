//! Formatting helpers for people: sizes, ages, tables.

use std::time::Duration;

/// `6291456` → `6.0 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Time since `unix_ns`, like `3m12s`.
pub(crate) fn age(unix_ns: u64) -> String {
    if unix_ns == 0 {
        return "?".into();
    }
    let now = xmem_core::os::time::unix_now_ns();
    duration(Duration::from_nanos(now.saturating_sub(unix_ns)))
}

/// A duration, coarsely.
pub(crate) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// The wall-clock time of day, `HH:MM:SS.mmm` (UTC), for event lines.
pub(crate) fn clock() -> String {
    let ns = xmem_core::os::time::unix_now_ns();
    let s = ns / 1_000_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        (ns / 1_000_000) % 1000
    )
}

/// Nanoseconds as `812ns`, `12.3µs`, `4.1ms`.
pub(crate) fn nanos(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}ns"),
        10_000..=9_999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        _ => format!("{:.1}ms", ns as f64 / 1e6),
    }
}

/// Prints rows as left-aligned columns under a header.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    for line in table_lines(header, rows) {
        outln!("{line}")?;
    }
    Ok(())
}

/// Rows as left-aligned columns under a header, one string per line (for `xmem top`, which
/// draws them in place).
pub(crate) fn table_lines(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    std::iter::once(line(&header))
        .chain(rows.iter().map(|r| line(r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(6 * 1024 * 1024), "6.0 MiB");
        assert_eq!(nanos(812), "812ns");
        assert_eq!(nanos(12_345), "12.3µs");
        assert_eq!(duration(Duration::from_secs(192)), "3m12s");
    }
}
