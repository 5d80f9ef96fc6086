//! Platforms (`linux/arm64/v8`): parsing, normalisation and selection from an image index,
//! with containerd's `platforms` package semantics.
//!
//! Pulling an index fetches one manifest: the best match for the requested platform (the
//! host's by default). As in containerd, a platform also accepts older compatible ones:
//! `amd64` runs `386` images, `arm64` runs `arm/v8`…`arm/v5`, `arm/v7` runs `arm/v6` and
//! `arm/v5`; earlier entries in the acceptable list win.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex};

/// An OS/architecture/variant triple, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// `amd64`, `arm64`, `arm`, `386`, `riscv64`, …
    pub architecture: String,
    /// `v7`, `v8`… or empty.
    pub variant: String,
}

/// Why a platform string did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform {input:?}: {}", self.cause())]
pub struct PlatformError {
    input: String,
    reason: &'static str,
}

impl PlatformError {
    /// Why the input is not a platform, without the input (for callers that name it
    /// already, such as a command-line parser).
    pub fn cause(&self) -> String {
        format!(
            "{} (expected os/arch[/variant], e.g. linux/arm64/v8)",
            self.reason
        )
    }
}

impl Platform {
    /// A normalised platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        let os = match os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            other => other.to_owned(),
        };
        let (architecture, variant) = normalize_arch(
            &architecture.to_ascii_lowercase(),
            &variant.to_ascii_lowercase(),
        );
        Self {
            os,
            architecture,
            variant,
        }
    }

    /// The platform this process runs on.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        // 32-bit arm hosts are armhf (v7) in practice; containerd reads /proc/cpuinfo for more.
        let variant = if arch == "arm" { "v7" } else { "" };
        Self::new(std::env::consts::OS, arch, variant)
    }

    /// The platforms this one can run, best first (containerd's `platforms.Only`).
    pub fn compatible(&self) -> Vec<Platform> {
        let mut out = vec![self.clone()];
        let mk = |arch: &str, variant: &str| Platform::new(&self.os, arch, variant);
        match (self.architecture.as_str(), self.variant.as_str()) {
            ("amd64", _) => out.push(mk("386", "")),
            ("arm64", _) => out.extend(["v8", "v7", "v6", "v5"].map(|v| mk("arm", v))),
            ("arm", "v8") => out.extend(["v7", "v6", "v5"].map(|v| mk("arm", v))),
            ("arm", "v7") => out.extend(["v6", "v5"].map(|v| mk("arm", v))),
            ("arm", "v6") => out.push(mk("arm", "v5")),
            _ => {}
        }
        out
    }

    /// Whether an image of platform `other` may run here (exact or compatible).
    pub fn accepts(&self, other: &Platform) -> bool {
        self.rank(other).is_some()
    }

    /// Position of `other` in [`compatible`](Self::compatible): lower is better.
    fn rank(&self, other: &Platform) -> Option<usize> {
        self.compatible().iter().position(|p| p == other)
    }

    /// The index entry that best matches this platform: among acceptable entries the most
    /// preferred platform wins, then the earlier entry. Entries without a platform are
    /// ignored (attestations, artifacts).
    pub fn select<'a>(&self, index: &'a ImageIndex) -> Option<&'a Descriptor> {
        index
            .manifests()
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let p = d.platform().as_ref()?;
                let p = Platform::new(
                    &p.os().to_string(),
                    &p.architecture().to_string(),
                    p.variant().as_deref().unwrap_or(""),
                );
                self.rank(&p).map(|r| (r, i, d))
            })
            .min_by_key(|(r, i, _)| (*r, *i))
            .map(|(_, _, d)| d)
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (a, v) = match arch {
        "i386" | "386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { variant }),
        "aarch64" | "arm64" => (
            "arm64",
            match variant {
                "8" | "v8" | "v8.0" => "",
                other => other,
            },
        ),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => (
            "arm",
            match variant {
                "" | "7" => "v7",
                "5" => "v5",
                "6" => "v6",
                "8" => "v8",
                other => other,
            },
        ),
        other => (other, variant),
    };
    (a.to_owned(), v.to_owned())
}

/// The operating systems containerd's `platforms` package knows (Go's `GOOS` values).
fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
    )
}

/// The architectures containerd's `platforms` package knows (Go's `GOARCH` values),
/// after normalisation (`x86_64` is `amd64`, `aarch64` is `arm64`, …).
fn is_known_arch(arch: &str) -> bool {
    matches!(
        arch,
        "386"
            | "amd64"
            | "amd64p32"
            | "arm"
            | "armbe"
            | "arm64"
            | "arm64be"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "mips64p32"
            | "mips64p32le"
            | "ppc"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// `os/arch[/variant]`, or a bare `arch` or `os` (the rest from the host).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PlatformError {
            input: s.to_owned(),
            reason,
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| {
            p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        }) {
            return Err(err("empty or invalid component"));
        }
        let host = Platform::host();
        let platform = match parts.as_slice() {
            [one] => {
                let as_os = Platform::new(one, &host.architecture, &host.variant);
                if is_known_os(&as_os.os) {
                    as_os
                } else {
                    let as_arch = Platform::new(&host.os, one, "");
                    if !is_known_arch(&as_arch.architecture) {
                        return Err(err("unknown operating system or architecture"));
                    }
                    as_arch
                }
            }
            [os, arch] => Platform::new(os, arch, ""),
            [os, arch, variant] => Platform::new(os, arch, variant),
            _ => return Err(err("too many components")),
        };
        if !is_known_os(&platform.os) {
            return Err(err("unknown operating system"));
        }
        if !is_known_arch(&platform.architecture) {
            return Err(err("unknown architecture"));
        }
        Ok(platform)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_normalise() {
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), p("linux/arm64"));
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("Linux/ARM/6").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/386"), p("linux/i386"));
        assert_eq!(p("arm64").architecture, "arm64");
        assert_eq!(p("windows").os, "windows");
        assert_eq!(p("macos/arm64").os, "darwin");
        assert_eq!(p("linux/riscv64").to_string(), "linux/riscv64");
        for bad in [
            "",
            "/",
            "linux//amd64",
            "a/b/c/d",
            "linux/amd 64",
            "linux/amd46",
            "linxu/amd64",
            "amd46",
            "linux/arm64x/v8",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?} accepted");
        }
        let e = "linux/amd46".parse::<Platform>().unwrap_err().to_string();
        assert!(
            e.contains("\"linux/amd46\"") && e.contains("unknown architecture"),
            "{e}"
        );
    }

    #[test]
    fn compatibility_follows_containerd() {
        assert!(p("linux/amd64").accepts(&p("linux/386")));
        assert!(!p("linux/386").accepts(&p("linux/amd64")));
        assert!(p("linux/arm64").accepts(&p("linux/arm/v7")));
        assert!(p("linux/arm/v7").accepts(&p("linux/arm/v5")));
        assert!(!p("linux/arm/v6").accepts(&p("linux/arm/v7")));
        assert!(!p("linux/amd64").accepts(&p("windows/amd64")));
    }

    #[test]
    fn selects_best_entry_from_an_index() {
        let index: ImageIndex = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                 "digest": format!("sha256:{}", "1".repeat(64))},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                 "digest": format!("sha256:{}", "2".repeat(64)),
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                 "digest": format!("sha256:{}", "3".repeat(64)),
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                 "digest": format!("sha256:{}", "4".repeat(64)),
                 "platform": {"os": "linux", "architecture": "amd64"}},
            ]
        }))
        .unwrap();
        let pick = |s: &str| {
            p(s).select(&index)
                .map(|d| d.digest().to_string()[7..8].to_owned())
        };
        assert_eq!(pick("linux/arm64").as_deref(), Some("3"));
        assert_eq!(pick("linux/amd64").as_deref(), Some("4"));
        assert_eq!(
            pick("linux/arm/v8").as_deref(),
            Some("2"),
            "arm/v8 falls back to arm/v7"
        );
        assert_eq!(pick("linux/386"), None);
        assert_eq!(pick("linux/riscv64"), None);
    }
}
