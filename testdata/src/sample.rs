//! A small, realistic sample image (three layers, well under 1 MiB
//! compressed) that exercises the interesting layer features.
//!
//! * Layer 0 (base): `/bin/busybox` (256 KiB), `/bin/sh` → `busybox`
//!   symlink, `/bin/ls` hardlink to it, `/etc/os-release`, `/etc/passwd`,
//!   `/etc/motd`, shared libraries under `/usr/lib` (3 KiB – 128 KiB),
//!   docs under `/usr/share/doc`, `/tmp` (1777), `/root` (0700), a
//!   1000:1000-owned home, an empty file, and a path longer than 100 bytes.
//! * Layer 1 (app): adds `/app/server` (192 KiB) and its config, whites out
//!   `/etc/motd`, makes `/usr/share/doc` opaque (with a new README), and
//!   replaces `/etc/hostname`.
//! * Layer 2 (small): `/app/VERSION` and `/etc/app.conf`, identical across
//!   platforms so multi-platform layouts share that blob.
//!
//! Binaries' random contents depend on the seed and the architecture; text
//! files depend only on the seed.

use crate::image::{ImageSpec, Platform};
use crate::layer::LayerSpec;

const KIB: u64 = 1024;

/// Derives a sub-seed so every file gets its own stream.
fn sub_seed(seed: u64, salt: &str) -> u64 {
    // FNV-1a over the salt, mixed with the seed: stable across platforms and versions.
    let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for byte in salt.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// The sample image for `linux/amd64`.
pub fn sample_image(seed: u64) -> ImageSpec {
    sample_for(seed, Platform::linux_amd64())
}

/// The sample image for `linux/amd64` and `linux/arm64/v8`, in that order.
pub fn sample_multiplatform(seed: u64) -> Vec<ImageSpec> {
    vec![
        sample_for(seed, Platform::linux_amd64()),
        sample_for(seed, Platform::linux_arm64()),
    ]
}

/// The sample image for any platform.
pub fn sample_for(seed: u64, platform: Platform) -> ImageSpec {
    let arch = platform.architecture.clone();
    let bin = |name: &str| sub_seed(seed, &format!("{arch}/{name}"));
    let os_release = format!(
        "NAME=\"Strata Sample Linux\"\nID=strata\nVERSION_ID=1.{seed}\nPRETTY_NAME=\"Strata Sample Linux 1.{seed} ({arch})\"\n"
    );
    let long_dir = "usr/share/locale/strata-sample-with-a-deliberately-long-directory-name/LC_MESSAGES/and-more-nesting";

    let base = LayerSpec::new()
        .created_by("ADD rootfs.tar /")
        .dir("bin", 0o755)
        .dir("etc", 0o755)
        .dir("tmp", 0o1777)
        .dir("root", 0o700)
        .dir("usr/lib", 0o755)
        .random_file("bin/busybox", 0o755, bin("busybox"), 256 * KIB)
        .symlink("bin/sh", "busybox")
        .hardlink("bin/ls", "bin/busybox")
        .file("etc/os-release", 0o644, os_release)
        .file("etc/hostname", 0o644, "sample\n")
        .file(
            "etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .file("etc/motd", 0o644, "Welcome to the Strata sample image.\n")
        .file("etc/empty.conf", 0o644, "")
        .random_file("usr/lib/libc.so.6", 0o755, bin("libc"), 128 * KIB)
        .symlink("usr/lib/libc.so", "libc.so.6")
        .random_file("usr/lib/libz.so.1", 0o755, bin("libz"), 64 * KIB)
        .random_file("usr/lib/libtiny.so", 0o644, bin("libtiny"), 3 * KIB)
        .file(
            "usr/share/doc/busybox/README",
            0o644,
            "BusyBox sample docs\n",
        )
        .random_file(
            "usr/share/doc/busybox/manual.bin",
            0o644,
            sub_seed(seed, "manual"),
            8 * KIB,
        )
        .file(format!("{long_dir}/messages.mo"), 0o644, "long path\n")
        .owner(1000, 1000)
        .dir("home/user", 0o750)
        .file("home/user/.profile", 0o644, "export PS1='$ '\n");

    let app = LayerSpec::new()
        .mtime(crate::layer::DEFAULT_MTIME + 3600)
        .created_by("COPY app /app")
        .random_file("app/server", 0o755, bin("server"), 192 * KIB)
        .file(
            "app/config.json",
            0o644,
            format!("{{\"port\":8080,\"seed\":{seed}}}\n"),
        )
        .whiteout("etc/motd")
        .opaque("usr/share/doc")
        .file(
            "usr/share/doc/README",
            0o644,
            "Docs were replaced by the app layer.\n",
        )
        .file("etc/hostname", 0o644, "sample-app\n");

    let small = LayerSpec::new()
        .mtime(crate::layer::DEFAULT_MTIME + 7200)
        .created_by("RUN echo version > /app/VERSION")
        .file("app/VERSION", 0o644, format!("1.0.{seed}\n"))
        .file("etc/app.conf", 0o600, "log_level=info\n");

    let mut image = ImageSpec::new(platform)
        .layer(base)
        .layer(app)
        .layer(small)
        .entrypoint(["/app/server"])
        .cmd(["--config", "/app/config.json"])
        .env("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("APP_MODE=sample")
        .working_dir("/app");
    image
        .empty_layer_history
        .push("CMD [\"--config\" \"/app/config.json\"]".to_owned());
    image
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::tar_entries;

    #[test]
    fn sample_is_small_and_deterministic() {
        let a = sample_image(11).build().unwrap();
        assert_eq!(a, sample_image(11).build().unwrap());
        assert_eq!(a.layers.len(), 3);
        let total: u64 = a.layers.iter().map(|l| l.size).sum();
        assert!(total < 5 << 20, "{total}");
        let b = sample_image(12).build().unwrap();
        assert_ne!(a.layers[0].diff_id, b.layers[0].diff_id);
    }

    #[test]
    fn sample_has_links_whiteouts_and_opaque_dirs() {
        let built = sample_image(1).build().unwrap();
        let base = tar_entries(&built.layers[0].tar);
        let kind = |name: &str| base.iter().find(|e| e.path == name).map(|e| e.kind);
        assert_eq!(kind("bin/sh"), Some(tar::EntryType::Symlink));
        assert_eq!(kind("bin/ls"), Some(tar::EntryType::Link));
        assert!(base.iter().any(|e| e.path.len() > 100));
        let app: Vec<String> = tar_entries(&built.layers[1].tar)
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert!(app.contains(&"etc/.wh.motd".to_owned()));
        assert!(app.contains(&"usr/share/doc/.wh..wh..opq".to_owned()));
    }

    #[test]
    fn platforms_differ_in_binaries_but_share_top_layer() {
        let images: Vec<_> = sample_multiplatform(5)
            .iter()
            .map(|i| i.build().unwrap())
            .collect();
        assert_ne!(images[0].layers[0].digest, images[1].layers[0].digest);
        assert_eq!(images[0].layers[2].digest, images[1].layers[2].digest);
        assert_eq!(images[1].platform, Platform::linux_arm64());
    }
}
