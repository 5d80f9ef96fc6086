//! Small statistics and formatting helpers for benchmark reports.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Median, min and max of a set of samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) median: Duration,
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

pub(crate) fn summarize(samples: &[Duration]) -> Summary {
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    };
    Summary {
        median,
        min: s[0],
        max: s[n - 1],
    }
}

/// Parses sizes such as `1GiB`, `256MiB`, `64KiB` or a plain byte count.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?} (use B, KiB, MiB, GiB)")),
    };
    Ok(n * mult)
}

/// Runs a command to completion (stdin closed), returning its wall time and stdout;
/// a non-zero exit is an error carrying its stderr.
pub(crate) fn run_timed(cmd: &mut Command) -> anyhow::Result<(Duration, String)> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    let t = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((t, String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_sizes() {
        let ms = Duration::from_millis;
        let s = summarize(&[ms(5), ms(1), ms(3)]);
        assert_eq!((s.median, s.min, s.max), (ms(3), ms(1), ms(5)));
        assert_eq!(summarize(&[ms(2), ms(4)]).median, ms(3));
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1 parsec").is_err());
    }
}
