//! The model bench's report: the markdown tables, the ratios against the targets and the
//! distance from the physical limits.

use super::*;

pub(super) fn report(
    args: &ModelArgs,
    file_size: u64,
    b: &Bench<'_>,
    s: &Samples,
    skopeo_error: Option<&str>,
) {
    let total = b.total();
    let mb = total as f64 / 1e6;
    let mode = s.modes.iter().cloned().collect::<Vec<_>>().join(", ");
    let link = if args.slow_link {
        "the slow link (benches/slow-link.sh)"
    } else {
        "loopback"
    };
    println!(
        "\nModel: {} × {} MiB safetensors ({:.0} MB of weights) + config/tokenizer files, \
         ModelPack with a chunk index, registry on {link}; {} runs, medians (min–max). \
         Volume mode measured (`volume ls`): **{mode}**{}.\n",
        args.files,
        file_size >> 20,
        mb,
        args.runs,
        if args.volume_args.is_empty() {
            String::new()
        } else {
            format!(", `volume mount {}`", args.volume_args.join(" "))
        }
    );
    println!("Time to first tensor (open, header, parse, one tensor at a seeded random index):\n");
    println!("| path | median | min–max | of which mount / pull / copy |");
    println!("|---|---|---|---|");
    let row = |label: &str, v: &[Duration], part: &[Duration]| {
        if v.is_empty() {
            return None;
        }
        let t = summarize(v);
        let p = summarize(part);
        println!(
            "| {label} | {} | {} | {} |",
            fmt_t(t.median),
            fmt_range(&t),
            fmt_t(p.median)
        );
        Some(t.median)
    };
    let lazy = row(
        &format!("`strata volume mount` ({mode}) + first tensor"),
        &s.lazy_ttft,
        &s.lazy_ttft_mount,
    );
    let pull = row("`strata pull` + first tensor", &s.pull_ttft, &s.pull_only);
    let skopeo = row(
        "`skopeo copy docker://… dir:…` + first tensor",
        &s.skopeo_ttft,
        &s.skopeo_copy,
    );
    println!();
    if let (Some(l), Some(p)) = (lazy, pull) {
        println!(
            "- lazy / `strata pull` (target ≤ 0.05×): **{:.3}×**",
            l.as_secs_f64() / p.as_secs_f64()
        );
    }
    if let (Some(l), Some(k)) = (lazy, skopeo) {
        println!(
            "- lazy / `skopeo copy` (target ≤ 0.05×): **{:.3}×**",
            l.as_secs_f64() / k.as_secs_f64()
        );
    }
    if let Some(e) = skopeo_error {
        println!("- skopeo reference missing: {e}");
    }

    println!(
        "\nFull sequential read of all weights ({mb:.0} MB, {READ_BUF} B reads, every byte checked):\n"
    );
    println!("| path | median | min–max | throughput |");
    println!("|---|---|---|---|");
    let sum = |a: &[Duration], b: &[Duration]| -> Vec<Duration> {
        a.iter().zip(b).map(|(x, y)| *x + *y).collect()
    };
    let rate = |d: Duration| mb / d.as_secs_f64();
    let row = |label: &str, v: &[Duration]| {
        if v.is_empty() {
            return None;
        }
        let t = summarize(v);
        println!(
            "| {label} | {} | {} | {:.0} MB/s |",
            fmt_t(t.median),
            fmt_range(&t),
            rate(t.median)
        );
        Some(rate(t.median))
    };
    let lazy_full = row(
        &format!("`strata volume mount` ({mode}) + read through the volume, cold"),
        &s.lazy_full,
    );
    let pull_read = row(
        "`strata pull` + read of the pulled blobs",
        &sum(&s.pull_only, &s.pull_read),
    );
    let pull_only = row("`strata pull` alone", &s.pull_only);
    let get = row(
        "registry GET of each blob, one connection, bytes discarded (link limit)",
        &s.registry_get,
    );
    let warm = row(
        "second read through the volume (page cache dropped: Strata's cache on disk)",
        &s.lazy_warm,
    );
    let disk = row(
        "host disk: the registry's blob files (page cache dropped)",
        &s.host_disk,
    );
    println!();
    if let (Some(l), Some(p)) = (lazy_full, pull_read) {
        println!(
            "- cold read / (`strata pull` + read) throughput (target ≥ 0.9×): **{:.2}×**",
            l / p
        );
    }
    if let (Some(l), Some(p)) = (lazy_full, pull_only) {
        println!("- cold read / `strata pull` alone: {:.2}×", l / p);
    }
    if let (Some(l), Some(g)) = (lazy_full, get) {
        println!("- cold read / registry GET rate: {:.2}×", l / g);
    }
    if let (Some(link), Some(l)) = (b.link_rate, lazy_full) {
        println!(
            "- cold read / link rate ({:.1} MB/s; target ≥ 0.9×): **{:.2}×**",
            link / 1e6,
            l * 1e6 / link
        );
    }
    if let (Some(w), Some(d)) = (warm, disk) {
        println!(
            "- second read / host disk (target ≥ 0.8×): **{:.2}×**",
            w / d
        );
    }
    let rss: Vec<&(u64, String)> = s.rss.iter().flatten().collect();
    if rss.is_empty() {
        println!("- RSS of the process serving the volume: n/a (no separate process serves it)");
    } else {
        let max = rss.iter().map(|(r, _)| *r).max().unwrap_or(0);
        let names: BTreeSet<&str> = rss.iter().map(|(_, n)| n.as_str()).collect();
        println!(
            "- RSS (VmHWM) of the process serving the volume: max {:.1} MiB over {} runs ({}; target ≤ 64 MiB)",
            max as f64 / (1 << 20) as f64,
            rss.len(),
            names.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(max) = s.cache_bytes.iter().max() {
        let bound = cache_bound_mib(&args.volume_args);
        println!(
            "- chunk cache (`<root>/volumes/cache`) after both reads: max {} bytes of chunks and copies ({:.2}× the weights; \
             {:.0} MB on disk with its directories), bound `--cache-size` {bound} MiB: {}",
            max,
            *max as f64 / total as f64,
            s.cache_disk.iter().max().copied().unwrap_or(0) as f64 / 1e6,
            if *max <= bound << 20 {
                "within"
            } else {
                "**over**"
            }
        );
    } else if let Some(max) = s.root_bytes.iter().max() {
        println!(
            "- the volume's root on disk after both reads: max {:.0} MB ({:.2}× the weights; no chunk cache in this mode)",
            *max as f64 / 1e6,
            *max as f64 / total as f64
        );
    }
    println!(
        "- SHA-256 on this CPU (the verification floor): {:.0} MB/s",
        sha256_rate()
    );
}

/// The `--cache-size` (MiB) among the extra `volume mount` arguments, else the default.
pub(super) fn cache_bound_mib(args: &[String]) -> u64 {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = match a.strip_prefix("--cache-size") {
            Some("") => it.next().map(String::as_str),
            Some(v) => v.strip_prefix('='),
            None => None,
        };
        if let Some(n) = v.and_then(|v| v.parse().ok()) {
            return n;
        }
    }
    DEFAULT_CACHE_MIB
}

/// A tc rate (`100mbit`, `1gbit`, `512kibit`, `10mbps`) in bytes per second (tc's `mbit`
/// is 10^6 bits, `mbps` 10^6 bytes).
pub(super) fn tc_rate_bytes(rate: &str) -> Option<f64> {
    let (r, unit) = if let Some(r) = rate.strip_suffix("bit") {
        (r, 8.0)
    } else {
        (rate.strip_suffix("bps")?, 1.0)
    };
    let split = r.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(r.len());
    let mult = match &r[split..] {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    r[..split].parse::<f64>().ok().map(|n| n * mult / unit)
}

/// SHA-256 throughput of one core over 256 MiB in memory.
pub(super) fn sha256_rate() -> f64 {
    let buf = strata_testdata::random_bytes(64 << 20, 1);
    let mut d = strata_formats::Digester::new();
    let start = Instant::now();
    for _ in 0..4 {
        d.update(&buf);
    }
    let t = start.elapsed();
    std::hint::black_box(d.digest());
    (256u64 << 20) as f64 / t.as_secs_f64() / 1e6
}

pub(super) fn fmt_t(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

pub(super) fn fmt_range(s: &Summary) -> String {
    if s.max < Duration::from_secs(1) {
        format!(
            "{:.1}–{:.1} ms",
            s.min.as_secs_f64() * 1e3,
            s.max.as_secs_f64() * 1e3
        )
    } else {
        format!("{:.2}–{:.2} s", s.min.as_secs_f64(), s.max.as_secs_f64())
    }
}

pub(super) fn secs(d: Option<&Duration>) -> f64 {
    d.map_or(0.0, Duration::as_secs_f64)
}

pub(super) fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}
