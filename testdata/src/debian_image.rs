//! A real multi-layer image built at test time from the files of Debian
//! packages installed on this machine ([`build_debian_image`]), with the
//! layer features a snapshotter or applier must get right, and the list of
//! effects an unpacked tree must show ([`Expectation`]).
//!
//! Nothing is downloaded and nothing is cached: the files are read from the
//! host filesystem (`dpkg-query -L` lists them), so the image is the same on
//! every run on a given host. Every entry gets its layer's fixed mtime;
//! owners and modes are the host's unless a step sets them.
//!
//! The four gzip layers (about 85 MB uncompressed on Debian 12):
//! 1. **base** — `base-files`, `libc6`, `dash`, `bash`, `coreutils`, `sed`,
//!    `grep`, `findutils`, `login`, `passwd`, `util-linux`, `mount`,
//!    `tzdata`: the merged-`/usr` symlinks (`bin` → `usr/bin`…), setuid
//!    `su`/`passwd`/`newgrp`/`mount`, setgid `chage` (group `shadow`),
//!    `/etc/passwd` and `/etc/group`, `/tmp` (1777), `/var/mail` (2775,
//!    group `mail`), a home owned by 1000:1000, `/dev/null` and `/dev/zero`,
//!    and `user.*` xattrs on `/usr/bin/bash`.
//! 2. **runtime** — `perl-base`, `libssl3`, `python3.11-minimal`,
//!    `libpython3.11-minimal`, `libpython3.11-stdlib`, `zlib1g`, `libexpat1`
//!    (python3.11 runs in a container), `libcap2-bin`: perl's own hardlinks, an extra
//!    hardlink to `libssl.so.3`, `security.capability` (cap_net_bind_service,
//!    effective) on `python3.11`, a binary `user.*` xattr, an xattr on a
//!    directory, files owned by 999:999 and 65534:65534, a fifo.
//! 3. **changes** — whiteouts of a file (`usr/bin/pinky`), a symlink
//!    (`usr/bin/rbash`) and a whole directory (`usr/share/zoneinfo/Antarctica`);
//!    `usr/lib/python3.11/json` made opaque with new content; the file
//!    `etc/issue.net` replaced by a directory, the directory
//!    `usr/share/zoneinfo/Arctic` by a file, the symlink `etc/os-release` by a
//!    file; `etc/issue` rewritten; `newgrp` losing its setuid bit; new files
//!    under `opt/strata`.
//! 4. **fixups** — `usr/bin/pinky` re-created after its whiteout, a file of
//!    layer 3 deleted, `usr/local/lib` (holding one of the libssl hardlinks)
//!    deleted, `etc/default` made opaque and left empty.
//!
//! [`reference_unpack`] and [`gnu_tar_unpack`] unpack the result with tools
//! that are not Strata, for comparing trees with [`FileTree`].

mod encode;
mod expectation;
mod host;
mod reference;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::file_tree::{FileTree, Kind};
use crate::image::BuiltImage;
use crate::sha256_hex;

pub use expectation::Expectation;
pub use reference::{gnu_tar_unpack, reference_unpack};

/// The `org.opencontainers.image.ref.name` the image is stored under in its layout.
pub const REF_NAME: &str = "bookworm-fixture";

/// Errors of the Debian image fixture and its reference unpackers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a host file or writing the layout failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file the fixture builds on is not on this host.
    #[error("host has no {path} (from Debian package {package}); install it with apt-get")]
    MissingHostFile {
        /// Path on the host.
        path: String,
        /// The package that ships it.
        package: &'static str,
    },
    /// None of a layer's packages is installed.
    #[error("none of the Debian packages {0:?} is installed")]
    NoPackages(Vec<&'static str>),
    /// An external command could not run or failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status, or why it could not start.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// A layout or layer being unpacked is not what an OCI image should be.
    #[error("{}: {reason}", path.display())]
    Layout {
        /// The layout file or blob involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Building an OCI structure or JSON document failed.
    #[error("building the image failed")]
    Fixture(#[from] crate::Error),
}

/// Result alias of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The built fixture: its layout on disk, the image (blobs in memory, ready
/// for [`RegistryServer::push_image`](crate::RegistryServer::push_image)),
/// and what an unpacked tree must show.
#[derive(Debug, Clone)]
pub struct DebianImage {
    /// The OCI image-layout directory.
    pub layout: PathBuf,
    /// Its `org.opencontainers.image.ref.name` ([`REF_NAME`]).
    pub ref_name: String,
    /// Layers (tar and gzip), config and manifest.
    pub image: BuiltImage,
    /// Effects of the layers an unpacked tree must show.
    pub expectations: Vec<Expectation>,
}

impl DebianImage {
    /// `sha256:<hex>` of the manifest.
    pub fn manifest_digest(&self) -> &str {
        &self.image.manifest.digest
    }

    /// Checks every expectation against `tree`; returns the failures
    /// (empty when the tree shows them all).
    pub fn check(&self, tree: &FileTree) -> Vec<String> {
        self.expectations
            .iter()
            .filter_map(|expectation| expectation.check(tree))
            .collect()
    }
}

/// What one layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeKind {
    Dir,
    File(Content),
    Symlink(String),
    Hardlink(String),
    CharDevice { major: u32, minor: u32 },
    Fifo,
    Whiteout,
    Opaque,
}

/// A regular file's bytes: read from the host when the layer is encoded, or given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// One layer entry with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: NodeKind,
    mode: u32,
    uid: u64,
    gid: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Node {
    fn new(kind: NodeKind, mode: u32) -> Node {
        Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            xattrs: Vec::new(),
        }
    }

    fn owner(mut self, uid: u64, gid: u64) -> Node {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// One layer being planned: entries by normalized path (no leading `/`).
#[derive(Debug, Clone)]
struct LayerPlan {
    created_by: String,
    mtime: u64,
    nodes: BTreeMap<String, Node>,
}

impl LayerPlan {
    fn new(created_by: &str, mtime: u64) -> LayerPlan {
        LayerPlan {
            created_by: created_by.to_owned(),
            mtime,
            nodes: BTreeMap::new(),
        }
    }

    /// Adds `node` at `path` and any missing parent directories (with the
    /// host's metadata where the host has that directory, so re-declaring a
    /// parent in an upper layer does not change it).
    fn put(&mut self, path: &str, node: Node) {
        self.add_parents(path);
        self.nodes.insert(path.to_owned(), node);
    }

    fn add_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(slash) = path[end..].find('/') {
            end += slash;
            let parent = &path[..end];
            if !self.nodes.contains_key(parent) {
                self.nodes.insert(parent.to_owned(), host::dir_node(parent));
            }
            end += 1;
        }
    }

    fn file(&mut self, path: &str, mode: u32, bytes: impl Into<Vec<u8>>) {
        self.put(
            path,
            Node::new(NodeKind::File(Content::Bytes(bytes.into())), mode),
        );
    }

    fn whiteout(&mut self, path: &str) {
        self.put(path, Node::new(NodeKind::Whiteout, 0));
    }

    /// Marks `dir` opaque; its new content is added separately.
    fn opaque(&mut self, dir: &str) {
        self.put(dir, host::dir_node(dir));
        self.put(
            &format!("{dir}/{}", crate::layer::OPAQUE_MARKER),
            Node::new(NodeKind::Opaque, 0o644),
        );
    }

    fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        self.nodes.get_mut(path)
    }
}

/// Fixed mtime of the base layer's entries; each later layer is a day later.
const BASE_MTIME: u64 = crate::layer::DEFAULT_MTIME;
const DAY: u64 = 86_400;

/// `security.capability` granting cap_net_bind_service (bit 10), effective:
/// `vfs_cap_data` revision 2 (magic 0x02000000 | effective flag), then
/// permitted/inheritable for the low and high 32 capability bits.
pub const NET_BIND_SERVICE_CAPABILITY: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

/// Builds the fixture into the OCI image-layout directory `layout_dir`
/// (created if missing) under [`REF_NAME`], and returns it with its
/// expectations. Takes a few seconds: the layers are gzipped in parallel.
pub fn build_debian_image(layout_dir: &Path) -> Result<DebianImage> {
    let mut expect = Vec::new();
    let layers = vec![
        base_layer(&mut expect)?,
        runtime_layer(&mut expect)?,
        changes_layer(&mut expect)?,
        fixups_layer(&mut expect)?,
    ];
    let image = encode::build_image(&layers)?;
    encode::write_layout(layout_dir, REF_NAME, &image)?;
    Ok(DebianImage {
        layout: layout_dir.to_path_buf(),
        ref_name: REF_NAME.to_owned(),
        image,
        expectations: expect,
    })
}

fn owned(text: &str) -> String {
    text.to_owned()
}

fn base_layer(expect: &mut Vec<Expectation>) -> Result<LayerPlan> {
    let mut layer = LayerPlan::new("ADD debian-base (host packages) /", BASE_MTIME);
    host::add_packages(
        &mut layer,
        &[
            "base-files",
            "libc6",
            "dash",
            "bash",
            "coreutils",
            "sed",
            "grep",
            "findutils",
            "login",
            "passwd",
            "util-linux",
            "mount",
            "tzdata",
        ],
    )?;
    for (path, package) in [
        ("usr/bin/su", "util-linux"),
        ("usr/bin/passwd", "passwd"),
        ("usr/bin/chage", "passwd"),
        ("usr/bin/bash", "bash"),
        ("usr/bin/pinky", "coreutils"),
        ("usr/bin/rbash", "bash"),
        ("etc/issue", "base-files"),
        ("etc/issue.net", "base-files"),
        ("etc/os-release", "base-files"),
        ("usr/share/zoneinfo/Antarctica", "tzdata"),
        ("usr/share/zoneinfo/Arctic", "tzdata"),
        ("etc/default/useradd", "passwd"),
    ] {
        host::require(&layer, path, package)?;
    }
    // newgrp is setuid here too, but the changes layer drops that bit.
    for path in ["usr/bin/su", "usr/bin/passwd", "usr/bin/mount"] {
        if layer.nodes.contains_key(path) {
            expect.push(Expectation::Mode {
                path: owned(path),
                mode: 0o4755,
            });
        }
    }
    expect.push(Expectation::Mode {
        path: owned("usr/bin/chage"),
        mode: 0o2755,
    });
    expect.push(Expectation::Owner {
        path: owned("usr/bin/chage"),
        uid: 0,
        gid: 42,
    });
    expect.push(Expectation::Kind {
        path: owned("bin"),
        kind: Kind::Symlink,
    });

    layer.file(
        "etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/bash\nmail:x:8:8:mail:/var/mail:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
         app:x:999:999::/var/lib/strata-app:/usr/sbin/nologin\ndebian:x:1000:1000::/home/debian:/bin/bash\n",
    );
    layer.file(
        "etc/group",
        0o644,
        "root:x:0:\ntty:x:5:\nmail:x:8:\nshadow:x:42:\napp:x:999:\ndebian:x:1000:\nnogroup:x:65534:\n",
    );
    layer.put("tmp", Node::new(NodeKind::Dir, 0o1777));
    layer.put("root", Node::new(NodeKind::Dir, 0o700));
    layer.put("var/mail", Node::new(NodeKind::Dir, 0o2775).owner(0, 8));
    layer.put(
        "home/debian",
        Node::new(NodeKind::Dir, 0o750).owner(1000, 1000),
    );
    let profile = b"# ~/.profile of the fixture's user\nexport PATH=\"$HOME/bin:$PATH\"\n";
    layer.put(
        "home/debian/.profile",
        Node::new(NodeKind::File(Content::Bytes(profile.to_vec())), 0o644).owner(1000, 1000),
    );
    expect.push(Expectation::Mode {
        path: owned("tmp"),
        mode: 0o1777,
    });
    expect.push(Expectation::Mode {
        path: owned("var/mail"),
        mode: 0o2775,
    });
    expect.push(Expectation::Owner {
        path: owned("var/mail"),
        uid: 0,
        gid: 8,
    });
    expect.push(Expectation::Owner {
        path: owned("home/debian"),
        uid: 1000,
        gid: 1000,
    });
    expect.push(Expectation::Owner {
        path: owned("home/debian/.profile"),
        uid: 1000,
        gid: 1000,
    });

    layer.put("dev", Node::new(NodeKind::Dir, 0o755));
    for (name, minor) in [("null", 3), ("zero", 5)] {
        let path = format!("dev/{name}");
        layer.put(
            &path,
            Node::new(NodeKind::CharDevice { major: 1, minor }, 0o666),
        );
        expect.push(Expectation::CharDevice {
            path: path.clone(),
            major: 1,
            minor,
        });
        expect.push(Expectation::Mode { path, mode: 0o666 });
    }

    let origin = b"debian:bash".to_vec();
    if let Some(bash) = layer.node_mut("usr/bin/bash") {
        bash.xattrs
            .push((owned("user.strata.origin"), origin.clone()));
    }
    expect.push(Expectation::Xattr {
        path: owned("usr/bin/bash"),
        name: owned("user.strata.origin"),
        value: origin,
    });
    Ok(layer)
}

fn runtime_layer(expect: &mut Vec<Expectation>) -> Result<LayerPlan> {
    let mut layer = LayerPlan::new(
        "RUN apt-get install perl-base python3.11-minimal libssl3",
        BASE_MTIME + DAY,
    );
    host::add_packages(
        &mut layer,
        &[
            "perl-base",
            "libssl3",
            "python3.11-minimal",
            "libpython3.11-minimal",
            "libpython3.11-stdlib",
            // python3.11's own libraries, so that a container can run it.
            "zlib1g",
            "libexpat1",
            "libcap2-bin",
        ],
    )?;
    host::require(&layer, "usr/bin/python3.11", "python3.11-minimal")?;
    host::require(&layer, "usr/lib/python3.11/json", "libpython3.11-stdlib")?;
    host::require(&layer, "usr/lib/python3.11/email", "libpython3.11-minimal")?;
    host::require(&layer, "usr/bin/perl", "perl-base")?;

    // Hardlinks perl-base ships (perl = perl5.36.0), as found on the host.
    let perl_links: Vec<String> = layer
        .nodes
        .iter()
        .filter(|(_, node)| node.kind == NodeKind::Hardlink(owned("usr/bin/perl")))
        .map(|(path, _)| path.clone())
        .collect();
    if !perl_links.is_empty() {
        let mut group = vec![owned("usr/bin/perl")];
        group.extend(perl_links);
        expect.push(Expectation::Hardlinked(group));
    }
    // A hardlink of our own, in another directory; layer 4 deletes it again.
    let libssl = layer
        .nodes
        .iter()
        .find(|(path, node)| {
            path.ends_with("/libssl.so.3") && matches!(node.kind, NodeKind::File(_))
        })
        .map(|(path, _)| path.clone())
        .ok_or(Error::MissingHostFile {
            path: owned("/usr/lib/*/libssl.so.3"),
            package: "libssl3",
        })?;
    layer.put(
        "usr/local/lib/libssl.so.3",
        Node::new(NodeKind::Hardlink(libssl.clone()), 0o644),
    );
    expect.push(Expectation::NotHardlinked(libssl));

    if let Some(python) = layer.node_mut("usr/bin/python3.11") {
        python.xattrs.push((
            owned("security.capability"),
            NET_BIND_SERVICE_CAPABILITY.to_vec(),
        ));
        python.xattrs.push((
            owned("user.strata.blob"),
            vec![0, 1, 0x7f, 0x80, 0xfe, 0xff],
        ));
    }
    expect.push(Expectation::Xattr {
        path: owned("usr/bin/python3.11"),
        name: owned("security.capability"),
        value: NET_BIND_SERVICE_CAPABILITY.to_vec(),
    });
    expect.push(Expectation::Xattr {
        path: owned("usr/bin/python3.11"),
        name: owned("user.strata.blob"),
        value: vec![0, 1, 0x7f, 0x80, 0xfe, 0xff],
    });
    if let Some(email) = layer.node_mut("usr/lib/python3.11/email") {
        email
            .xattrs
            .push((owned("user.strata.dir"), b"email".to_vec()));
    }
    expect.push(Expectation::Xattr {
        path: owned("usr/lib/python3.11/email"),
        name: owned("user.strata.dir"),
        value: b"email".to_vec(),
    });

    layer.put(
        "var/lib/strata-app",
        Node::new(NodeKind::Dir, 0o750).owner(999, 999),
    );
    let state: Vec<u8> = crate::random_bytes(64 * 1024, 0x5747a);
    let state_sha = sha256_hex(&state);
    layer.put(
        "var/lib/strata-app/state.db",
        Node::new(NodeKind::File(Content::Bytes(state)), 0o640).owner(999, 999),
    );
    layer.put(
        "var/lib/strata-app/nobody.lock",
        Node::new(NodeKind::File(Content::Bytes(Vec::new())), 0o600).owner(65534, 65534),
    );
    expect.push(Expectation::Owner {
        path: owned("var/lib/strata-app"),
        uid: 999,
        gid: 999,
    });
    expect.push(Expectation::Content {
        path: owned("var/lib/strata-app/state.db"),
        sha256: state_sha,
    });
    expect.push(Expectation::Owner {
        path: owned("var/lib/strata-app/state.db"),
        uid: 999,
        gid: 999,
    });
    expect.push(Expectation::Owner {
        path: owned("var/lib/strata-app/nobody.lock"),
        uid: 65534,
        gid: 65534,
    });

    layer.put("run/strata", Node::new(NodeKind::Dir, 0o755));
    layer.put(
        "run/strata/control",
        Node::new(NodeKind::Fifo, 0o620).owner(0, 5),
    );
    expect.push(Expectation::Kind {
        path: owned("run/strata/control"),
        kind: Kind::Fifo,
    });
    expect.push(Expectation::Mode {
        path: owned("run/strata/control"),
        mode: 0o620,
    });
    expect.push(Expectation::Owner {
        path: owned("run/strata/control"),
        uid: 0,
        gid: 5,
    });
    Ok(layer)
}

fn changes_layer(expect: &mut Vec<Expectation>) -> Result<LayerPlan> {
    let mut layer = LayerPlan::new(
        "RUN customize (deletions, opaque dir, replacements)",
        BASE_MTIME + 2 * DAY,
    );
    for path in ["usr/bin/rbash", "usr/share/zoneinfo/Antarctica"] {
        layer.whiteout(path);
        expect.push(Expectation::Absent(owned(path)));
    }
    // Deleted here, re-created by the fixups layer.
    layer.whiteout("usr/bin/pinky");

    layer.opaque("usr/lib/python3.11/json");
    layer.file(
        "usr/lib/python3.11/json/__init__.py",
        0o644,
        "\"\"\"Replaced by the fixture's opaque layer.\"\"\"\n",
    );
    layer.put(
        "usr/lib/python3.11/json/vendored",
        Node::new(NodeKind::Dir, 0o755),
    );
    layer.file(
        "usr/lib/python3.11/json/vendored/README",
        0o444,
        "new content under an opaque directory\n",
    );
    expect.push(Expectation::Children {
        dir: owned("usr/lib/python3.11/json"),
        names: vec![owned("__init__.py"), owned("vendored")],
    });
    expect.push(Expectation::Absent(owned(
        "usr/lib/python3.11/json/decoder.py",
    )));

    layer.put("etc/issue.net", Node::new(NodeKind::Dir, 0o755));
    layer.file(
        "etc/issue.net/README",
        0o644,
        "issue.net became a directory\n",
    );
    expect.push(Expectation::Kind {
        path: owned("etc/issue.net"),
        kind: Kind::Dir,
    });
    expect.push(Expectation::Kind {
        path: owned("etc/issue.net/README"),
        kind: Kind::File,
    });

    let arctic = "The Arctic zones were replaced by this file.\n";
    layer.file("usr/share/zoneinfo/Arctic", 0o644, arctic);
    expect.push(Expectation::Content {
        path: owned("usr/share/zoneinfo/Arctic"),
        sha256: sha256_hex(arctic.as_bytes()),
    });
    expect.push(Expectation::Absent(owned(
        "usr/share/zoneinfo/Arctic/Longyearbyen",
    )));

    let os_release = "PRETTY_NAME=\"Strata fixture (Debian 12 files)\"\nID=debian\n";
    layer.file("etc/os-release", 0o644, os_release);
    expect.push(Expectation::Content {
        path: owned("etc/os-release"),
        sha256: sha256_hex(os_release.as_bytes()),
    });

    let issue = "Strata fixture \\n \\l\n\n";
    layer.file("etc/issue", 0o644, issue);
    expect.push(Expectation::Content {
        path: owned("etc/issue"),
        sha256: sha256_hex(issue.as_bytes()),
    });

    // Same bytes as below, setuid bit dropped.
    if host::add_host_path(&mut layer, "usr/bin/newgrp")? {
        if let Some(newgrp) = layer.node_mut("usr/bin/newgrp") {
            newgrp.mode = 0o755;
        }
        expect.push(Expectation::Mode {
            path: owned("usr/bin/newgrp"),
            mode: 0o755,
        });
    }

    let app = crate::random_bytes(2 << 20, 0xa99);
    expect.push(Expectation::Content {
        path: owned("opt/strata/app.bin"),
        sha256: sha256_hex(&app),
    });
    layer.file("opt/strata/app.bin", 0o755, app);
    layer.file(
        "opt/strata/build.log",
        0o644,
        "build output, deleted by the next layer\n",
    );
    Ok(layer)
}

fn fixups_layer(expect: &mut Vec<Expectation>) -> Result<LayerPlan> {
    let mut layer = LayerPlan::new(
        "RUN fixups (re-create, delete, empty opaque dir)",
        BASE_MTIME + 3 * DAY,
    );
    let pinky = "#!/bin/sh\necho 'pinky was deleted and re-created'\n";
    layer.file("usr/bin/pinky", 0o755, pinky);
    expect.push(Expectation::Content {
        path: owned("usr/bin/pinky"),
        sha256: sha256_hex(pinky.as_bytes()),
    });

    layer.whiteout("opt/strata/build.log");
    expect.push(Expectation::Absent(owned("opt/strata/build.log")));
    expect.push(Expectation::Children {
        dir: owned("opt/strata"),
        names: vec![owned("app.bin")],
    });

    layer.whiteout("usr/local/lib");
    expect.push(Expectation::Absent(owned("usr/local/lib")));

    layer.opaque("etc/default");
    expect.push(Expectation::Children {
        dir: owned("etc/default"),
        names: Vec::new(),
    });
    expect.push(Expectation::Absent(owned("etc/default/useradd")));
    Ok(layer)
}
