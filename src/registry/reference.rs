//! [`Reference`]: an image reference (`registry/repository[:tag][@digest]`), parsed and
//! normalised exactly as docker's `reference.ParseNormalizedNamed` (which containerd's
//! `ParseDockerRef` builds on) does.
//!
//! Normalisation: a first path component that contains `.` or `:`, equals `localhost`, or
//! has an upper-case letter names the registry; otherwise the registry is `docker.io` and a
//! one-component repository gets `library/`. `index.docker.io` is `docker.io`. A reference
//! with neither tag nor digest gets the tag `latest`; one with both keeps both.
//!
//! Validation follows the distribution grammar: repository path components are lower-case
//! alphanumerics joined by `.`, `_`, `__` or runs of `-`; tags are `[\w][\w.-]{0,127}`;
//! the registry is a host name, IPv4 address or bracketed IPv6 address with an optional
//! port; the whole name is at most 255 characters. Digests must be sha256 (the only
//! algorithm Strata computes).

use std::fmt;
use std::str::FromStr;

use strata_formats::Digest;

use super::error::RegistryError;

/// Docker Hub's registry name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name, normalised to [`DOCKER_HUB`].
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The host that serves Docker Hub's registry API.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The repository namespace of Docker Hub's official images.
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag a reference without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";
/// The longest name (`registry/repository`) the distribution grammar allows.
const NAME_MAX: usize = 255;
/// The longest tag.
const TAG_MAX: usize = 128;

/// A parsed, normalised image reference. Fields are private so every `Reference` is valid:
/// build one with [`str::parse`] / [`Reference::new`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Builds a reference from its parts, validating each (no normalisation: `registry`
    /// is taken as given, except that `index.docker.io` becomes `docker.io`).
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<Digest>,
    ) -> Result<Self, RegistryError> {
        let shown = format!(
            "{registry}/{repository}{}{}",
            tag.map(|t| format!(":{t}")).unwrap_or_default(),
            digest.as_ref().map(|d| format!("@{d}")).unwrap_or_default()
        );
        let invalid = |reason: &str| RegistryError::InvalidReference {
            reference: shown.clone(),
            reason: reason.into(),
        };
        check_domain(registry).map_err(|r| invalid(&r))?;
        check_path(repository).map_err(|r| invalid(&r))?;
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(invalid(
                "repository name must not be more than 255 characters",
            ));
        }
        if let Some(t) = tag {
            check_tag(t).map_err(|r| invalid(&r))?;
        }
        let registry = if registry == DOCKER_HUB_LEGACY {
            DOCKER_HUB
        } else {
            registry
        };
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry as written in references: `docker.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The registry host the reference names (same as [`registry`](Self::registry)); the
    /// key for `hosts.toml` directories and credentials.
    pub fn registry_host(&self) -> &str {
        &self.registry
    }

    /// The host that serves the registry API when no mirror or `server` is configured:
    /// `registry-1.docker.io` for `docker.io`, the registry itself otherwise.
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The repository path: `library/alpine`, `team/app`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the manifests endpoint for: the digest when there is one (it pins the
    /// content), else the tag, else `latest`.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The same repository with this digest (the tag is kept).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository with this tag (the digest is dropped).
    pub fn with_tag(&self, tag: &str) -> Result<Self, RegistryError> {
        check_tag(tag).map_err(|reason| RegistryError::InvalidReference {
            reference: format!("{}:{tag}", self.name()),
            reason,
        })?;
        Ok(Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The reference as containerd's `ParseDockerRef` returns it: when a digest is present
    /// the tag is dropped (the digest alone identifies the content).
    pub fn to_docker_ref(&self) -> Self {
        if self.digest.is_some() {
            Self {
                tag: None,
                ..self.clone()
            }
        } else {
            self.clone()
        }
    }

    /// The short form docker prints: `alpine:3.20`, `user/app:1`,
    /// `localhost:5000/app:1` (docker's `FamiliarString`).
    pub fn familiar(&self) -> String {
        let mut out = if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_owned(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        };
        self.push_suffix(&mut out);
        out
    }

    fn push_suffix(&self, out: &mut String) {
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(&d.to_string());
        }
    }
}

/// The host serving the API of `registry` by default: `docker.io` is served by
/// `registry-1.docker.io`.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API_HOST
    } else {
        registry
    }
}

impl fmt::Display for Reference {
    /// The full form: `docker.io/library/alpine:latest`, `host/app:1@sha256:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_suffix(&mut out);
        f.write_str(&out)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = RegistryError;

    /// Parses and normalises like docker's `ParseNormalizedNamed`, then adds `latest` to a
    /// reference without tag or digest.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s).map_err(|reason| RegistryError::InvalidReference {
            reference: s.to_owned(),
            reason,
        })
    }
}

fn parse(s: &str) -> Result<Reference, String> {
    if s.is_empty() {
        return Err("empty reference".into());
    }
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("cannot specify 64-byte hexadecimal strings".into());
    }
    let (domain, remainder) = split_docker_domain(s);
    // Docker checks case before the grammar, so "Foo" gets the helpful message.
    let remote_name = remainder
        .split_once(':')
        .map_or(remainder.as_str(), |(n, _)| n);
    if remote_name.to_lowercase() != remote_name {
        return Err("repository name must be lowercase".into());
    }
    let (name_tag, digest) = match remainder.split_once('@') {
        Some((n, d)) => (n, Some(parse_digest(d)?)),
        None => (remainder.as_str(), None),
    };
    let (path, tag) = match name_tag.split_once(':') {
        Some((p, t)) => (p, Some(t)),
        None => (name_tag, None),
    };
    check_domain(domain)?;
    check_path(path)?;
    if domain.len() + 1 + path.len() > NAME_MAX {
        return Err("repository name must not be more than 255 characters".into());
    }
    if let Some(t) = tag {
        check_tag(t)?;
    }
    let tag = match (tag, &digest) {
        (None, None) => Some(DEFAULT_TAG.to_owned()),
        (t, _) => t.map(str::to_owned),
    };
    Ok(Reference {
        registry: domain.to_owned(),
        repository: path.to_owned(),
        tag,
        digest,
    })
}

/// Docker's `splitDockerDomain`: which part of `name` is the registry.
fn split_docker_domain(name: &str) -> (&str, String) {
    let (mut domain, mut remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first, rest.to_owned())
        }
        _ => (DOCKER_HUB, name.to_owned()),
    };
    if domain == DOCKER_HUB_LEGACY {
        domain = DOCKER_HUB;
    }
    if domain == DOCKER_HUB && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_NAMESPACE}/{remainder}");
    }
    (domain, remainder)
}

fn parse_digest(d: &str) -> Result<Digest, String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!("invalid digest {d:?}: missing algorithm"));
    };
    let alg_ok = alg.split(['+', '.', '_', '-']).all(|c| {
        c.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && c.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("invalid digest {d:?}"));
    }
    if alg != Digest::SHA256 {
        return Err(format!(
            "unsupported digest algorithm {alg:?} (only sha256 is supported)"
        ));
    }
    d.parse::<Digest>().map_err(|e| e.to_string())
}

/// `host[:port]`, host a domain name, IPv4 address or `[IPv6]`.
fn check_domain(domain: &str) -> Result<(), String> {
    let bad = || Err(format!("invalid registry host {domain:?}"));
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return bad();
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return bad();
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad(),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let component_ok = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        };
        if !host.split('.').all(component_ok) {
            return bad();
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad();
    }
    Ok(())
}

/// Path components joined by `/`, each `[a-z0-9]+` runs joined by `.`, `_`, `__` or `-+`.
fn check_path(path: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()
        {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'a'..=b'z' | b'0'..=b'9' => i += 1,
                b'.' => {
                    if !b[i + 1].is_ascii_alphanumeric() {
                        return false;
                    }
                    i += 1;
                }
                b'_' => {
                    // `_` or `__`, then an alphanumeric.
                    let n = if b[i + 1] == b'_' { 2 } else { 1 };
                    if !b[i + n].is_ascii_alphanumeric() {
                        return false;
                    }
                    i += n;
                }
                b'-' => {
                    while b[i] == b'-' {
                        i += 1;
                    }
                    if !b[i].is_ascii_alphanumeric() {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    };
    if path.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "invalid repository path {path:?}: components must be lower-case letters and digits, \
             separated by '.', '_', '__' or '-'"
        ))
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_like_docker() {
        let d = format!("sha256:{HEX}");
        // input, full form, registry, repository, tag, has digest
        type Row = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            Option<&'static str>,
            bool,
        );
        let table: &[Row] = &[
            (
                "alpine",
                "docker.io/library/alpine:latest",
                "docker.io",
                "library/alpine",
                Some("latest"),
                false,
            ),
            (
                "alpine:3.20",
                "docker.io/library/alpine:3.20",
                "docker.io",
                "library/alpine",
                Some("3.20"),
                false,
            ),
            (
                "user/app",
                "docker.io/user/app:latest",
                "docker.io",
                "user/app",
                Some("latest"),
                false,
            ),
            (
                "docker.io/alpine",
                "docker.io/library/alpine:latest",
                "docker.io",
                "library/alpine",
                Some("latest"),
                false,
            ),
            (
                "index.docker.io/user/app:1",
                "docker.io/user/app:1",
                "docker.io",
                "user/app",
                Some("1"),
                false,
            ),
            (
                "index.docker.io/alpine",
                "docker.io/library/alpine:latest",
                "docker.io",
                "library/alpine",
                Some("latest"),
                false,
            ),
            (
                "localhost/app",
                "localhost/app:latest",
                "localhost",
                "app",
                Some("latest"),
                false,
            ),
            (
                "localhost:5000/app:1",
                "localhost:5000/app:1",
                "localhost:5000",
                "app",
                Some("1"),
                false,
            ),
            (
                "127.0.0.1:5000/a/b/c",
                "127.0.0.1:5000/a/b/c:latest",
                "127.0.0.1:5000",
                "a/b/c",
                Some("latest"),
                false,
            ),
            (
                "[::1]:5000/app",
                "[::1]:5000/app:latest",
                "[::1]:5000",
                "app",
                Some("latest"),
                false,
            ),
            (
                "registry.local/team/app",
                "registry.local/team/app:latest",
                "registry.local",
                "team/app",
                Some("latest"),
                false,
            ),
            (
                "Registry/app",
                "Registry/app:latest",
                "Registry",
                "app",
                Some("latest"),
                false,
            ),
            (
                "ab-c_d__e/f.g--h",
                "docker.io/ab-c_d__e/f.g--h:latest",
                "docker.io",
                "ab-c_d__e/f.g--h",
                Some("latest"),
                false,
            ),
            (
                "localhost:5000",
                "docker.io/library/localhost:5000",
                "docker.io",
                "library/localhost",
                Some("5000"),
                false,
            ),
            (
                "app:Tag_1.x-y",
                "docker.io/library/app:Tag_1.x-y",
                "docker.io",
                "library/app",
                Some("Tag_1.x-y"),
                false,
            ),
        ];
        for &(input, full, registry, repository, tag, digest) in table {
            let r: Reference = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), full, "{input}");
            assert_eq!(r.registry(), registry, "{input}");
            assert_eq!(r.repository(), repository, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest().is_some(), digest, "{input}");
            // Display round-trips.
            assert_eq!(full.parse::<Reference>().unwrap(), r, "{input}");
        }

        let r: Reference = format!("alpine@{d}").parse().unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/alpine@{d}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.object(), d);
        let r: Reference = format!("host:5000/app:1.0@{d}").parse().unwrap();
        assert_eq!(r.to_string(), format!("host:5000/app:1.0@{d}"));
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.object(), d, "the digest wins");
        assert_eq!(r.to_docker_ref().to_string(), format!("host:5000/app@{d}"));
        assert_eq!(r.familiar(), format!("host:5000/app:1.0@{d}"));
    }

    #[test]
    fn rejects_what_docker_rejects() {
        let long = format!("a/{}", "b".repeat(254));
        let bad = [
            "",
            "UPPER",
            "user/App",
            "a b",
            "app:",
            "app:-x",
            "app:.x",
            "/app",
            "app/",
            "a//b",
            "-app",
            "app-",
            "a..b",
            "a___b",
            "a_.b",
            "a-_b",
            "a.b_c/app",
            "a-.b",
            "app@sha256:xyz",
            "app@sha256",
            "app@md5:0123456789abcdef0123456789abcdef",
            HEX,
            "host:port/app",
            "-host.com/app",
            "host-.com/app",
            "[zz]:5000/app",
            "[::1/app",
            "app:a:b",
            &long,
        ];
        for b in bad {
            let e = b.parse::<Reference>().expect_err(b);
            assert!(
                matches!(e, RegistryError::InvalidReference { .. }),
                "{b}: {e}"
            );
            assert!(
                e.to_string().contains(&format!("{b:?}")),
                "{e} names the input"
            );
        }
        assert!(
            "user/App"
                .parse::<Reference>()
                .unwrap_err()
                .to_string()
                .contains("must be lowercase")
        );
        let long_tag = format!("app:{}", "t".repeat(129));
        assert!(long_tag.parse::<Reference>().is_err());
        assert!(
            format!("app:{}", "t".repeat(128))
                .parse::<Reference>()
                .is_ok()
        );
        // Repository of exactly 255 characters total is fine.
        let ok = format!("docker.io/a/{}", "b".repeat(255 - "docker.io/a/".len()));
        assert!(ok.parse::<Reference>().is_ok());
    }

    #[test]
    fn familiar_and_hosts() {
        let f = |s: &str| s.parse::<Reference>().unwrap().familiar();
        assert_eq!(f("alpine"), "alpine:latest");
        assert_eq!(f("docker.io/library/alpine:3"), "alpine:3");
        assert_eq!(f("user/app:1"), "user/app:1");
        assert_eq!(f("docker.io/library/a/b"), "library/a/b:latest");
        assert_eq!(f("localhost:5000/app:1"), "localhost:5000/app:1");
        let r: Reference = "alpine".parse().unwrap();
        assert_eq!(r.registry_host(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.name(), "docker.io/library/alpine");
        let r: Reference = "quay.io/a/b".parse().unwrap();
        assert_eq!(r.api_host(), "quay.io");
        let t = r.with_tag("v2").unwrap();
        assert_eq!(t.to_string(), "quay.io/a/b:v2");
        assert!(r.with_tag("-bad").is_err());
        let d = Digest::of(b"x");
        assert_eq!(t.with_digest(d.clone()).object(), d.to_string());
    }

    #[test]
    fn new_validates_parts() {
        assert!(Reference::new("localhost:5000", "team/app", Some("1"), None).is_ok());
        assert_eq!(
            Reference::new("index.docker.io", "library/a", None, None)
                .unwrap()
                .registry(),
            "docker.io"
        );
        assert!(Reference::new("localhost:5000", "Team/app", None, None).is_err());
        assert!(Reference::new("bad host", "app", None, None).is_err());
        assert!(Reference::new("h", "app", Some(""), None).is_err());
    }
}
