//! The dynamic loader's side of a start, replayed statically: which interpreter, which
//! configuration files, and which shared libraries, in which order, glibc's `ld.so` or
//! musl's loader would open for one executable.
//!
//! glibc's search order for a `DT_NEEDED` name without `/`: the `DT_RPATH`s of the
//! requesting object and its chain of loaders up to the executable (only when the requester
//! has no `DT_RUNPATH`, and skipping loaders that have one), `LD_LIBRARY_PATH`, the
//! requester's `DT_RUNPATH`, the directories `ldconfig` would put in `/etc/ld.so.cache`
//! (read from `/etc/ld.so.conf` and its `include`s, since the cache itself is a build
//! artefact we do not parse), then the default directories for the ELF machine. musl's:
//! `LD_LIBRARY_PATH`, the requester chain's `DT_RUNPATH`/`DT_RPATH`, then
//! `/etc/ld-musl-<arch>.path` or `/lib:/usr/local/lib:/usr/lib`. glibc first reads
//! `/etc/ld.so.preload` and loads what it names before the executable's `DT_NEEDED`.
//! A candidate of another class, byte order or machine is skipped, as the loaders do; a
//! library found nowhere is left out (the start would fail, but the list stays useful for
//! what does load). Only `*` and `?` in an include's last component are expanded.

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;

use super::rootfs::{FileKind, MAX_PATH_LEN, Resolved, RootFs, child_path, dirname, resolve};
use super::{FileList, PrefetchError};
use crate::elf::{ElfClass, ElfInfo, Endian, machine, parse_elf};

/// Shared objects loaded into one process at most; bounds recursive `DT_NEEDED` graphs.
pub const MAX_OBJECTS: usize = 1024;
/// Distinct `DT_NEEDED` names searched for in one process at most.
pub const MAX_LIBRARY_NAMES: usize = 4096;
/// Directories of one expanded `DT_RPATH`/`DT_RUNPATH` kept at most.
const MAX_PATH_LIST_DIRS: usize = 64;
/// Bytes of one expanded `DT_RPATH`/`DT_RUNPATH` kept at most (`$ORIGIN` multiplies).
const MAX_PATH_LIST_BYTES: usize = 16 * 1024;
/// Directories a loader chain passes down at most.
const MAX_INHERITED_DIRS: usize = 128;
/// Names taken from `/etc/ld.so.preload` at most.
const MAX_PRELOAD: usize = 64;
/// `include` nesting in `ld.so.conf` at most.
const MAX_CONF_DEPTH: usize = 8;
/// Configuration files read at most.
const MAX_CONF_FILES: usize = 256;
/// Search directories kept from any one source at most.
const MAX_DIRS: usize = 1024;
/// Configuration files are read up to this size.
const MAX_CONF_BYTES: u64 = 64 * 1024;

/// The process environment the loader sees.
#[derive(Debug, Clone)]
pub(super) struct LoaderEnv {
    /// The working directory, for relative paths.
    pub(super) cwd: String,
    /// `LD_LIBRARY_PATH`, split.
    pub(super) ld_library_path: Vec<String>,
}

/// One loaded object.
struct Object {
    info: ElfInfo,
    /// `$ORIGIN`: the directory the object was found in.
    origin: String,
    /// The search path this object's loaders pass down (nearest loader first), shared
    /// between siblings and capped at [`MAX_INHERITED_DIRS`].
    inherited: Rc<[Rc<str>]>,
}

/// Lists the interpreter, loader configuration and library closure of the executable at
/// `exe` (already resolved and listed by the caller) into `out`.
pub(super) fn load(
    fs: &dyn RootFs,
    exe: &Resolved,
    info: ElfInfo,
    env: &LoaderEnv,
    out: &mut FileList,
) -> Result<(), PrefetchError> {
    let Some(interp_path) = info.interpreter.clone() else {
        return Ok(()); // static: the kernel maps it and nothing else is opened
    };
    let interp = resolve(fs, &env.cwd, &interp_path)?;
    if interp.kind != FileKind::Regular {
        return Err(PrefetchError::NotExecutable { path: interp.path });
    }
    out.add_resolved(&interp);
    let interp_name = interp_path.rsplit('/').next().unwrap_or_default();
    let musl = interp_name
        .strip_prefix("ld-musl-")
        .and_then(|b| b.strip_suffix(".so.1"));
    // The loader is loaded: `DT_NEEDED` names matching it (libc's `ld-linux-x86-64.so.2`)
    // are satisfied without a search.
    let mut loaded_names: HashSet<String> = HashSet::from([interp_name.to_owned()]);
    let mut loaded_paths: HashSet<String> = HashSet::from([exe.path.clone(), interp.path.clone()]);
    if let Some(Ok(Some(i))) = fs.open(&interp.path).map(|r| parse_elf(&*r)) {
        loaded_names.extend(i.soname);
    }
    let mut info = info;
    if musl.is_none()
        && let Some(text) = read_text(fs, "/etc/ld.so.preload", out)
    {
        // glibc loads these before the executable's own `DT_NEEDED`, searched as they are.
        let preload = text
            .split([' ', '\t', '\n', ':'])
            .filter(|w| !w.is_empty())
            .take(MAX_PRELOAD);
        info.needed.splice(0..0, preload.map(str::to_owned));
    }
    if info.needed.is_empty() {
        return Ok(());
    }
    let system = match musl {
        Some(arch) => musl_dirs(fs, arch, out),
        None => glibc_dirs(fs, &info, out),
    };
    let mut queue = VecDeque::from([Object {
        origin: dirname(&exe.path).to_owned(),
        info,
        inherited: Rc::from([]),
    }]);
    while let Some(obj) = queue.pop_front() {
        let dirs = search_dirs(&obj, env, &system, musl.is_some());
        let mut inherited: Option<Rc<[Rc<str>]>> = None;
        for name in &obj.info.needed {
            if !loaded_names.insert(name.clone()) {
                continue;
            }
            if loaded_names.len() > MAX_LIBRARY_NAMES {
                return Err(PrefetchError::LibraryGraphTooLarge {
                    what: "library names",
                    limit: MAX_LIBRARY_NAMES,
                });
            }
            let Some((found, lib, lib_info)) = find_library(fs, env, name, &dirs, &obj.info) else {
                continue;
            };
            if !loaded_paths.insert(lib.path.clone()) {
                continue;
            }
            if loaded_paths.len() > MAX_OBJECTS {
                return Err(PrefetchError::LibraryGraphTooLarge {
                    what: "shared objects",
                    limit: MAX_OBJECTS,
                });
            }
            out.add_resolved(&lib);
            loaded_names.extend(lib_info.soname.clone());
            let inherited = inherited
                .get_or_insert_with(|| passed_down(&obj, musl.is_some()))
                .clone();
            queue.push_back(Object {
                origin: dirname(&found).to_owned(),
                info: lib_info,
                inherited,
            });
        }
    }
    Ok(())
}

/// The files the dynamic loader opens right after mapping the ELF object at `path`
/// (`info` its headers), guessed from the tree alone, without reading any candidate:
/// its `PT_INTERP` loader, glibc's `/etc/ld.so.cache`, and for each `DT_NEEDED` name the
/// first regular file of that name in the object's search directories (its own
/// `DT_RPATH`/`DT_RUNPATH` with `$ORIGIN` expanded, the `ld.so.conf` directories when
/// `fs` can read that file, the default directories). Not the closure: what those
/// libraries need is found from their own headers once they are read. A lazy
/// snapshotter prefetches these while a start is running; a wrong guess costs bytes,
/// never correctness. Symlinks followed are not listed, only the files they lead to.
pub fn loader_neighbours(fs: &dyn RootFs, path: &str, info: &ElfInfo) -> Vec<Resolved> {
    let mut out: Vec<Resolved> = Vec::new();
    let push = |r: Resolved, out: &mut Vec<Resolved>| {
        if r.kind == FileKind::Regular && r.path != path && !out.iter().any(|o| o.path == r.path) {
            out.push(r);
        }
    };
    let interp_name = info
        .interpreter
        .as_deref()
        .and_then(|i| i.rsplit('/').next())
        .unwrap_or_default()
        .to_owned();
    let musl = interp_name
        .strip_prefix("ld-musl-")
        .and_then(|b| b.strip_suffix(".so.1"))
        .map(str::to_owned);
    if let Some(interp) = &info.interpreter
        && let Ok(r) = resolve(fs, "/", interp)
    {
        push(r, &mut out);
    }
    let mut listed = FileList::default();
    let system = match &musl {
        Some(arch) => musl_dirs(fs, arch, &mut listed),
        None if info.interpreter.is_some() || !info.needed.is_empty() => {
            glibc_dirs(fs, info, &mut listed)
        }
        None => Vec::new(),
    };
    for p in &listed.paths {
        if let Ok(r) = resolve(fs, "/", p) {
            push(r, &mut out);
        }
    }
    let obj = Object {
        info: info.clone(),
        origin: dirname(path).to_owned(),
        inherited: Rc::from([]),
    };
    let env = LoaderEnv {
        cwd: "/".to_owned(),
        ld_library_path: Vec::new(),
    };
    let dirs = search_dirs(&obj, &env, &system, musl.is_some());
    for name in info.needed.iter().take(MAX_LIBRARY_NAMES) {
        if *name == interp_name {
            continue;
        }
        let candidates: Vec<String> = if name.contains('/') {
            vec![name.clone()]
        } else {
            dirs.iter().map(|d| child_path(d, name)).collect()
        };
        if let Some(r) = candidates.iter().find_map(|c| {
            resolve(fs, "/", c)
                .ok()
                .filter(|r| r.kind == FileKind::Regular)
        }) {
            push(r, &mut out);
        }
    }
    out
}

/// The search path `obj` passes to the objects it loads: its own path, then what its
/// loaders passed to it. glibc passes `DT_RPATH` only, and none from an object with a
/// `DT_RUNPATH`; musl passes `DT_RUNPATH`, else `DT_RPATH`.
fn passed_down(obj: &Object, musl: bool) -> Rc<[Rc<str>]> {
    let own = match (&obj.info.runpath, &obj.info.rpath) {
        (Some(r), _) if musl => Some(r),
        (None, Some(r)) => Some(r),
        _ => None,
    };
    let own = own
        .map(|p| expand_path_list(p, &obj.origin, obj.info.class))
        .unwrap_or_default();
    own.into_iter()
        .map(Rc::from)
        .chain(obj.inherited.iter().cloned())
        .take(MAX_INHERITED_DIRS)
        .collect()
}

/// Where `obj`'s `DT_NEEDED` names are searched, in order, without repeats.
fn search_dirs(obj: &Object, env: &LoaderEnv, system: &[String], musl: bool) -> Vec<String> {
    let own = |p: &Option<String>| {
        p.as_ref()
            .map(|p| expand_path_list(p, &obj.origin, obj.info.class))
    };
    let inherited = obj.inherited.iter().map(|d| d.to_string());
    let mut dirs: Vec<String> = Vec::new();
    if musl {
        dirs.extend(env.ld_library_path.iter().cloned());
        dirs.extend(
            own(&obj.info.runpath)
                .or_else(|| own(&obj.info.rpath))
                .unwrap_or_default(),
        );
        dirs.extend(inherited);
    } else {
        if obj.info.runpath.is_none() {
            dirs.extend(own(&obj.info.rpath).unwrap_or_default());
            dirs.extend(inherited);
        }
        dirs.extend(env.ld_library_path.iter().cloned());
        dirs.extend(own(&obj.info.runpath).unwrap_or_default());
    }
    dirs.extend(system.iter().cloned());
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// Finds `name` as the loader would: a name with `/` is a path (relative to the working
/// directory); otherwise the first compatible ELF file in `dirs`. Returns the path as found
/// (for `$ORIGIN`), its resolution and its headers.
fn find_library(
    fs: &dyn RootFs,
    env: &LoaderEnv,
    name: &str,
    dirs: &[String],
    requester: &ElfInfo,
) -> Option<(String, Resolved, ElfInfo)> {
    let candidates: Vec<String> = if name.contains('/') {
        vec![name.to_owned()]
    } else {
        dirs.iter().map(|d| child_path(d, name)).collect()
    };
    candidates.into_iter().find_map(|candidate| {
        let resolved = resolve(fs, &env.cwd, &candidate).ok()?;
        if resolved.kind != FileKind::Regular {
            return None;
        }
        let info = parse_elf(&*fs.open(&resolved.path)?).ok()??;
        let found = super::rootfs::normalize(&env.cwd, &candidate);
        requester
            .compatible_with(&info)
            .then_some((found, resolved, info))
    })
}

/// Splits a `DT_RPATH`/`DT_RUNPATH` value and expands `$ORIGIN` and `$LIB`; entries with
/// `$PLATFORM` (which depends on the CPU at run time) are dropped. The result is capped at
/// [`MAX_PATH_LIST_DIRS`] directories and [`MAX_PATH_LIST_BYTES`] bytes.
fn expand_path_list(list: &str, origin: &str, class: ElfClass) -> Vec<String> {
    let lib = if class == ElfClass::Elf64 {
        "lib64"
    } else {
        "lib"
    };
    let mut bytes = 0;
    list.split(':')
        .filter(|e| !e.is_empty() && !e.contains("$PLATFORM") && !e.contains("${PLATFORM}"))
        .map(|e| {
            e.replace("${ORIGIN}", origin)
                .replace("$ORIGIN", origin)
                .replace("${LIB}", lib)
                .replace("$LIB", lib)
        })
        .filter(|e| e.len() <= MAX_PATH_LEN)
        .take_while(|e| {
            bytes += e.len();
            bytes <= MAX_PATH_LIST_BYTES
        })
        .take(MAX_PATH_LIST_DIRS)
        .collect()
}

/// Debian's multiarch tuples for a machine, most specific first.
fn multiarch(info: &ElfInfo) -> &'static [&'static str] {
    let b64 = info.class == ElfClass::Elf64;
    let le = info.endian == Endian::Little;
    match info.machine {
        machine::X86_64 if b64 => &["x86_64-linux-gnu"],
        machine::X86_64 => &["x86_64-linux-gnux32"],
        machine::I386 => &["i386-linux-gnu"],
        machine::AARCH64 if le => &["aarch64-linux-gnu"],
        machine::ARM => &["arm-linux-gnueabihf", "arm-linux-gnueabi"],
        machine::PPC64 if le => &["powerpc64le-linux-gnu"],
        machine::PPC64 => &["powerpc64-linux-gnu"],
        machine::PPC => &["powerpc-linux-gnu"],
        machine::S390 if b64 => &["s390x-linux-gnu"],
        machine::RISCV if b64 => &["riscv64-linux-gnu"],
        machine::MIPS if b64 && le => &["mips64el-linux-gnuabi64"],
        machine::MIPS if le => &["mipsel-linux-gnu"],
        machine::MIPS => &["mips-linux-gnu"],
        machine::LOONGARCH => &["loongarch64-linux-gnu"],
        _ => &[],
    }
}

/// glibc's trusted directories: the multiarch ones (Debian, Ubuntu), `lib64` (Fedora, SUSE)
/// or `lib32` (Debian multilib), then `/lib` and `/usr/lib`.
fn default_dirs(info: &ElfInfo) -> Vec<String> {
    let mut dirs: Vec<String> = multiarch(info)
        .iter()
        .flat_map(|t| [format!("/lib/{t}"), format!("/usr/lib/{t}")])
        .collect();
    let bits = if info.class == ElfClass::Elf64 {
        "64"
    } else {
        "32"
    };
    dirs.extend([
        format!("/lib{bits}"),
        format!("/usr/lib{bits}"),
        "/lib".into(),
        "/usr/lib".into(),
    ]);
    dirs
}

/// glibc's system directories, listing `/etc/ld.so.cache` and the configuration read.
fn glibc_dirs(fs: &dyn RootFs, info: &ElfInfo, out: &mut FileList) -> Vec<String> {
    if let Ok(cache) = resolve(fs, "/", "/etc/ld.so.cache")
        && cache.kind == FileKind::Regular
    {
        out.add_resolved(&cache);
    }
    let mut conf = Conf::default();
    conf.read(fs, "/etc/ld.so.conf", 0, out);
    let mut dirs = conf.dirs;
    dirs.extend(default_dirs(info));
    dirs
}

/// musl's system directories, from `/etc/ld-musl-<arch>.path` if present.
fn musl_dirs(fs: &dyn RootFs, arch: &str, out: &mut FileList) -> Vec<String> {
    let path = format!("/etc/ld-musl-{arch}.path");
    let text = read_text(fs, &path, out);
    let text = text.as_deref().unwrap_or("/lib:/usr/local/lib:/usr/lib");
    text.split([':', '\n'])
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .take(MAX_DIRS)
        .map(str::to_owned)
        .collect()
}

/// Reads a small text file, listing it (and its symlinks) if it exists.
fn read_text(fs: &dyn RootFs, path: &str, out: &mut FileList) -> Option<String> {
    let resolved = resolve(fs, "/", path)
        .ok()
        .filter(|r| r.kind == FileKind::Regular)?;
    out.add_resolved(&resolved);
    let bytes = fs
        .open(&resolved.path)?
        .read_range(0, MAX_CONF_BYTES)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// What `ldconfig` gathers from `ld.so.conf`.
#[derive(Default)]
struct Conf {
    dirs: Vec<String>,
    visited: HashSet<String>,
}

impl Conf {
    fn read(&mut self, fs: &dyn RootFs, path: &str, depth: usize, out: &mut FileList) {
        if depth > MAX_CONF_DEPTH
            || self.visited.len() >= MAX_CONF_FILES
            || !self.visited.insert(path.to_owned())
        {
            return;
        }
        let Some(text) = read_text(fs, path, out) else {
            return;
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let mut words = line.split_whitespace();
            match words.next() {
                None => {}
                Some("include") => {
                    for pattern in words {
                        let pattern = super::rootfs::normalize(dirname(path), pattern);
                        for file in glob(fs, &pattern) {
                            self.read(fs, &file, depth + 1, out);
                        }
                    }
                }
                Some("hwcap") => {}
                Some(_) => {
                    for dir in line.split([':', ',', ' ', '\t']).filter(|d| !d.is_empty()) {
                        // Old `dir=TYPE` lines name a library type after `=`.
                        let dir = dir
                            .split('=')
                            .next()
                            .unwrap_or_default()
                            .trim_end_matches('/');
                        let dir = if dir.is_empty() { "/" } else { dir };
                        if self.dirs.len() < MAX_DIRS && !self.dirs.iter().any(|d| d == dir) {
                            self.dirs.push(dir.to_owned());
                        }
                    }
                }
            }
        }
    }
}

/// Expands a pattern whose last component may hold `*` and `?` (what `ld.so.conf`
/// includes use), sorted as `glob(3)` sorts; a pattern without wildcards is itself.
fn glob(fs: &dyn RootFs, pattern: &str) -> Vec<String> {
    let (dir, name) = (
        dirname(pattern),
        pattern.rsplit('/').next().unwrap_or_default(),
    );
    if !name.contains(['*', '?']) {
        return vec![pattern.to_owned()];
    }
    let Ok(resolved) = resolve(fs, "/", dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = fs
        .read_dir(&resolved.path)
        .into_iter()
        .filter(|n| glob_match(name.as_bytes(), n.as_bytes()))
        .collect();
    names.sort();
    names.truncate(MAX_CONF_FILES);
    names.into_iter().map(|n| child_path(dir, &n)).collect()
}

/// `fnmatch` for `*` and `?` only; a leading `.` must be matched literally.
pub(super) fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pattern.first() != Some(&b'.') {
        return false;
    }
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more byte and retry: linear backtracking.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}
