//! Unpack time of a generated ~150 MB gzip layer: Strata's applier against containerd's
//! `archive.Apply` (Go, with overlay whiteouts), the latter run when `STRATA_CTR_APPLY`
//! names a small Go program taking `<layer> <target>` and printing `<diffID> <seconds>`.
//! Each run unpacks into a fresh directory; page cache is warm for the layer file.
//!
//! `cargo bench -p strata-snapshotters --bench apply`

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use strata_snapshotters::apply::{ApplyOptions, WhiteoutMode, apply_layer};

/// Compressible-but-not-trivial bytes (words from a small alphabet), like text and code.
fn fill(buf: &mut [u8], seed: &mut u64) {
    for b in buf.iter_mut() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *b = b"abcdefghijklmnop \n\x00\x01\x7f"[(*seed % 21) as usize];
    }
}

fn generate(path: &Path) -> u64 {
    let out = std::fs::File::create(path).unwrap();
    let gz =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(out), flate2::Compression::new(6));
    let mut b = tar::Builder::new(gz);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut total = 0u64;
    let mut data = vec![0u8; 4 << 20];
    for d in 0..100 {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, format!("usr/share/d{d}/"), &b""[..])
            .unwrap();
        for f in 0..40 {
            // Mostly small files, a few large ones: the shape of a distro layer.
            let size = match f % 20 {
                0 => 512 << 10,
                1..=4 => 64 << 10,
                _ => 1024 + (f * 997) % 12_000,
            };
            fill(&mut data[..size], &mut seed);
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(size as u64);
            b.append_data(&mut h, format!("usr/share/d{d}/f{f}"), &data[..size])
                .unwrap();
            total += size as u64;
            if f % 10 == 0 {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, format!("usr/share/d{d}/l{f}"), format!("f{f}"))
                    .unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    total
}

fn main() {
    // Only `cargo bench` (which passes `--bench`) runs it; test runners (`cargo test
    // --all-targets`, nextest's `--list`) get an empty list.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer.tar.gz");
    let payload = generate(&layer);
    let compressed = std::fs::metadata(&layer).unwrap().len();
    println!(
        "layer: {} MB of file data, {} MB gzip",
        payload >> 20,
        compressed >> 20
    );
    let runs = 3;
    let mut strata = Vec::new();
    for i in 0..runs {
        let target = dir.path().join(format!("strata{i}"));
        std::fs::create_dir(&target).unwrap();
        let start = Instant::now();
        let f = std::fs::File::open(&layer).unwrap();
        let report = apply_layer(
            f,
            &target,
            &ApplyOptions::new("bench", WhiteoutMode::Overlay { userxattr: false }),
        )
        .unwrap();
        strata.push(start.elapsed().as_secs_f64());
        if i == 0 {
            println!(
                "diffID {} ({} MB uncompressed)",
                report.diff_id,
                report.size >> 20
            );
        }
        std::fs::remove_dir_all(&target).unwrap();
    }
    strata.sort_by(f64::total_cmp);
    println!(
        "strata apply: median {:.3}s (runs {:?})",
        strata[runs / 2],
        strata
    );
    if let Ok(ctr) = std::env::var("STRATA_CTR_APPLY") {
        let mut times = Vec::new();
        for i in 0..runs {
            let target = dir.path().join(format!("ctr{i}"));
            std::fs::create_dir(&target).unwrap();
            let out = std::process::Command::new(&ctr)
                .arg(&layer)
                .arg(&target)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let secs: f64 = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            times.push(secs);
            std::fs::remove_dir_all(&target).unwrap();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "containerd archive.Apply: median {:.3}s (runs {:?})",
            times[runs / 2],
            times
        );
        println!(
            "ratio strata/containerd: {:.2}",
            strata[runs / 2] / times[runs / 2]
        );
    }
}
