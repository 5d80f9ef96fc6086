//! The files a container reads when it starts, derived statically from the image's root
//! filesystem and config: the prioritized files of an eStargz layer (issue #4, item 3).
//!
//! [`prioritized_files`] replays a start without running anything: the runtime resolves
//! `Entrypoint ++ Cmd`'s first word through the config's `PATH`; the kernel reads the file
//! and, for a `#!` script, execs its interpreter (up to [`MAX_INTERPRETERS`] deep; an
//! `env` interpreter resolves its command through `PATH` again); for a dynamic ELF
//! executable, the kernel maps its `PT_INTERP` loader, which reads its configuration and
//! maps the `DT_NEEDED` closure (the `loader` module documents the search order).
//!
//! The list is in the order a start touches files, each path once: the command (every
//! symlink followed, then the file), then for an ELF file its interpreter, the loader's
//! files (`/etc/ld.so.preload`, `/etc/ld.so.cache`, `/etc/ld.so.conf` and its includes,
//! or musl's `/etc/ld-musl-<arch>.path`) and its libraries breadth-first in `DT_NEEDED`
//! order; for a script, the script and then its interpreter's own list. Symlinks are listed before
//! their targets, so a landmark placed after the list covers both.
//!
//! Everything read is untrusted: paths never leave the image's root, symlink chains,
//! interpreter chains, include nesting and library graphs are bounded, cycles end, and
//! one replay makes at most [`MAX_LOOKUPS`] calls into the [`RootFs`].

mod loader;
mod rootfs;

use std::cell::Cell;
use std::collections::HashSet;

pub use loader::{MAX_LIBRARY_NAMES, MAX_OBJECTS, loader_neighbours};
pub use rootfs::{
    FileKind, MAX_PATH_LEN, MAX_SYMLINKS, MemRootFs, Resolved, RootFs, normalize, resolve,
};

use crate::elf::{ElfError, parse_elf};
use crate::errdefs::ErrorKind;
use crate::read_at::ReadAt;

/// `#!` interpreters followed at most, as Linux's `BINPRM_MAX_RECURSION` (plus one for an
/// `env` indirection).
pub const MAX_INTERPRETERS: usize = 5;
/// The `#!` line is read up to this many bytes, as Linux's `BINPRM_BUF_SIZE`.
pub const MAX_SHEBANG_LEN: usize = 256;
/// Path lookups one replay makes at most: bounds the work a hostile image can cause
/// (symlink chains × search directories × library names), far above a real start's
/// few thousand.
pub const MAX_LOOKUPS: u64 = 1 << 20;
/// `PATH` when the config sets none: the default of Docker, containerd and runc.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The parts of an OCI image config (`config.Entrypoint`, `Cmd`, `Env`, `WorkingDir`) that
/// decide what a container execs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfigLite {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`: appended to the entrypoint, or the whole command without one.
    pub cmd: Vec<String>,
    /// `Env`: `NAME=value` strings; `PATH` and `LD_LIBRARY_PATH` are used.
    pub env: Vec<String>,
    /// `WorkingDir`; `/` when unset or empty.
    pub working_dir: Option<String>,
}

/// Why the start of an image cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum PrefetchError {
    /// A command without `/` is in no `PATH` directory.
    #[error("command {name:?} not found in PATH {path:?}")]
    CommandNotFound {
        /// The command.
        name: String,
        /// The `PATH` searched.
        path: String,
    },
    /// A path (command, interpreter) does not exist in the image.
    #[error("{path:?} does not exist in the image")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// A command or interpreter names something that is not a regular file.
    #[error("{path:?} is not a regular file and cannot be executed")]
    NotExecutable {
        /// The resolved path.
        path: String,
    },
    /// Resolving a path followed more than [`MAX_SYMLINKS`] symlinks.
    #[error("too many levels of symbolic links resolving {path:?} (limit {MAX_SYMLINKS})")]
    SymlinkLoop {
        /// The path being resolved.
        path: String,
    },
    /// `#!` interpreters nest deeper than [`MAX_INTERPRETERS`].
    #[error("interpreter chain through {path:?} is deeper than {MAX_INTERPRETERS}")]
    TooManyInterpreters {
        /// The script at which the limit was hit.
        path: String,
    },
    /// A process would load more than [`MAX_OBJECTS`] shared objects, or search for more
    /// than [`MAX_LIBRARY_NAMES`] library names.
    #[error("library closure too large: more than {limit} {what}")]
    LibraryGraphTooLarge {
        /// What is counted.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// Replaying the start took more than [`MAX_LOOKUPS`] path lookups.
    #[error("replaying the start needs more than {limit} path lookups")]
    TooMuchWork {
        /// The bound.
        limit: u64,
    },
    /// An executable or interpreter is a malformed ELF file.
    #[error("executable {path:?}: {source}")]
    Elf {
        /// The resolved path.
        path: String,
        /// What is wrong with it.
        #[source]
        source: ElfError,
    },
    /// Reading a file of the image failed.
    #[error("reading {path:?} in the image: {source}")]
    Read {
        /// The resolved path.
        path: String,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

impl PrefetchError {
    /// The error category.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PrefetchError::CommandNotFound { .. } | PrefetchError::NotFound { .. } => {
                ErrorKind::NotFound
            }
            PrefetchError::NotExecutable { .. }
            | PrefetchError::SymlinkLoop { .. }
            | PrefetchError::TooManyInterpreters { .. }
            | PrefetchError::LibraryGraphTooLarge { .. }
            | PrefetchError::TooMuchWork { .. } => ErrorKind::InvalidArgument,
            PrefetchError::Elf { source, .. } => source.kind(),
            PrefetchError::Read { .. } => ErrorKind::Internal,
        }
    }
}

/// An ordered set of absolute paths.
#[derive(Debug, Default)]
struct FileList {
    paths: Vec<String>,
    seen: HashSet<String>,
}

impl FileList {
    fn add(&mut self, path: &str) {
        if self.seen.insert(path.to_owned()) {
            self.paths.push(path.to_owned());
        }
    }

    /// The symlinks followed, then the file they lead to.
    fn add_resolved(&mut self, r: &Resolved) {
        for link in &r.symlinks {
            self.add(link);
        }
        self.add(&r.path);
    }
}

/// The files a container of this image reads at start, in the order it reads them (see the
/// module docs). An image without a command has an empty list.
///
/// Errors: the command, a `#!` interpreter or an ELF interpreter missing
/// ([`PrefetchError::CommandNotFound`], [`PrefetchError::NotFound`]), malformed
/// ([`PrefetchError::Elf`]), or caught in a loop; a missing or malformed *library* is
/// skipped instead, since the rest of the list is still what the start reads first.
pub fn prioritized_files(
    fs: &dyn RootFs,
    config: &ImageConfigLite,
) -> Result<Vec<String>, PrefetchError> {
    let argv: Vec<String> = config
        .entrypoint
        .iter()
        .chain(&config.cmd)
        .cloned()
        .collect();
    if argv.is_empty() {
        return Ok(Vec::new());
    }
    let var = |name: &str| {
        config.env.iter().rev().find_map(|e| {
            e.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        })
    };
    let cwd = normalize("/", config.working_dir.as_deref().unwrap_or("/"));
    let ld_library_path = var("LD_LIBRARY_PATH")
        .map(|p| {
            p.split([':', ';'])
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let budget = Budgeted {
        inner: fs,
        used: Cell::new(0),
    };
    let start = Start {
        fs: &budget,
        path: var("PATH").unwrap_or_else(|| DEFAULT_PATH.to_owned()),
        env: loader::LoaderEnv {
            cwd,
            ld_library_path,
        },
    };
    let mut out = FileList::default();
    let result = start.exec(argv, Lookup::Command, 0, &mut out);
    // An exhausted budget makes lookups fail, which may surface as any error, or none.
    if budget.used.get() > MAX_LOOKUPS {
        return Err(PrefetchError::TooMuchWork { limit: MAX_LOOKUPS });
    }
    result.map(|()| out.paths)
}

/// A [`RootFs`] that answers "absent" once [`MAX_LOOKUPS`] lookups have been made.
struct Budgeted<'a> {
    inner: &'a dyn RootFs,
    used: Cell<u64>,
}

impl Budgeted<'_> {
    fn spend(&self) -> bool {
        self.used.set(self.used.get().saturating_add(1));
        self.used.get() <= MAX_LOOKUPS
    }
}

impl RootFs for Budgeted<'_> {
    fn lookup(&self, path: &str) -> Option<FileKind> {
        if self.spend() {
            self.inner.lookup(path)
        } else {
            None
        }
    }

    fn open(&self, path: &str) -> Option<Box<dyn ReadAt + '_>> {
        if self.spend() {
            self.inner.open(path)
        } else {
            None
        }
    }

    fn read_dir(&self, path: &str) -> Vec<String> {
        if self.spend() {
            self.inner.read_dir(path)
        } else {
            Vec::new()
        }
    }
}

/// How `argv[0]` names the file to exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Searched in `PATH` unless it contains `/` (the runtime, `env`).
    Command,
    /// A path, relative to the working directory (the kernel, for `#!`).
    Path,
}

struct Start<'a> {
    fs: &'a dyn RootFs,
    path: String,
    env: loader::LoaderEnv,
}

impl Start<'_> {
    fn exec(
        &self,
        argv: Vec<String>,
        lookup: Lookup,
        depth: usize,
        out: &mut FileList,
    ) -> Result<(), PrefetchError> {
        let Some(name) = argv.first() else {
            return Ok(());
        };
        if depth >= MAX_INTERPRETERS {
            return Err(PrefetchError::TooManyInterpreters { path: name.clone() });
        }
        let file = match lookup {
            Lookup::Command if !name.contains('/') => self.search_path(name)?,
            _ => resolve(self.fs, &self.env.cwd, name)?,
        };
        if file.kind != FileKind::Regular {
            return Err(PrefetchError::NotExecutable { path: file.path });
        }
        out.add_resolved(&file);
        let reader = self
            .fs
            .open(&file.path)
            .ok_or_else(|| PrefetchError::NotFound {
                path: file.path.clone(),
            })?;
        let elf = parse_elf(&*reader).map_err(|source| PrefetchError::Elf {
            path: file.path.clone(),
            source,
        })?;
        if let Some(info) = elf {
            loader::load(self.fs, &file, info, &self.env, out)?;
            // `env` (or busybox invoked as `env`) execs its command through PATH in turn.
            if basename(name) == "env"
                && let Some(next) = env_command(&argv[1..])
            {
                self.exec(next, Lookup::Command, depth + 1, out)?;
            }
            return Ok(());
        }
        let Some((interp, arg)) = shebang(&*reader).map_err(|source| PrefetchError::Read {
            path: file.path.clone(),
            source,
        })?
        else {
            return Ok(()); // not executable by the kernel; nothing more is read
        };
        let mut next = vec![interp];
        // The kernel passes the rest of the line as one argument; `env` is told to split it
        // (`-S`) in practice, and splitting it always reaches the same command.
        if basename(&next[0]) == "env" {
            next.extend(
                arg.iter()
                    .flat_map(|a| a.split_whitespace())
                    .map(str::to_owned),
            );
        } else {
            next.extend(arg);
        }
        next.push(file.path.clone());
        self.exec(next, Lookup::Path, depth + 1, out)
    }

    /// The first regular file named `name` in a `PATH` directory.
    fn search_path(&self, name: &str) -> Result<Resolved, PrefetchError> {
        for dir in self.path.split(':') {
            // An empty entry is the working directory, as in execvp.
            let dir = if dir.is_empty() { "." } else { dir };
            // Any failure moves on to the next entry, as runc's `exec.LookPath` does.
            if let Ok(r) = resolve(self.fs, &self.env.cwd, &format!("{dir}/{name}"))
                && r.kind == FileKind::Regular
            {
                return Ok(r);
            }
        }
        Err(PrefetchError::CommandNotFound {
            name: name.to_owned(),
            path: self.path.clone(),
        })
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The command `env ARGS…` would exec: options, `NAME=value` assignments and `--` skipped,
/// `-S STRING` split into words. `None` if only assignments remain (env then prints).
fn env_command(args: &[String]) -> Option<Vec<String>> {
    let mut words: Vec<String> = args.iter().rev().cloned().collect();
    while let Some(w) = words.pop() {
        if w == "--" {
            break;
        } else if let Some(rest) = w
            .strip_prefix("--split-string=")
            .or_else(|| w.strip_prefix("-S"))
        {
            words.extend(rest.split_whitespace().rev().map(str::to_owned));
        } else if matches!(
            w.as_str(),
            "-u" | "--unset" | "-C" | "--chdir" | "--split-string"
        ) {
            if w == "--split-string" {
                let s = words.pop().unwrap_or_default();
                words.extend(s.split_whitespace().rev().map(str::to_owned));
            } else {
                words.pop();
            }
        } else if (w.starts_with('-') && w.len() > 1) || w.contains('=') {
            // a flag (-i, -0, --ignore-environment, -uNAME) or an assignment
        } else {
            words.push(w);
            break;
        }
    }
    words.reverse();
    (!words.is_empty()).then_some(words)
}

/// The `#!interpreter [argument]` line of a script, as the kernel reads it: at most
/// [`MAX_SHEBANG_LEN`] bytes, the interpreter up to the first blank, the rest (trimmed) as
/// one optional argument. `None` if the file does not start with `#!`.
fn shebang(file: &dyn ReadAt) -> std::io::Result<Option<(String, Option<String>)>> {
    let head = file.read_range(0, MAX_SHEBANG_LEN as u64)?;
    let Some(line) = head.strip_prefix(b"#!") else {
        return Ok(None);
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Ok(None);
    };
    let line = line.trim_matches([' ', '\t', '\r']);
    if line.is_empty() {
        return Ok(None);
    }
    Ok(Some(match line.split_once([' ', '\t']) {
        Some((interp, arg)) => {
            let arg = arg.trim_matches([' ', '\t', '\r']);
            (interp.to_owned(), (!arg.is_empty()).then(|| arg.to_owned()))
        }
        None => (line.to_owned(), None),
    }))
}

#[cfg(test)]
mod tests;
