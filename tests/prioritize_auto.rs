//! `strata convert --prioritize-auto`: the prioritized files are derived from the image's
//! config and layers (command through `PATH`, `#!` interpreter, ELF loader, `ld.so.conf`,
//! `DT_NEEDED` closure, whiteouts applied), and each converted layer puts the ones it holds
//! before its `.prefetch.landmark`. The images are built from this machine's real
//! binaries and libraries, at their real paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata::image::rootfs::LayeredRootFs;
use strata_formats::FileReadAt;
use strata_formats::ReadAt;
use strata_formats::estargz::{EstargzReader, PREFETCH_LANDMARK};
use strata_formats::prefetch::{FileKind, RootFs};
use strata_testdata::{ImageSpec, LayerSpec, Platform};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
const LD_CONF: &[u8] =
    b"# Multiarch support\n/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n";

fn strata(root: &Path, args: &[&str]) -> Output {
    Command::new(STRATA)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> (String, String) {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "strata failed: {err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

fn blob(root: &Path, digest: &str) -> PathBuf {
    root.join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// What `ldd` says `exe` loads: (library paths, interpreter path).
fn ldd(exe: &str) -> (Vec<String>, String) {
    let out = Command::new("ldd").arg(exe).output().unwrap();
    assert!(out.status.success(), "ldd {exe}");
    let (mut libs, mut interp) = (Vec::new(), String::new());
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let line = line.trim();
        if let Some((_, rest)) = line.split_once(" => ") {
            libs.push(rest.split_whitespace().next().unwrap().to_owned());
        } else if line.starts_with('/') {
            interp = line.split_whitespace().next().unwrap().to_owned();
        }
    }
    (libs, interp)
}

/// The real file behind a host path, relative, for a layer entry.
fn real(path: &str) -> String {
    std::fs::canonicalize(path)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_start_matches('/')
        .to_owned()
}

/// `path` with `.` and `..` applied lexically.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Adds the host's file at `path` to `layer` at its real path, plus every symlink on the
/// way at its real location (`/bin -> usr/bin`, `/lib64/ld-linux-x86-64.so.2 -> …`) and
/// the links on their targets' ways, so paths resolve in the image as on the host.
fn add_host_file(mut layer: LayerSpec, path: &Path, added: &mut Vec<String>) -> LayerSpec {
    let mut cur = PathBuf::from("/");
    for comp in path.components().skip(1) {
        cur.push(comp);
        if !std::fs::symlink_metadata(&cur)
            .unwrap()
            .file_type()
            .is_symlink()
        {
            continue;
        }
        let at = std::fs::canonicalize(cur.parent().unwrap())
            .unwrap()
            .join(cur.file_name().unwrap());
        let key = at.to_str().unwrap().to_owned();
        if !added.contains(&key) {
            added.push(key.clone());
            let target = std::fs::read_link(&cur).unwrap();
            layer = layer.symlink(key.trim_start_matches('/'), target.to_str().unwrap());
            layer = add_host_file(layer, &lexical(&at.parent().unwrap().join(&target)), added);
        }
    }
    let rel = real(path.to_str().unwrap());
    if Path::new("/").join(&rel).is_file() && !added.contains(&rel) {
        let bytes = std::fs::read(Path::new("/").join(&rel)).unwrap();
        layer = layer.file(rel.clone(), 0o755, bytes);
        added.push(rel);
    }
    layer
}

fn convert_auto(
    dir: &Path,
    name: &str,
    image: ImageSpec,
) -> (PathBuf, Vec<String>, serde_json::Value) {
    let root = dir.join("root");
    let layout = dir.join(format!("layout-{name}"));
    strata_testdata::write_oci_layout(&layout, &[(name, image.into())]).unwrap();
    ok(strata(
        &root,
        &["image", "import", layout.to_str().unwrap()],
    ));
    let dst = format!("{name}-esgz");
    let (stdout, stderr) = ok(strata(&root, &["convert", "--prioritize-auto", name, &dst]));
    eprintln!("{stderr}");
    let list: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(str::to_owned)
        .collect();
    let (checked, _) = ok(strata(&root, &["convert", "--check", &dst]));
    assert!(checked.lines().all(|l| l.starts_with("ok ")), "{checked}");
    let manifest =
        serde_json::from_slice(&std::fs::read(blob(&root, stdout.trim())).unwrap()).unwrap();
    (root, list, manifest)
}

/// Per converted layer: its TOC entry names in blob order, and for each regular file its
/// first chunk's offset; with the landmark's offset.
struct LayerOrder {
    names: Vec<String>,
    offsets: std::collections::HashMap<String, u64>,
    landmark: Option<u64>,
}

fn layers(root: &Path, manifest: &serde_json::Value) -> Vec<LayerOrder> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let file = std::fs::File::open(blob(root, l["digest"].as_str().unwrap())).unwrap();
            let reader = EstargzReader::open(FileReadAt::new(file).unwrap(), None).unwrap();
            let names: Vec<String> = reader
                .toc()
                .entries
                .iter()
                .map(|e| e.name.trim_start_matches("./").to_owned())
                .collect();
            let offsets = names
                .iter()
                .filter_map(|n| Some((n.clone(), reader.index().get(n)?.chunks.first()?.offset)))
                .collect();
            LayerOrder {
                names,
                offsets,
                landmark: reader.index().prefetch_landmark_offset(),
            }
        })
        .collect()
}

/// Every prioritized path a layer holds comes before its landmark, in the TOC and (regular
/// files) in the blob; returns the paths found.
fn assert_prioritized_first(layer: &LayerOrder, list: &[String]) -> Vec<String> {
    let landmark_pos = layer
        .names
        .iter()
        .position(|n| n == PREFETCH_LANDMARK)
        .expect("a .prefetch.landmark");
    let landmark = layer.landmark.expect("landmark offset");
    let mut found = Vec::new();
    for p in list {
        let name = p.trim_start_matches('/');
        let Some(pos) = layer.names.iter().position(|n| n == name) else {
            continue;
        };
        assert!(pos < landmark_pos, "{p} is after the landmark in the TOC");
        if let Some(&off) = layer.offsets.get(name) {
            assert!(
                off < landmark,
                "{p} at offset {off}, landmark at {landmark}"
            );
        }
        found.push(p.clone());
    }
    found
}

#[test]
fn ls_binary_loader_and_libraries_come_first() {
    let exe = ["/usr/bin/python3", "/bin/ls"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap();
    let (libs, interp) = ldd(exe);
    assert!(!libs.is_empty() && !interp.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let mut added = Vec::new();
    // Lower layer: loader, libraries, ld.so.conf, and bulk that sorts first.
    let mut base = LayerSpec::new()
        .random_file("aaa/bulk.bin", 0o644, 1, 300_000)
        .file(
            "etc/ld.so.conf",
            0o644,
            "include /etc/ld.so.conf.d/*.conf\n",
        )
        .file("etc/ld.so.conf.d/x86_64-linux-gnu.conf", 0o644, LD_CONF)
        .random_file("etc/motd", 0o644, 2, 1000);
    base = add_host_file(base, Path::new(&interp), &mut added);
    for lib in &libs {
        base = add_host_file(base, Path::new(lib), &mut added);
    }
    // Upper layer: the command, after more bulk.
    let mut app = LayerSpec::new().random_file("aaa/more.bin", 0o644, 3, 200_000);
    app = add_host_file(app, Path::new(exe), &mut added);
    let image = ImageSpec::new(Platform::linux_amd64())
        .layer(base)
        .layer(app)
        .entrypoint([exe]);
    let (root, list, manifest) = convert_auto(dir.path(), "host/ls:1", image);

    let real_exe = format!("/{}", real(exe));
    let real_interp = format!("/{}", real(&interp));
    // The interpreter's own entry, as the loader names it, once its directory is resolved.
    let interp_link = {
        let p = Path::new(&interp);
        std::fs::canonicalize(p.parent().unwrap())
            .unwrap()
            .join(p.file_name().unwrap())
            .to_str()
            .unwrap()
            .to_owned()
    };
    let pos = |p: &str| {
        list.iter()
            .position(|x| x == p)
            .unwrap_or_else(|| panic!("{p} not in {list:?}"))
    };
    assert!(
        pos(&real_exe) < pos(&interp_link) && pos(&interp_link) <= pos(&real_interp),
        "{list:?}"
    );
    for p in ["/etc/ld.so.conf", "/etc/ld.so.conf.d/x86_64-linux-gnu.conf"] {
        assert!(pos(&real_interp) < pos(p), "{list:?}");
    }
    for lib in &libs {
        assert!(
            pos(&format!("/{}", real(lib))) > pos(&real_interp),
            "{list:?}"
        );
    }
    assert!(
        !list.iter().any(|p| p.contains("aaa") || p == "/etc/motd"),
        "{list:?}"
    );

    let layers = layers(&root, &manifest);
    assert_eq!(layers.len(), 2);
    let lower = assert_prioritized_first(&layers[0], &list);
    let upper = assert_prioritized_first(&layers[1], &list);
    assert!(
        lower.contains(&real_interp) && lower.contains(&"/etc/ld.so.conf".to_owned()),
        "{lower:?}"
    );
    for lib in &libs {
        assert!(
            lower.contains(&format!("/{}", real(lib))),
            "{lib} not first in the lower layer: {lower:?}"
        );
    }
    assert!(upper.contains(&real_exe), "{upper:?}");
}

#[test]
fn script_interpreter_is_followed_and_whiteouts_apply() {
    let sh = "/bin/sh";
    let (libs, interp) = ldd(sh);
    let libc = libs
        .iter()
        .find(|l| l.ends_with("/libc.so.6"))
        .expect("sh links libc")
        .clone();
    let dir = tempfile::tempdir().unwrap();
    let mut added = Vec::new();
    // A libc copy earlier in the search order, deleted again by the upper layer.
    let shadow = "usr/local/lib/x86_64-linux-gnu/libc.so.6";
    let mut base = LayerSpec::new()
        .file(
            "etc/ld.so.conf",
            0o644,
            "include /etc/ld.so.conf.d/*.conf\n",
        )
        .file("etc/ld.so.conf.d/x86_64-linux-gnu.conf", 0o644, LD_CONF)
        .file(shadow, 0o755, std::fs::read(&libc).unwrap());
    base = add_host_file(base, Path::new(&interp), &mut added);
    for lib in &libs {
        base = add_host_file(base, Path::new(lib), &mut added);
    }
    base = add_host_file(base, Path::new(sh), &mut added);
    let app =
        LayerSpec::new()
            .whiteout(shadow)
            .file("app/start.sh", 0o755, "#!/bin/sh\necho hello\n");
    let image = ImageSpec::new(Platform::linux_amd64())
        .layer(base)
        .layer(app)
        .entrypoint(["/app/start.sh"])
        .env("PATH=/usr/local/bin:/usr/bin:/bin");
    let (root, list, manifest) = convert_auto(dir.path(), "host/script:1", image);

    assert_eq!(
        list.first().map(String::as_str),
        Some("/app/start.sh"),
        "{list:?}"
    );
    let real_sh = format!("/{}", real(sh));
    let real_libc = format!("/{}", real(&libc));
    for p in [&real_sh, &format!("/{}", real(&interp)), &real_libc] {
        assert!(list.contains(p), "{p} not in {list:?}");
    }
    assert!(
        !list.iter().any(|p| p.starts_with("/usr/local")),
        "whited-out libc listed: {list:?}"
    );

    let layers = layers(&root, &manifest);
    let lower = assert_prioritized_first(&layers[0], &list);
    assert!(
        lower.contains(&real_sh) && lower.contains(&real_libc),
        "{lower:?}"
    );
    let upper = assert_prioritized_first(&layers[1], &list);
    assert_eq!(upper, ["/app/start.sh"]);
    // An explicit list and --prioritize-auto exclude each other.
    let both = strata(
        &root,
        &[
            "convert",
            "--prioritize-auto",
            "--prioritize",
            "/x",
            "host/script:1",
            "y",
        ],
    );
    assert!(
        !both.status.success()
            && String::from_utf8_lossy(&both.stderr).contains("cannot be used with")
    );
}

enum E<'a> {
    F(&'a str, &'a [u8]),
    D(&'a str),
    L(&'a str, &'a str),
    H(&'a str, &'a str),
}

fn raw_tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        let (name, data): (&str, &[u8]) = match e {
            E::F(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                (n, d)
            }
            E::D(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                (n, &[])
            }
            E::L(n, t) | E::H(n, t) => {
                let ty = if matches!(e, E::L(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                h.set_entry_type(ty);
                h.set_link_name(t).unwrap();
                (n, &[])
            }
        };
        h.set_size(data.len() as u64);
        // `set_path` refuses `..`; write the raw name as a hostile layer would.
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Every path of the tree, sorted, found through `read_dir` alone.
fn names(fs: &LayeredRootFs) -> Vec<String> {
    let mut out = vec!["/".to_owned()];
    let mut stack = vec!["/".to_owned()];
    while let Some(dir) = stack.pop() {
        for n in fs.read_dir(&dir) {
            let p = if dir == "/" {
                format!("/{n}")
            } else {
                format!("{dir}/{n}")
            };
            if fs.lookup(&p) == Some(FileKind::Dir) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn layers_merge_with_whiteouts_opaque_dirs_and_hardlinks_and_skip_escapes() {
    let mut fs = LayeredRootFs::new();
    let lower = raw_tar(&[
        E::D("./usr/"),
        E::F("./usr/lib/libx.so.1", b"x"),
        E::F("./usr/lib/liby.so.1", b"y"),
        E::F("usr/share/doc/a", b"a"),
        E::F("usr/lib.so", b"s"),
        E::F("usr/lib-x/y", b"y"),
        E::F("opt/keep", b"k"),
        E::F("../escape", b"no"),
        E::F("usr/../../escape2", b"no"),
        E::L("lib", "usr/lib"),
        E::F("etc/old/f", b"f"),
    ]);
    fs.apply_layer(&lower[..], "lower").unwrap();
    let upper = raw_tar(&[
        E::F("usr/lib/.wh.libx.so.1", b""),
        E::F("usr/share/.wh..wh..opq", b""),
        E::F("usr/share/new", b"n"),
        E::H("opt/link", "opt/keep"),
        E::F("etc/old", b"now a file"),
        E::F("usr/lib/.wh.libz.so.1", b""),
    ]);
    fs.apply_layer(&upper[..], "upper").unwrap();
    assert_eq!(
        names(&fs),
        [
            "/",
            "/etc",
            "/etc/old",
            "/lib",
            "/opt",
            "/opt/keep",
            "/opt/link",
            "/usr",
            "/usr/lib",
            "/usr/lib-x",
            "/usr/lib-x/y",
            "/usr/lib.so",
            "/usr/lib/liby.so.1",
            "/usr/share",
            "/usr/share/new",
        ]
    );
    assert_eq!(fs.lookup("/lib"), Some(FileKind::Symlink("usr/lib".into())));
    assert_eq!(
        fs.open("/opt/link").unwrap().read_range(0, 100).unwrap(),
        b"k"
    );
    assert_eq!(fs.lookup("/usr/lib/libx.so.1"), None);
    let mut dir = fs.read_dir("/usr");
    dir.sort();
    assert_eq!(dir, ["lib", "lib-x", "lib.so", "share"]);
    assert_eq!(fs.read_dir("/"), ["etc", "lib", "opt", "usr"]);
    assert!(fs.read_dir("/opt/keep").is_empty());
    // An opaque root hides every lower entry but keeps `/` and this layer's own.
    fs.apply_layer(
        &raw_tar(&[E::F(".wh..wh..opq", b""), E::F("new", b"n")])[..],
        "top",
    )
    .unwrap();
    assert_eq!(names(&fs), ["/", "/new"]);
    assert_eq!(fs.lookup("/"), Some(FileKind::Dir));
}
