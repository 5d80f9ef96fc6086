//! The OCI runtime spec of a container started from an image, as docker and nerdctl
//! resolve it and containerd's defaults shape it: the command is the entrypoint followed
//! by the given arguments, or by the image's `Cmd` when none are given; the environment is
//! the image's with `PATH` defaulted and `-e` overrides applied; the working directory is
//! `-w`, else the image's, else `/`; the user is `--user`, else the image's, resolved in
//! the image's own `/etc/passwd` and `/etc/group`. The container shares the host's network
//! (and with it the host's `/etc/resolv.conf` and `/etc/hosts`, bound read-only) and UTS
//! namespaces; it gets its own pid, ipc, mount and cgroup namespaces, containerd's default
//! capabilities, `noNewPrivileges`, and the usual `/proc`, `/dev`, `/sys` mounts.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use super::RunError;
use super::user::{ResolvedUser, resolve_user};

/// The default `PATH` (containerd's, when the image sets none).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capabilities.
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// What the image's config says about how to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageProcess {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
}

impl ImageProcess {
    /// Reads the `config` object of an image config document.
    ///
    /// # Errors
    ///
    /// The document is not an image config.
    pub fn from_config(bytes: &[u8]) -> Result<ImageProcess, RunError> {
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(bytes)
            .map_err(|e| RunError::Image(format!("image config: {e}")))?;
        let Some(c) = config.config() else {
            return Ok(ImageProcess::default());
        };
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Ok(ImageProcess {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: non_empty(c.working_dir()),
            user: non_empty(c.user()),
        })
    }
}

/// What the command line adds or overrides.
#[derive(Debug, Clone, Default)]
pub struct ProcessOverrides {
    /// Arguments after the image: replace `Cmd`.
    pub args: Vec<String>,
    /// `-e K=V` (or `-e K`: the host's value).
    pub env: Vec<String>,
    /// `-w DIR`.
    pub working_dir: Option<String>,
    /// `--user U`.
    pub user: Option<String>,
}

/// A bind mount into the container.
#[derive(Debug, Clone)]
pub struct BindMount {
    /// The host path.
    pub source: PathBuf,
    /// The path in the container.
    pub destination: String,
    /// Read-only.
    pub read_only: bool,
}

/// The command a container runs: the entrypoint, then the given arguments or the image's
/// `Cmd`.
///
/// # Errors
///
/// Neither the image nor the command line gives a command.
pub fn command(
    image: &ImageProcess,
    overrides: &ProcessOverrides,
) -> Result<Vec<String>, RunError> {
    let mut args = image.entrypoint.clone();
    if overrides.args.is_empty() {
        args.extend(image.cmd.iter().cloned());
    } else {
        args.extend(overrides.args.iter().cloned());
    }
    if args.is_empty() {
        return Err(RunError::NoCommand);
    }
    Ok(args)
}

/// The environment: the image's, `PATH` defaulted, then the overrides (a bare `K` takes
/// the host's value, or is dropped if the host has none).
pub fn environment(image: &ImageProcess, overrides: &ProcessOverrides) -> Vec<String> {
    let mut env: Vec<String> = image.env.clone();
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_owned();
    if !env.iter().any(|kv| key(kv) == "PATH") {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    for given in &overrides.env {
        let entry = if given.contains('=') {
            Some(given.clone())
        } else {
            std::env::var(given).ok().map(|v| format!("{given}={v}"))
        };
        let k = key(given);
        env.retain(|kv| key(kv) != k);
        if let Some(entry) = entry {
            env.push(entry);
        }
    }
    env
}

/// The runtime spec of a container over `rootfs` (the mounted snapshot).
///
/// # Errors
///
/// No command, a user the image does not know, or a spec the builders refuse.
pub fn build_spec(
    rootfs: &Path,
    image: &ImageProcess,
    overrides: &ProcessOverrides,
    binds: &[BindMount],
    cgroups_path: &str,
) -> Result<Spec, RunError> {
    let invalid = |e: oci_spec::OciSpecError| RunError::Spec(e.to_string());
    let args = command(image, overrides)?;
    let user_text = overrides.user.as_ref().or(image.user.as_ref());
    let ResolvedUser {
        uid,
        gid,
        additional_gids,
    } = match user_text {
        Some(u) => resolve_user(rootfs, u)?,
        None => ResolvedUser::default(),
    };
    let cwd = overrides
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".to_owned());
    if !cwd.starts_with('/') {
        return Err(RunError::Spec(format!(
            "working directory {cwd:?}: not absolute"
        )));
    }
    let caps: std::collections::HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let mut user = UserBuilder::default().uid(uid).gid(gid);
    if !additional_gids.is_empty() {
        user = user.additional_gids(additional_gids);
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user.build().map_err(invalid)?)
        .args(args)
        .env(environment(image, overrides))
        .cwd(cwd)
        .no_new_privileges(true)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .build()
                .map_err(invalid)?,
        )
        .rlimits(
            Spec::default()
                .process()
                .as_ref()
                .and_then(|p| p.rlimits().clone())
                .unwrap_or_default(),
        )
        .build()
        .map_err(invalid)?;
    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_hostname(None);
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs.to_path_buf())
            .readonly(false)
            .build()
            .map_err(invalid)?,
    ));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for file in ["/etc/resolv.conf", "/etc/hosts"] {
        if Path::new(file).exists() {
            mounts.push(bind(Path::new(file), file, true).map_err(invalid)?);
        }
    }
    for b in binds {
        mounts.push(bind(&b.source, &b.destination, b.read_only).map_err(invalid)?);
    }
    spec.set_mounts(Some(mounts));
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()
    .map_err(invalid)?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_namespaces(Some(namespaces));
        linux.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    }
    Ok(spec)
}

fn bind(
    source: &Path,
    destination: &str,
    read_only: bool,
) -> Result<oci_spec::runtime::Mount, oci_spec::OciSpecError> {
    let mut options = vec!["rbind".to_owned(), "nosuid".to_owned(), "nodev".to_owned()];
    options.push(if read_only { "ro" } else { "rw" }.to_owned());
    MountBuilder::default()
        .destination(PathBuf::from(destination))
        .typ("bind")
        .source(source.to_path_buf())
        .options(options)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageProcess {
        ImageProcess {
            entrypoint: vec!["/bin/entry".into()],
            cmd: vec!["--default".into()],
            env: vec!["A=1".into(), "B=2".into()],
            working_dir: Some("/srv".into()),
            user: None,
        }
    }

    #[test]
    fn the_command_and_environment_resolve_as_docker_does() {
        let mut o = ProcessOverrides::default();
        assert_eq!(command(&image(), &o).unwrap(), ["/bin/entry", "--default"]);
        o.args = vec!["x".into()];
        assert_eq!(command(&image(), &o).unwrap(), ["/bin/entry", "x"]);
        assert!(matches!(
            command(&ImageProcess::default(), &ProcessOverrides::default()),
            Err(RunError::NoCommand)
        ));
        // SAFETY: a test-only variable no other test reads.
        unsafe { std::env::set_var("STRATA_RUN_TEST_HOST", "h") };
        o.env = vec![
            "B=3".into(),
            "STRATA_RUN_TEST_HOST".into(),
            "STRATA_RUN_TEST_UNSET".into(),
        ];
        assert_eq!(
            environment(&image(), &o),
            [DEFAULT_PATH, "A=1", "B=3", "STRATA_RUN_TEST_HOST=h"]
        );
    }

    #[test]
    fn the_spec_has_the_host_network_and_containerds_defaults() {
        let root = tempfile::tempdir().unwrap();
        let mut o = ProcessOverrides {
            working_dir: Some("/work".into()),
            ..Default::default()
        };
        let binds = [BindMount {
            source: "/tmp".into(),
            destination: "/data".into(),
            read_only: true,
        }];
        let spec = build_spec(root.path(), &image(), &o, &binds, "/strata/c1").unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["process"]["cwd"], "/work");
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["process"]["user"]["uid"], 0);
        let caps = json["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&"CAP_NET_RAW".into()));
        let ns: Vec<&str> = json["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!ns.contains(&"network") && !ns.contains(&"uts"), "{ns:?}");
        assert!(ns.contains(&"pid") && ns.contains(&"mount"));
        let mounts = json["mounts"].as_array().unwrap();
        let data = mounts.iter().find(|m| m["destination"] == "/data").unwrap();
        assert!(data["options"].as_array().unwrap().contains(&"ro".into()));
        assert!(mounts.iter().any(|m| m["destination"] == "/proc"));
        assert_eq!(json["linux"]["cgroupsPath"], "/strata/c1");
        assert!(json.get("hostname").is_none());
        o.working_dir = Some("relative".into());
        assert!(build_spec(root.path(), &image(), &o, &[], "/x").is_err());
    }
}
