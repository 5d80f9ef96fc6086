//! Tests for start replay: path resolution, command lookup, `#!`, the loader's search
//! order, cycles and bounds, and a comparison with `ldd` on the host.

use super::loader::glob_match;
use super::*;
use crate::elf::build::{Spec, elf64};
use crate::elf::{ElfInfo, machine};

const LD: &str = "/lib64/ld-linux-x86-64.so.2";

fn lib(soname: &str, needed: &[&str]) -> Vec<u8> {
    elf64(&Spec {
        soname: Some(soname),
        needed,
        ..Spec::default()
    })
}

fn exe(needed: &[&str]) -> Vec<u8> {
    elf64(&Spec {
        interp: Some(LD),
        needed,
        ..Spec::default()
    })
}

fn config(entrypoint: &[&str], cmd: &[&str]) -> ImageConfigLite {
    ImageConfigLite {
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        ..ImageConfigLite::default()
    }
}

/// A minimal glibc tree: loader and libc in `/lib/x86_64-linux-gnu`, no ld.so.conf.
fn base() -> MemRootFs {
    let mut fs = MemRootFs::new();
    fs.symlink(LD, "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        .file(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            &lib("ld-linux-x86-64.so.2", &[]),
        )
        .file(
            "/lib/x86_64-linux-gnu/libc.so.6",
            &lib("libc.so.6", &["ld-linux-x86-64.so.2"]),
        );
    fs
}

const LOADER: [&str; 3] = [
    LD,
    "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libc.so.6",
];

/// The Debian bookworm shape: merged /usr, `python3 -> python3.11`, ld.so.conf.d includes,
/// and a `#!/usr/bin/env python3` script as the entrypoint.
#[test]
fn debian_python_script_end_to_end() {
    let mut fs = MemRootFs::new();
    let gnu = "/usr/lib/x86_64-linux-gnu";
    fs.symlink("/lib", "usr/lib")
        .symlink("/lib64", "usr/lib64")
        .symlink("/usr/lib64/ld-linux-x86-64.so.2", "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        .file(&format!("{gnu}/ld-linux-x86-64.so.2"), &lib("ld-linux-x86-64.so.2", &[]))
        .file(&format!("{gnu}/libc.so.6"), &lib("libc.so.6", &["ld-linux-x86-64.so.2"]))
        .file(&format!("{gnu}/libm.so.6"), &lib("libm.so.6", &["libc.so.6"]))
        // An aarch64 libm earlier in the search order: the loader skips it.
        .file("/usr/local/lib/libm.so.6", &elf64(&Spec { machine: machine::AARCH64, ..Spec::default() }))
        .symlink("/usr/local/lib/libz.so.1", "libz.so.1.3")
        .file("/usr/local/lib/libz.so.1.3", &lib("libz.so.1", &["libc.so.6"]))
        .file("/usr/bin/env", &exe(&["libc.so.6"]))
        .symlink("/usr/bin/python3", "python3.11")
        .file("/usr/bin/python3.11", &exe(&["libm.so.6", "libz.so.1", "libc.so.6"]))
        .file("/etc/ld.so.cache", b"glibc-ld.so.cache1.1")
        .file("/etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n\n")
        .file("/etc/ld.so.conf.d/libc.conf", b"# libc default configuration\n/usr/local/lib\n")
        .file(
            "/etc/ld.so.conf.d/x86_64-linux-gnu.conf",
            b"# Multiarch support\n/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n",
        )
        .file("/etc/ld.so.conf.d/.hidden.conf", b"/nowhere\n")
        .file("/app/run.py", b"#!/usr/bin/env python3\nprint('hello')\n");
    let mut cfg = config(&["/app/run.py"], &[]);
    cfg.env = vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".into(),
        "LANG=C.UTF-8".into(),
    ];
    cfg.working_dir = Some("/app".into());
    let got = prioritized_files(&fs, &cfg).unwrap();
    let want = [
        "/app/run.py",
        "/usr/bin/env",
        "/lib64",
        "/usr/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d/libc.conf",
        "/etc/ld.so.conf.d/x86_64-linux-gnu.conf",
        "/lib",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/bin/python3",
        "/usr/bin/python3.11",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/local/lib/libz.so.1",
        "/usr/local/lib/libz.so.1.3",
    ];
    assert_eq!(got, want);
}

#[test]
fn resolution_stays_inside_the_root() {
    let mut fs = MemRootFs::new();
    fs.file("/etc/passwd", b"root")
        .symlink("/a/b/up", "../../../../../etc/passwd")
        .symlink("/a/abs", "/../../etc/passwd")
        .symlink("/a/dir", "b")
        .symlink("/loop1", "loop2")
        .symlink("/loop2", "/loop1")
        .symlink("/a/empty", "");
    for p in [
        "/a/b/up",
        "/a/abs",
        "/a/dir/up",
        "/../../a/./dir//up",
        "b/up",
    ] {
        let r = resolve(&fs, "/a", p).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(
            (r.path.as_str(), &r.kind),
            ("/etc/passwd", &FileKind::Regular),
            "{p}"
        );
    }
    assert_eq!(
        resolve(&fs, "/", "/a/dir/up").unwrap().symlinks,
        ["/a/dir", "/a/b/up"]
    );
    assert!(matches!(
        resolve(&fs, "/", "/loop1/x"),
        Err(PrefetchError::SymlinkLoop { .. })
    ));
    assert!(matches!(
        resolve(&fs, "/", "/etc/passwd/x"),
        Err(PrefetchError::NotFound { .. })
    ));
    assert!(matches!(
        resolve(&fs, "/", "/etc/passwd/."),
        Err(PrefetchError::NotFound { .. })
    ));
    assert!(matches!(
        resolve(&fs, "/", "/a/empty"),
        Err(PrefetchError::NotFound { .. })
    ));
    assert!(matches!(
        resolve(&fs, "/", ""),
        Err(PrefetchError::NotFound { .. })
    ));
    assert_eq!(resolve(&fs, "/", "/..").unwrap().path, "/");
    // A symlinked working directory: `..` applies to where it leads.
    fs.symlink("/work", "a/b").file("/a/x", b"");
    let r = resolve(&fs, "/work", "../x").unwrap();
    assert_eq!(
        (r.path.as_str(), r.symlinks.as_slice()),
        ("/a/x", ["/work".to_owned()].as_slice())
    );
    let err = prioritized_files(&fs, &config(&["/loop1"], &[])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("/loop1"), "{err}");
}

#[test]
fn mem_rootfs_lists_directories() {
    let mut fs = MemRootFs::new();
    fs.file("/etc/a.conf", b"")
        .file("/etc/sub/b", b"")
        .dir("/etc/empty")
        .file("/etcetera", b"");
    let mut names = fs.read_dir("/etc");
    names.sort();
    assert_eq!(names, ["a.conf", "empty", "sub"]);
    assert_eq!(fs.read_dir("/"), ["etc", "etcetera"]);
    assert!(fs.read_dir("/etc/a.conf").is_empty());
    assert!(fs.open("/etc").is_none());
}

#[test]
fn command_lookup() {
    let mut fs = base();
    fs.file("/usr/bin/tool", &exe(&["libc.so.6"]))
        .file("/srv/bin/local", &elf64(&Spec::default()))
        .dir("/usr/local/bin/tool");
    // PATH search skips a directory of the same name.
    let got = prioritized_files(&fs, &config(&[], &["tool", "--flag"])).unwrap();
    assert_eq!(got[0], "/usr/bin/tool");
    assert_eq!(got[1..], LOADER);
    // A relative path is relative to WorkingDir; a static ELF brings nothing else.
    let mut cfg = config(&["./bin/local"], &[]);
    cfg.working_dir = Some("/srv".into());
    assert_eq!(prioritized_files(&fs, &cfg).unwrap(), ["/srv/bin/local"]);
    // A config PATH replaces the default.
    cfg.env = vec!["PATH=/srv/bin".into()];
    assert_eq!(
        prioritized_files(&fs, &config(&["local"], &[]))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        prioritized_files(
            &fs,
            &ImageConfigLite {
                entrypoint: vec!["local".into()],
                ..cfg.clone()
            }
        )
        .unwrap(),
        ["/srv/bin/local"]
    );
    let err = prioritized_files(&fs, &config(&["missing"], &[])).unwrap_err();
    assert!(
        matches!(err, PrefetchError::CommandNotFound { .. }),
        "{err}"
    );
    assert!(matches!(
        prioritized_files(&fs, &config(&["/usr/local/bin/tool"], &[])),
        Err(PrefetchError::NotExecutable { .. })
    ));
    assert!(
        prioritized_files(&fs, &config(&[], &[]))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn shebang_forms() {
    let mut fs = base();
    fs.symlink("/bin/sh", "dash")
        .file("/bin/dash", &exe(&["libc.so.6"]))
        .file("/usr/bin/env", &exe(&["libc.so.6"]))
        .file("/usr/bin/python3", &exe(&["libc.so.6"]))
        .file("/s/sh", b"#!/bin/sh -e\nexit 0\n")
        .file(
            "/s/split",
            b"#!/usr/bin/env -S PYTHONUNBUFFERED=1 python3 -u\n",
        )
        .file("/s/plain", b"no shebang\n")
        .file("/s/self", b"#!/s/self\n")
        .file("/s/crlf", b"#! /bin/sh\r\n");
    let list = |argv: &[&str]| prioritized_files(&fs, &config(argv, &[])).unwrap();
    assert_eq!(list(&["/s/sh"])[..3], ["/s/sh", "/bin/sh", "/bin/dash"]);
    assert_eq!(list(&["/s/crlf"])[..3], ["/s/crlf", "/bin/sh", "/bin/dash"]);
    let split = list(&["/s/split"]);
    assert_eq!(split[..2], ["/s/split", "/usr/bin/env"]);
    assert_eq!(split.last().unwrap(), "/usr/bin/python3");
    assert_eq!(
        list(&["/usr/bin/env", "-i", "A=1", "--", "python3", "x.py"])
            .last()
            .unwrap(),
        "/usr/bin/python3"
    );
    assert_eq!(list(&["/s/plain"]), ["/s/plain"]);
    let err = prioritized_files(&fs, &config(&["/s/self"], &[])).unwrap_err();
    assert!(
        matches!(err, PrefetchError::TooManyInterpreters { .. }),
        "{err}"
    );
}

#[test]
fn env_command_parsing() {
    let words = |s: &[&str]| env_command(&s.iter().map(|w| w.to_string()).collect::<Vec<_>>());
    assert_eq!(words(&["python3", "-u"]).unwrap(), ["python3", "-u"]);
    assert_eq!(
        words(&["-S", "A=1", "node", "x.js"]).unwrap(),
        ["node", "x.js"]
    );
    assert_eq!(words(&["-Snode x.js"]).unwrap(), ["node", "x.js"]);
    assert_eq!(
        words(&["--split-string", "ruby -w"]).unwrap(),
        ["ruby", "-w"]
    );
    assert_eq!(words(&["-u", "HOME", "-C", "/tmp", "sh"]).unwrap(), ["sh"]);
    assert_eq!(words(&["A=1"]), None);
    assert_eq!(words(&[]), None);
}

#[test]
fn search_order_rpath_runpath_ld_library_path() {
    let mut fs = base();
    for dir in ["/rp", "/ldp", "/rn"] {
        fs.file(&format!("{dir}/libx.so"), &lib("libx.so", &[]));
    }
    let with = |rpath: Option<&str>, runpath: Option<&str>| {
        let mut fs = fs.clone();
        fs.file(
            "/bin/app",
            &elf64(&Spec {
                interp: Some(LD),
                needed: &["libx.so"],
                rpath,
                runpath,
                ..Spec::default()
            }),
        );
        let mut cfg = config(&["/bin/app"], &[]);
        cfg.env = vec!["LD_LIBRARY_PATH=/ldp".into()];
        prioritized_files(&fs, &cfg)
            .unwrap()
            .last()
            .unwrap()
            .clone()
    };
    assert_eq!(with(Some("/rp"), None), "/rp/libx.so");
    assert_eq!(
        with(Some("/rp"), Some("/rn")),
        "/ldp/libx.so",
        "RUNPATH disables RPATH; LD_LIBRARY_PATH first"
    );
    assert_eq!(with(None, None), "/ldp/libx.so");
}

#[test]
fn origin_and_loader_rpath_chain() {
    let mut fs = base();
    fs.file(
        "/opt/app/bin/app",
        &elf64(&Spec {
            interp: Some(LD),
            needed: &["liba.so"],
            rpath: Some("$ORIGIN/../lib"),
            ..Spec::default()
        }),
    )
    .file("/opt/app/lib/liba.so", &lib("liba.so", &["libb.so"]))
    // liba has no search path of its own: the executable's DT_RPATH finds libb.
    .file(
        "/opt/app/lib/libb.so",
        &elf64(&Spec {
            needed: &["libc.so.6"],
            runpath: Some("${ORIGIN}/$PLATFORM"),
            ..Spec::default()
        }),
    );
    let got = prioritized_files(&fs, &config(&["/opt/app/bin/app"], &[])).unwrap();
    assert_eq!(
        got[..3],
        [
            "/opt/app/bin/app",
            LD,
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        ]
    );
    assert_eq!(
        got[3..],
        [
            "/opt/app/lib/liba.so",
            "/opt/app/lib/libb.so",
            "/lib/x86_64-linux-gnu/libc.so.6"
        ]
    );
}

#[test]
fn library_cycles_terminate() {
    let mut fs = base();
    fs.file("/bin/app", &exe(&["liba.so", "liba.so"]))
        .file("/usr/lib/liba.so", &lib("liba.so", &["libb.so", "liba.so"]))
        .file(
            "/usr/lib/libb.so",
            &lib("libb.so", &["liba.so", "libc.so.6"]),
        )
        // A library reached under two names is listed once.
        .symlink(
            "/usr/lib/libc.so.6",
            "x86_64-linux-gnu/../../../lib/x86_64-linux-gnu/libc.so.6",
        );
    let got = prioritized_files(&fs, &config(&["/bin/app"], &[])).unwrap();
    assert_eq!(got[1..3], LOADER[..2]);
    assert_eq!(
        got[3..],
        [
            "/usr/lib/liba.so",
            "/usr/lib/libb.so",
            "/lib/x86_64-linux-gnu/libc.so.6"
        ]
    );
}

#[test]
fn library_graph_is_bounded() {
    let mut fs = base();
    fs.file("/bin/app", &exe(&["lib0.so"]));
    for i in 0..=MAX_OBJECTS {
        let next = format!("lib{}.so", i + 1);
        fs.file(
            &format!("/usr/lib/lib{i}.so"),
            &lib(&format!("lib{i}.so"), &[&next]),
        );
    }
    let err = prioritized_files(&fs, &config(&["/bin/app"], &[])).unwrap_err();
    assert!(
        matches!(
            err,
            PrefetchError::LibraryGraphTooLarge {
                what: "shared objects",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn ld_so_conf_include_loops_terminate() {
    let mut fs = base();
    fs.file("/bin/app", &exe(&["libq.so"]))
        .file(
            "/etc/ld.so.conf",
            b"include ld.so.conf\ninclude conf.d/*\n/opt/q=libc6 # old style\n",
        )
        .file(
            "/etc/conf.d/again.conf",
            b"include /etc/ld.so.conf /etc/conf.d/*.conf\n",
        )
        .file("/opt/q/libq.so", &lib("libq.so", &[]));
    let got = prioritized_files(&fs, &config(&["/bin/app"], &[])).unwrap();
    assert_eq!(
        got[3..],
        [
            "/etc/ld.so.conf",
            "/etc/conf.d/again.conf",
            "/opt/q/libq.so"
        ]
    );
}

#[test]
fn musl_uses_its_path_file() {
    let mut fs = MemRootFs::new();
    fs.file(
        "/lib/ld-musl-x86_64.so.1",
        &lib("libc.musl-x86_64.so.1", &[]),
    )
    .symlink("/lib/libc.musl-x86_64.so.1", "ld-musl-x86_64.so.1")
    .file("/etc/ld-musl-x86_64.path", b"/opt/musl\n/lib\n")
    .file(
        "/opt/musl/libssl.so.3",
        &lib("libssl.so.3", &["libc.musl-x86_64.so.1"]),
    )
    .file(
        "/bin/app",
        &elf64(&Spec {
            interp: Some("/lib/ld-musl-x86_64.so.1"),
            needed: &["libssl.so.3", "libc.musl-x86_64.so.1"],
            ..Spec::default()
        }),
    );
    let got = prioritized_files(&fs, &config(&["/bin/app"], &[])).unwrap();
    assert_eq!(
        got,
        [
            "/bin/app",
            "/lib/ld-musl-x86_64.so.1",
            "/etc/ld-musl-x86_64.path",
            "/opt/musl/libssl.so.3"
        ]
    );
}

#[test]
fn hostile_executables() {
    let mut fs = base();
    let good = exe(&["libc.so.6", "libbad.so"]);
    fs.file("/bin/truncated", &good[..100])
        .file("/bin/app", &good)
        .file("/usr/lib/libbad.so", &good[..70])
        .file(
            "/bin/nointerp",
            &elf64(&Spec {
                interp: Some("/missing/ld.so"),
                ..Spec::default()
            }),
        );
    let err = prioritized_files(&fs, &config(&["/bin/truncated"], &[])).unwrap_err();
    assert!(
        matches!(err, PrefetchError::Elf { .. }) && err.to_string().contains("/bin/truncated"),
        "{err}"
    );
    // A malformed library is skipped like a missing one.
    assert_eq!(
        prioritized_files(&fs, &config(&["/bin/app"], &[])).unwrap()[1..],
        LOADER
    );
    assert_eq!(
        prioritized_files(&fs, &config(&["/bin/nointerp"], &[]))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn glob_matching() {
    assert!(glob_match(b"*.conf", b"libc.conf"));
    assert!(glob_match(b"*", b"x"));
    assert!(glob_match(b"a?c*", b"abcdef"));
    assert!(glob_match(b"*a*b", b"xxaxxab"));
    assert!(!glob_match(b"*.conf", b"libc.conf.bak"));
    assert!(!glob_match(b"*.conf", b".hidden.conf"));
    assert!(glob_match(b".*", b".hidden"));
    assert!(glob_match(b"", b"") && !glob_match(b"", b"a"));
}

/// The host's own root as a [`RootFs`], to compare with `ldd`.
struct HostRootFs;

impl RootFs for HostRootFs {
    fn lookup(&self, path: &str) -> Option<FileKind> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(if meta.is_symlink() {
            FileKind::Symlink(std::fs::read_link(path).ok()?.to_str()?.to_owned())
        } else if meta.is_dir() {
            FileKind::Dir
        } else if meta.is_file() {
            FileKind::Regular
        } else {
            FileKind::Other
        })
    }

    fn open(&self, path: &str) -> Option<Box<dyn ReadAt + '_>> {
        Some(Box::new(
            crate::read_at::FileReadAt::new(std::fs::File::open(path).ok()?).ok()?,
        ))
    }

    fn read_dir(&self, path: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(path) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    }
}

#[test]
fn host_binaries_match_ldd() {
    for bin in ["/bin/ls", "/usr/bin/python3"] {
        let Ok(out) = std::process::Command::new("ldd").arg(bin).output() else {
            eprintln!("skipping: ldd unavailable");
            return;
        };
        if !out.status.success() {
            eprintln!("skipping {bin}: ldd failed");
            continue;
        }
        let got = prioritized_files(&HostRootFs, &config(&[bin], &[])).unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
            let path = line
                .split("=>")
                .last()
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if !path.starts_with('/') {
                continue; // linux-vdso.so.1
            }
            let real = std::fs::canonicalize(path).unwrap();
            assert!(
                got.iter().any(|g| std::path::Path::new(g) == real),
                "{bin}: {} missing from {got:?}",
                real.display()
            );
        }
    }
}

#[test]
fn lookup_budget_bounds_hostile_search_paths() {
    let mut fs = MemRootFs::new();
    for i in 0..MAX_SYMLINKS {
        fs.symlink(&format!("/l{i}"), &format!("l{}", i + 1));
    }
    // Every PATH entry costs a full symlink chain; the command is nowhere.
    let mut cfg = config(&["cmd"], &[]);
    cfg.env = vec![format!("PATH={}", vec!["/l0"; 30_000].join(":"))];
    let err = prioritized_files(&fs, &cfg).unwrap_err();
    assert!(matches!(err, PrefetchError::TooMuchWork { .. }), "{err}");
}

proptest::proptest! {
    #[test]
    fn resolution_terminates_inside_the_root(
        links in proptest::collection::vec(("[ab/.]{1,8}", "[ab/.]{0,10}"), 0..12),
        files in proptest::collection::vec("[ab/]{1,8}", 0..6),
        query in "[ab/.]{0,12}",
    ) {
        let mut fs = MemRootFs::new();
        for f in &files {
            fs.file(f, b"x");
        }
        for (path, target) in &links {
            fs.symlink(path, target);
        }
        if let Ok(r) = resolve(&fs, "/a", &query) {
            proptest::prop_assert_eq!(normalize("/", &r.path), r.path.clone());
            proptest::prop_assert!(!matches!(r.kind, FileKind::Symlink(_)));
            proptest::prop_assert!(r.path == "/" || fs.lookup(&r.path).is_some());
            proptest::prop_assert!(r.symlinks.len() <= MAX_SYMLINKS);
        }
        let _ = prioritized_files(&fs, &config(&[&query], &[]));
    }
}

#[test]
fn ld_so_preload_loads_first() {
    let mut fs = base();
    fs.file("/bin/app", &exe(&["libc.so.6"]))
        .file("/etc/ld.so.preload", b"/opt/hook.so libextra.so\n")
        .file("/opt/hook.so", &lib("hook.so", &[]))
        .file("/usr/lib/libextra.so", &lib("libextra.so", &["libc.so.6"]));
    let got = prioritized_files(&fs, &config(&["/bin/app"], &[])).unwrap();
    assert_eq!(
        got[3..],
        [
            "/etc/ld.so.preload",
            "/opt/hook.so",
            "/usr/lib/libextra.so",
            "/lib/x86_64-linux-gnu/libc.so.6"
        ]
    );
}

/// What a lazy snapshotter prefetches when it has read an ELF file: the loader, its cache
/// and the first file of each needed name, found without reading any candidate (so an
/// earlier incompatible one is guessed, unlike [`prioritized_files`]), `$ORIGIN` expanded,
/// the loader's own name and missing libraries left out.
#[test]
fn loader_neighbours_are_guessed_from_the_tree_alone() {
    let gnu = "/usr/lib/x86_64-linux-gnu";
    let mut fs = MemRootFs::new();
    fs.symlink("/lib", "usr/lib")
        .symlink("/lib64", "usr/lib64")
        .symlink(
            "/usr/lib64/ld-linux-x86-64.so.2",
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        )
        .file(
            &format!("{gnu}/ld-linux-x86-64.so.2"),
            &lib("ld-linux-x86-64.so.2", &[]),
        )
        .file(
            &format!("{gnu}/libc.so.6"),
            &lib("libc.so.6", &["ld-linux-x86-64.so.2"]),
        )
        .symlink(&format!("{gnu}/libz.so.1"), "libz.so.1.2.13")
        .file(
            &format!("{gnu}/libz.so.1.2.13"),
            &lib("libz.so.1", &["libc.so.6"]),
        )
        .file("/opt/app/lib/libapp.so", &lib("libapp.so", &["libc.so.6"]))
        .file("/opt/app/bin/app", &exe(&["libc.so.6"]))
        .file("/etc/ld.so.cache", b"glibc-ld.so.cache1.1");
    let info = |needed: &[&str], runpath: Option<&str>| ElfInfo {
        class: crate::elf::ElfClass::Elf64,
        endian: crate::elf::Endian::Little,
        e_type: 3,
        machine: machine::X86_64,
        interpreter: Some(LD.to_owned()),
        dynamic: true,
        needed: needed.iter().map(|s| s.to_string()).collect(),
        rpath: None,
        runpath: runpath.map(str::to_owned),
        soname: None,
    };
    let paths = |v: Vec<Resolved>| v.into_iter().map(|r| r.path).collect::<Vec<_>>();
    let exe = info(
        &[
            "libz.so.1",
            "libapp.so",
            "libmissing.so",
            "ld-linux-x86-64.so.2",
            "libc.so.6",
        ],
        Some("$ORIGIN/../lib"),
    );
    assert_eq!(
        paths(loader_neighbours(&fs, "/opt/app/bin/app", &exe)),
        [
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "/etc/ld.so.cache",
            "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
            "/opt/app/lib/libapp.so",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
    );
    // A library without an interpreter: only its own needs.
    let libz = ElfInfo {
        interpreter: None,
        ..info(&["libc.so.6"], None)
    };
    assert_eq!(
        paths(loader_neighbours(
            &fs,
            "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
            &libz
        )),
        ["/etc/ld.so.cache", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
    );
    // A static executable: nothing.
    let stat = ElfInfo {
        interpreter: None,
        dynamic: false,
        ..info(&[], None)
    };
    assert!(loader_neighbours(&fs, "/bin/busybox", &stat).is_empty());
}
