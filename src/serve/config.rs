//! The daemon's configuration file (`/etc/strata/config.toml` by default): typed, every key
//! documented in [`DEFAULT_CONFIG`], unknown keys rejected by name.
//!
//! A missing default file means "all defaults"; a missing file named explicitly is an error,
//! so a typo in `--config` never silently runs an unconfigured daemon.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strata_snapshotters::erofs::{ErofsOptions, LayerImageBuilder, MkfsErofs, StrataErofsWriter};
use strata_snapshotters::overlay::OverlayOptions;

use crate::snapshots::SNAPSHOTTERS;

/// Where `strata serve` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/strata/config.toml";
/// The socket containerd's `[proxy_plugins.strata]` points at.
pub const DEFAULT_SOCKET: &str = "/run/strata/strata.sock";
/// The state directory.
pub const DEFAULT_ROOT: &str = "/var/lib/strata";
/// The registry hosts directory (containerd's `hosts.toml` layout).
pub const DEFAULT_HOSTS_DIR: &str = "/etc/containerd/certs.d";
/// The request name served when containerd's proxy plugin is called `strata`.
pub const DEFAULT_NAME: &str = "strata";

/// The commented default configuration `strata config default` prints. It parses back to
/// [`Config::default`] (a unit test holds the two together).
pub const DEFAULT_CONFIG: &str = r#"# Strata daemon configuration (`strata serve`), TOML.
# Every key is optional; the values below are the defaults. Unknown keys are an error.
# Command-line flags (--root, --socket, --log-level, --log-format) override this file.

# State directory: each snapshotter keeps its metadata and snapshots under
# <root>/snapshotters/<implementation>/.
root = "/var/lib/strata"

# The unix socket containerd's proxy plugin connects to
# ([proxy_plugins.strata] address = "..."). Created with mode 0660; its parent
# directory is created with mode 0711.
socket = "/run/strata/strata.sock"

# Log filter: error, warn, info, debug or trace, or a tracing filter such as
# "strata=debug". Each RPC is logged at debug level.
log_level = "info"

# Log format on stderr: "text" or "json" (one JSON object per line).
log_format = "text"

# Prometheus metrics endpoint, e.g. "127.0.0.1:9102" (GET /metrics). Empty: off.
# Loopback addresses only: the endpoint is plain, unauthenticated HTTP. Exposes
# strata_snapshotter_requests_total{rpc,snapshotter,code} and
# strata_snapshotter_request_duration_seconds{rpc,snapshotter} (100 µs to 10 s buckets).
metrics_address = ""

# Registry hosts directory (containerd's certs.d layout: <host>/hosts.toml),
# read by the lazy snapshotters to reach registries.
config_path = "/etc/containerd/certs.d"

# Request names to snapshotter implementations. containerd sends the proxy
# plugin's name ([proxy_plugins.<name>]) in every request; that name picks the
# implementation. "overlayfs", "native", "stargz" and "erofs" always name
# themselves (erofs only where the kernel has EROFS). Names mapped
# to the same implementation share one instance (one set of snapshots).
[snapshotters]
strata = "overlayfs"

# Options of the overlayfs implementation (as containerd's overlayfs plugin).
[overlayfs]
# Options added to every overlay mount, e.g. ["volatile"].
mount_options = []
# Report each snapshot's upper directory in the
# "containerd.io/snapshot/overlay.upperdir" label.
upperdir_label = false

# Options of the erofs implementation (as containerd's erofs snapshotter and differ):
# each committed layer one EROFS image, converted from the layer's directory at
# Commit.
[erofs]
# Options added to every overlay mount, e.g. ["volatile"].
mount_options = []
# What converts a layer's directory into its image at Commit: "strata" (Strata's
# own writer: no process, keeps 255-byte names and the holes of sparse files) or
# "mkfs.erofs" (erofs-utils 1.5, as containerd runs it). Layers Strata unpacks
# itself stream from the tar into the image, whatever this says.
builder = "strata"
# Options added to `mkfs.erofs --quiet -Enoinline_data`, e.g. ["-zlz4hc"].
mkfs_options = []

# Remote snapshots: layers provided without containerd downloading and unpacking
# them (containerd's remote-snapshot protocol; used by the overlayfs and erofs
# implementations, so by every name mapped to them, "strata" included).
[remote]
# A layer whose blob is already in Strata's own content store (<root>/content,
# e.g. from `strata pull --no-unpack`) is applied from there (for erofs: written
# as the layer's EROFS image) and committed by Strata. It works for pulls that label each layer with its digest: CRI, and
# `ctr-remote image rpull`; a plain `ctr image pull` does not. Each provided layer
# and each fallback to a normal unpack is logged.
local_content = false

# The "stargz" snapshotter: eStargz layers mounted lazily from their registry
# (FUSE), for pulls that label each layer with its image and digest
# (`ctr-remote image rpull`, CRI). Other layers are pulled and unpacked as by
# overlayfs, with a log line and strata_stargz_layers_total{outcome="fallback"}.
# Registry hosts, mirrors and plain HTTP come from config_path; credentials
# from the docker config of the user running strata serve.
[stargz]
# Most bytes of decompressed chunks kept in <root>/cache/stargz (shared by all
# lazily mounted layers; least recently used evicted). 0 disables the cache.
cache_max_size = 10737418240
# FUSE threads per mounted layer.
fuse_threads = 2
# Let the kernel read files held whole in the cache directly (FUSE passthrough).
passthrough = false
# At mount, fetch each layer's prioritized files (those before .prefetch.landmark,
# as `strata convert` and `ctr-remote image optimize` order them), in requests of
# prefetch_request compressed bytes (streamed: chunks are served as they come),
# up to 2 per layer at a time; reads of them
# meanwhile wait for them (a read of one still queued sends it at once).
prefetch = true
prefetch_request = 4194304
# A read that misses fetches, in one streamed range request, the file from the
# missed chunk on (up to this many compressed bytes; a small file whole), a little
# of the files stored after it, and, when another file of the same directory
# missed lately, the rest of the directory. A file read sequentially gets windows
# that double as the reader reaches them. Speculative bytes are bounded by what
# reads asked for. A complete ELF file has its loader and libraries fetched at once.
fetch_window = 4194304
# Fetch the rest of every layer in the background, one 256 KiB request at a time
# over all layers, only once no read has waited for 2 s, at most background_rate
# bytes per second.
background_fetch = true
background_rate = 33554432
# Keep each layer's /dev/fuse descriptor in a small holder process
# (`strata fd-holder`, socket <root>/fd-holder.sock) so mounted layers survive a
# crash or restart of strata serve: reads wait for the restarted daemon instead
# of failing with "transport endpoint is not connected". The holder exits by
# itself once every layer it holds is unmounted, or when <root> is removed
# (docs/containerd.md: the fd holder's lifecycle).
fd_holder = true
"#;

/// The format of the daemon's log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `[overlayfs]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverlayConfig {
    /// Options added to every overlay mount.
    pub mount_options: Vec<String>,
    /// Report each snapshot's upper directory in a label.
    pub upperdir_label: bool,
}

impl OverlayConfig {
    /// The snapshotter's options.
    pub fn options(&self) -> OverlayOptions {
        OverlayOptions {
            mount_options: self.mount_options.clone(),
            upperdir_label: self.upperdir_label,
        }
    }
}

/// What converts a layer's directory into its EROFS image (`[erofs] builder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ErofsBuilderKind {
    /// `mkfs.erofs` (erofs-utils), as containerd runs it.
    #[serde(rename = "mkfs.erofs")]
    Mkfs,
    /// Strata's own writer (`strata_formats::erofs`).
    #[default]
    #[serde(rename = "strata")]
    Strata,
}

/// The `[erofs]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErofsConfig {
    /// Options added to every overlay mount (containerd's `ovl_mount_options`).
    pub mount_options: Vec<String>,
    /// What builds the layer images.
    pub builder: ErofsBuilderKind,
    /// Options added to `mkfs.erofs` when a layer is converted at Commit (containerd's
    /// differ `mkfs_options`).
    pub mkfs_options: Vec<String>,
}

impl ErofsConfig {
    /// The snapshotter's options.
    pub fn options(&self) -> ErofsOptions {
        let builder: std::sync::Arc<dyn LayerImageBuilder> = match self.builder {
            ErofsBuilderKind::Mkfs => {
                std::sync::Arc::new(MkfsErofs::new("mkfs.erofs", self.mkfs_options.clone()))
            }
            ErofsBuilderKind::Strata => std::sync::Arc::new(StrataErofsWriter),
        };
        ErofsOptions {
            mount_options: self.mount_options.clone(),
            builder,
        }
    }
}

/// The `[remote]` table: remote-snapshot providers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Provide layers whose blobs are in the root's content store.
    pub local_content: bool,
}

/// The `[stargz]` table: the lazy eStargz snapshotter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StargzConfig {
    /// Chunk cache bound, bytes; 0: no cache.
    pub cache_max_size: u64,
    /// FUSE threads per layer.
    pub fuse_threads: usize,
    /// FUSE passthrough for cached files.
    pub passthrough: bool,
    /// Keep FUSE descriptors in the fd holder across restarts.
    pub fd_holder: bool,
    /// Prefetch the prioritized files at mount.
    pub prefetch: bool,
    /// Compressed bytes per request of the prefetch and the background fetch.
    pub prefetch_request: u64,
    /// Most compressed bytes one miss fetches.
    pub fetch_window: u64,
    /// Fetch the rest of each layer in the background.
    pub background_fetch: bool,
    /// The background fetch's bytes per second per layer.
    pub background_rate: u64,
}

impl Default for StargzConfig {
    fn default() -> Self {
        Self {
            cache_max_size: 10 << 30,
            fuse_threads: 2,
            passthrough: false,
            fd_holder: true,
            prefetch: true,
            prefetch_request: 4 << 20,
            fetch_window: 4 << 20,
            background_fetch: true,
            background_rate: 32 << 20,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// State directory.
    pub root: PathBuf,
    /// The unix socket served.
    pub socket: PathBuf,
    /// Log filter.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Prometheus endpoint address; empty means off.
    pub metrics_address: String,
    /// Registry hosts directory.
    pub config_path: PathBuf,
    /// Request name → implementation, on top of the names that always resolve.
    pub snapshotters: BTreeMap<String, String>,
    /// Options of the overlayfs implementation.
    pub overlayfs: OverlayConfig,
    /// Options of the erofs implementation.
    pub erofs: ErofsConfig,
    /// Remote-snapshot providers.
    pub remote: RemoteConfig,
    /// The lazy eStargz snapshotter.
    pub stargz: StargzConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: PathBuf::from(DEFAULT_ROOT),
            socket: PathBuf::from(DEFAULT_SOCKET),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            metrics_address: String::new(),
            config_path: PathBuf::from(DEFAULT_HOSTS_DIR),
            snapshotters: BTreeMap::from([(DEFAULT_NAME.to_string(), "overlayfs".to_string())]),
            overlayfs: OverlayConfig::default(),
            erofs: ErofsConfig::default(),
            remote: RemoteConfig::default(),
            stargz: StargzConfig::default(),
        }
    }
}

/// The configuration could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type).
    #[error("config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key.
        message: String,
    },
    /// A value is out of range.
    #[error("config {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads the configuration from `path`, or from [`DEFAULT_CONFIG_PATH`] when `None`.
    /// A missing default file yields the defaults; a missing explicit one is an error.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the file cannot be read or is invalid.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Config::parse(&text, path)
    }

    /// Parses configuration text; `path` only names it in errors.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for invalid TOML or an unknown key, [`ConfigError::Invalid`]
    /// for a bad snapshotter mapping.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config
            .resolved_snapshotters()
            .map_err(|message| ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            })?;
        Ok(config)
    }

    /// Every request name served and the implementation answering it: the configured
    /// names plus `overlayfs` and `native`, which always name themselves.
    ///
    /// # Errors
    ///
    /// A message when a name is empty, an implementation is unknown, or `overlayfs` /
    /// `native` is mapped to something else.
    pub fn resolved_snapshotters(&self) -> Result<BTreeMap<String, String>, String> {
        let mut names: BTreeMap<String, String> = SNAPSHOTTERS
            .iter()
            .map(|s| (s.to_string(), s.to_string()))
            .collect();
        for (name, implementation) in &self.snapshotters {
            if name.is_empty() {
                return Err("snapshotters: empty request name".to_string());
            }
            if !SNAPSHOTTERS.contains(&implementation.as_str()) {
                return Err(format!(
                    "snapshotters.{name}: unknown implementation {implementation:?} (available: {})",
                    SNAPSHOTTERS.join(", ")
                ));
            }
            if SNAPSHOTTERS.contains(&name.as_str()) && name != implementation {
                return Err(format!(
                    "snapshotters.{name}: {name:?} always names itself, not {implementation:?}"
                ));
            }
            names.insert(name.clone(), implementation.clone());
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn default_text_parses_to_defaults() {
        assert_eq!(parse(DEFAULT_CONFIG).unwrap(), Config::default());
    }

    #[test]
    fn empty_text_is_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("sockett = \"/x\"\n").unwrap_err().to_string();
        assert!(err.contains("sockett"), "{err}");
        let err = parse("[overlayfs]\nmount_option = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mount_option"), "{err}");
    }

    #[test]
    fn names_resolve_to_implementations() {
        let config = parse("[snapshotters]\nstrata = \"native\"\nfast = \"overlayfs\"\n").unwrap();
        let names = config.resolved_snapshotters().unwrap();
        assert_eq!(names["strata"], "native");
        assert_eq!(names["fast"], "overlayfs");
        assert_eq!(names["overlayfs"], "overlayfs");
        assert_eq!(names["native"], "native");
    }

    #[test]
    fn bad_mappings_are_rejected() {
        let err = parse("[snapshotters]\nx = \"zfs\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("snapshotters.x") && err.contains("zfs"),
            "{err}"
        );
        let err = parse("[snapshotters]\noverlayfs = \"native\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("always names itself"), "{err}");
    }

    #[test]
    fn values_are_read() {
        let config = parse(
            "root = \"/r\"\nsocket = \"/s.sock\"\nlog_format = \"json\"\nmetrics_address = \"127.0.0.1:9\"\n\
             config_path = \"/h\"\n[overlayfs]\nmount_options = [\"volatile\"]\nupperdir_label = true\n\
             [erofs]\nmount_options = [\"volatile\"]\nmkfs_options = [\"-zlz4\"]\nbuilder = \"strata\"\n\
             [remote]\nlocal_content = true\n",
        )
        .unwrap();
        assert_eq!(config.root, Path::new("/r"));
        assert_eq!(config.socket, Path::new("/s.sock"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.metrics_address, "127.0.0.1:9");
        assert_eq!(config.config_path, Path::new("/h"));
        assert_eq!(config.overlayfs.options().mount_options, ["volatile"]);
        assert!(config.overlayfs.upperdir_label);
        assert_eq!(config.erofs.options().mount_options, ["volatile"]);
        assert_eq!(config.erofs.mkfs_options, ["-zlz4"]);
        assert_eq!(config.erofs.builder, ErofsBuilderKind::Strata);
        let err = parse("[erofs]\nbuilder = \"mksquashfs\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mksquashfs"), "{err}");
        assert!(config.remote.local_content);
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(Some(&dir.path().join("none.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }
}
