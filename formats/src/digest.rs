//! OCI content digests: `algorithm:encoded`, of which Strata computes and accepts sha256.
//!
//! A [`Digest`] is validated when parsed (algorithm known, hex of the right length, lower
//! case), so a digest that reaches a path join can never contain `/` or `..`.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// Why a string is not a usable digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// No `algorithm:` prefix.
    #[error("invalid digest {0:?}: missing algorithm prefix (expected sha256:<64 hex>)")]
    MissingAlgorithm(String),
    /// An algorithm other than sha256.
    #[error("invalid digest {0:?}: unsupported algorithm (only sha256 is supported)")]
    UnsupportedAlgorithm(String),
    /// The encoded part is not 64 lower-case hex digits.
    #[error("invalid digest {0:?}: encoded part must be 64 lower-case hex digits")]
    BadEncoding(String),
}

/// A validated `sha256:<64 lower-case hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    // Invariant: exactly 64 lower-case hex characters.
    hex: String,
}

impl Digest {
    /// The only algorithm Strata computes.
    pub const SHA256: &'static str = "sha256";

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self::from_sha256_bytes(&sha2::Sha256::digest(data))
    }

    /// A digest from a raw 32-byte sha256 value.
    pub fn from_sha256_bytes(bytes: &[u8]) -> Self {
        Self {
            hex: hex::encode(bytes),
        }
    }

    /// Parses the encoded part alone (64 hex digits), as found in `blobs/sha256/<hex>`.
    pub fn from_hex(encoded: &str) -> Result<Self, DigestError> {
        if encoded.len() == 64
            && encoded
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            Ok(Self {
                hex: encoded.to_owned(),
            })
        } else {
            Err(DigestError::BadEncoding(format!("sha256:{encoded}")))
        }
    }

    /// The algorithm, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        Self::SHA256
    }

    /// The 64 hex digits after `sha256:`.
    pub fn encoded(&self) -> &str {
        &self.hex
    }

    /// A short form for messages: `sha256:0123456789ab`.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex[..12])
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((alg, enc)) = s.split_once(':') else {
            return Err(DigestError::MissingAlgorithm(s.to_owned()));
        };
        if alg != Self::SHA256 {
            return Err(DigestError::UnsupportedAlgorithm(s.to_owned()));
        }
        Self::from_hex(enc).map_err(|_| DigestError::BadEncoding(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental sha256 over a stream, counting the bytes it has seen.
#[derive(Clone, Default)]
pub struct Digester {
    hasher: sha2::Sha256,
    len: u64,
}

impl fmt::Debug for Digester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digester")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Digester {
    /// A fresh digester.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed so far (the digester is left untouched).
    pub fn digest(&self) -> Digest {
        Digest::from_sha256_bytes(&self.hasher.clone().finalize())
    }
}

impl std::io::Write for Digester {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_and_display_round_trip() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::of(b""), d);
        assert_eq!(d.short(), "sha256:e3b0c44298fc");
        let mut g = Digester::new();
        g.update(b"");
        assert_eq!(g.digest(), d);
    }

    #[test]
    fn rejects_unsafe_or_malformed() {
        for bad in [
            "e3b0",
            "sha512:abcd",
            "sha256:../../etc/passwd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn digester_counts_and_streams() {
        let mut g = Digester::new();
        g.update(b"hello ");
        g.update(b"world");
        assert_eq!(g.len(), 11);
        assert_eq!(g.digest(), Digest::of(b"hello world"));
    }
}
