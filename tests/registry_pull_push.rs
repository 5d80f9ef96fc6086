//! `strata pull` and `strata push` against a real registry (Debian's distribution 2.8),
//! with Basic auth, the Bearer token flow, and a fault-injecting proxy in between.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use strata_testdata::registry::{
    AnonymousAccess, Fault, FaultProxy, FaultRule, GatewayConfig, RegistryServer, TokenAuthGateway,
};
use strata_testdata::{BuiltImage, ImageSpec, LayerSpec, Platform};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // An empty docker config: never pick up the machine's credentials.
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        Self { dir }
    }

    fn root(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn strata(&self, root: &str, args: &[&str]) -> Output {
        Command::new(STRATA)
            .arg("--root")
            .arg(self.root(root))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path())
            .env("STRATA_HOSTS_DIR", self.dir.path().join("no-hosts"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn err(out: Output) -> String {
    assert!(
        !out.status.success(),
        "strata unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// A host-platform image with one big random layer (so transfers can be broken mid-way).
fn big_image(seed: u64, layer_mib: u64) -> BuiltImage {
    ImageSpec::new(Platform::linux_amd64())
        .layer(LayerSpec::new().random_file("data/big.bin", 0o644, seed, layer_mib << 20))
        .layer(LayerSpec::new().file("etc/hello", 0o644, "hello\n"))
        .build()
        .unwrap()
}

fn blobs_of(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("content/blobs/sha256"))
        .map(|d| {
            d.map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn image_blobs(img: &BuiltImage) -> Vec<String> {
    let mut v = vec![img.manifest.digest.clone(), img.config.digest.clone()];
    v.extend(img.layers.iter().map(|l| l.digest.clone()));
    v.sort();
    v
}

#[test]
fn import_push_pull_round_trip_keeps_every_digest() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let layout = env.dir.path().join("layout");
    let summary = strata_testdata::write_oci_layout(
        &layout,
        &[(
            "docker.io/library/sample:1.0",
            strata_testdata::sample_multiplatform(5).into(),
        )],
    )
    .unwrap();
    ok(env.strata("a", &["image", "import", layout.to_str().unwrap()]));
    let target = format!("{}/team/sample:1.0", registry.host());
    let pushed = ok(env.strata(
        "a",
        &[
            "push",
            "--plain-http",
            &target,
            "docker.io/library/sample:1.0",
        ],
    ));
    assert_eq!(pushed.trim(), summary.refs[0].target.digest);

    // Pull each platform into a fresh root: every blob equals the layout's.
    for (i, platform) in ["linux/amd64", "linux/arm64/v8"].iter().enumerate() {
        let root = format!("b{i}");
        let pulled = ok(env.strata(
            &root,
            &["pull", "--plain-http", "--platform", platform, &target],
        ));
        assert_eq!(
            pulled.trim(),
            summary.refs[0].target.digest,
            "same index digest"
        );
        let img = &summary.refs[0].images[i];
        let mut want = vec![
            summary.refs[0].target.digest.clone(),
            img.manifest.digest.clone(),
            img.config.digest.clone(),
        ];
        want.extend(img.layers.iter().map(|l| l.digest.clone()));
        want.sort();
        want.dedup();
        assert_eq!(blobs_of(&env.root(&root)), want, "{platform}");
        ok(env.strata(&root, &["content", "verify"]));
        let images = ok(env.strata(&root, &["image", "ls", "-q"]));
        assert_eq!(images.trim(), target);
    }

    // A second push to another repository mounts the blobs instead of uploading them.
    ok(env.strata("b0", &["image", "ls"]));
    let copy = format!("{}/other/sample:2", registry.host());
    let out = env.strata(
        "b0",
        &[
            "push",
            "--plain-http",
            "--platform",
            "linux/amd64",
            &copy,
            &target,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("mounted from another repository"),
        "{stderr}"
    );

    // Chunked upload (PATCH requests + closing PUT) of blobs with no known source
    // repository, so nothing can be mounted; pulled back identical.
    let chunked = format!("{}/chunked/sample:1", registry.host());
    let out = env.strata(
        "a",
        &[
            "push",
            "--plain-http",
            "--chunk-size",
            "65536",
            &chunked,
            "docker.io/library/sample:1.0",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stderr.contains("uploaded"),
        "{stderr}"
    );
    let pulled = ok(env.strata(
        "c",
        &[
            "pull",
            "--plain-http",
            "--platform",
            "linux/amd64",
            &chunked,
        ],
    ));
    assert_eq!(pulled.trim(), summary.refs[0].target.digest);
    ok(env.strata("c", &["content", "verify"]));

    // Pulling again is a no-op that still succeeds.
    let again = env.strata("b0", &["pull", "--plain-http", &target]);
    let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(
        again.status.success() && stderr.contains("already present"),
        "{stderr}"
    );
}

#[test]
fn basic_auth_from_docker_config() {
    let env = Env::new();
    let registry = RegistryServer::start_with_users(&[("alice", "s3cret")]).unwrap();
    let img = big_image(1, 1);
    registry.push_image("private/app", "v1", &img).unwrap();
    let target = format!("{}/private/app:v1", registry.host());

    let e = err(env.strata("anon", &["pull", "--plain-http", &target]));
    assert!(
        e.contains(&registry.host()) && e.to_lowercase().contains("unauthorized"),
        "{e}"
    );

    let cfg = env.dir.path().join("auth");
    std::fs::create_dir_all(&cfg).unwrap();
    let auth = base64_encode(b"alice:s3cret");
    std::fs::write(
        cfg.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let cfg_file = cfg.join("config.json");
    ok(env.strata(
        "authed",
        &[
            "pull",
            "--plain-http",
            "--docker-config",
            cfg_file.to_str().unwrap(),
            &target,
        ],
    ));
    assert_eq!(blobs_of(&env.root("authed")), image_blobs(&img));
    let copy = format!("{}/private/copy:v1", registry.host());
    ok(env.strata(
        "authed",
        &[
            "push",
            "--plain-http",
            "--docker-config",
            cfg_file.to_str().unwrap(),
            &copy,
            &target,
        ],
    ));
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn bearer_token_expiring_mid_pull_is_refreshed() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let img = big_image(2, 24);
    registry.push_image("team/app", "1", &img).unwrap();
    let gateway = TokenAuthGateway::start(
        registry.addr(),
        GatewayConfig::default()
            .anonymous(AnonymousAccess::Pull)
            .token_lifetime(Duration::from_millis(1500)),
    )
    .unwrap();
    // Slow the big layer down so the pull outlives the first token.
    let proxy = FaultProxy::start(gateway.addr()).unwrap();
    proxy.set_faults(vec![
        FaultRule::new(Fault::Slow {
            bytes_per_sec: 8 << 20,
        })
        .blobs(),
    ]);
    let target = format!("{}/team/app:1", proxy.host());
    let start = Instant::now();
    ok(env.strata(
        "r",
        &[
            "pull",
            "--plain-http",
            "--max-concurrent-downloads",
            "1",
            &target,
        ],
    ));
    assert!(
        start.elapsed() > Duration::from_millis(1500),
        "the pull outlived a token"
    );
    assert!(
        gateway.tokens_issued() >= 2,
        "token refreshed: {} issued",
        gateway.tokens_issued()
    );
    assert_eq!(blobs_of(&env.root("r")), image_blobs(&img));
}

/// A registry behind a fault proxy, holding `img` at `team/app:1`.
struct Faulty {
    _registry: RegistryServer,
    proxy: FaultProxy,
    target: String,
}

fn faulty(img: &BuiltImage) -> Faulty {
    let registry = RegistryServer::start().unwrap();
    registry.push_image("team/app", "1", img).unwrap();
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    let target = format!("{}/team/app:1", proxy.host());
    Faulty {
        _registry: registry,
        proxy,
        target,
    }
}

#[test]
fn server_errors_are_retried() {
    let env = Env::new();
    let img = big_image(3, 2);
    let f = faulty(&img);
    f.proxy.set_faults(vec![
        FaultRule::new(Fault::Status(500)).blobs().first(2),
        FaultRule::new(Fault::Status(503))
            .path("/manifests/")
            .first(1),
    ]);
    ok(env.strata("r", &["pull", "--plain-http", &f.target]));
    assert_eq!(blobs_of(&env.root("r")), image_blobs(&img));
    assert!(
        f.proxy
            .requests()
            .iter()
            .filter(|r| r.status >= 500)
            .count()
            >= 3
    );
}

#[test]
fn broken_transfers_resume_with_range() {
    for (name, fault) in [
        (
            "reset",
            Fault::ResetMidBody {
                after_bytes: 3 << 20,
            },
        ),
        (
            "truncated",
            Fault::TruncateBody {
                after_bytes: 3 << 20,
            },
        ),
    ] {
        let env = Env::new();
        let img = big_image(4, 16);
        let f = faulty(&img);
        let layer = img.layers[0].digest.clone();
        f.proxy
            .set_faults(vec![FaultRule::new(fault).path(&layer).first(1)]);
        ok(env.strata("r", &["pull", "--plain-http", &f.target]));
        assert_eq!(blobs_of(&env.root("r")), image_blobs(&img), "{name}");
        let gets: Vec<_> = f
            .proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains(&layer))
            .collect();
        assert!(gets.len() >= 2, "{name}: {gets:?}");
        let resumed = gets
            .iter()
            .skip(1)
            .find_map(|r| r.range.clone())
            .unwrap_or_default();
        assert!(
            resumed.starts_with("bytes=") && !resumed.starts_with("bytes=0-"),
            "{name}: resumed with {resumed:?}"
        );
        ok(env.strata("r", &["content", "verify"]));
    }
}

#[test]
fn resume_after_range_ignored_restarts_cleanly() {
    let env = Env::new();
    let img = big_image(5, 16);
    let f = faulty(&img);
    let layer = img.layers[0].digest.clone();
    f.proxy.set_faults(vec![
        FaultRule::new(Fault::ResetMidBody {
            after_bytes: 2 << 20,
        })
        .path(&layer)
        .first(1),
        FaultRule::new(Fault::IgnoreRange).path(&layer),
    ]);
    ok(env.strata("r", &["pull", "--plain-http", &f.target]));
    assert_eq!(blobs_of(&env.root("r")), image_blobs(&img));
}

#[test]
fn corrupted_bytes_are_never_stored_and_the_error_names_the_blob() {
    let env = Env::new();
    let img = big_image(6, 2);
    let f = faulty(&img);
    let layer = img.layers[0].digest.clone();
    f.proxy.set_faults(vec![
        FaultRule::new(Fault::FlipBytes {
            offset_in_body: 1000,
            count: 4,
        })
        .path(&layer),
    ]);
    let e = err(env.strata("r", &["pull", "--plain-http", &f.target]));
    assert!(e.contains(&layer) && e.contains("digest mismatch"), "{e}");
    assert!(
        !blobs_of(&env.root("r")).contains(&layer),
        "corrupt layer stored"
    );
    assert!(
        ok(env.strata("r", &["image", "ls", "-q"]))
            .trim()
            .is_empty(),
        "no image record"
    );
    let active = ok(env.strata("r", &["content", "active"]));
    assert_eq!(active.lines().count(), 1, "no ingest left behind: {active}");

    // A one-off flip is retried and heals.
    let env = Env::new();
    f.proxy.set_faults(vec![
        FaultRule::new(Fault::FlipBytes {
            offset_in_body: 10,
            count: 1,
        })
        .path(&layer)
        .first(1),
    ]);
    ok(env.strata("r", &["pull", "--plain-http", &f.target]));
    assert_eq!(blobs_of(&env.root("r")), image_blobs(&img));
}

#[test]
fn killed_pull_resumes_in_a_new_process() {
    let env = Env::new();
    let img = big_image(7, 24);
    let f = faulty(&img);
    let layer = img.layers[0].digest.clone();
    f.proxy.set_faults(vec![
        FaultRule::new(Fault::Slow {
            bytes_per_sec: 8 << 20,
        })
        .path(&layer)
        .first(1),
    ]);
    let mut child = Command::new(STRATA)
        .arg("--root")
        .arg(env.root("r"))
        .args(["pull", "--plain-http", &f.target])
        .env("DOCKER_CONFIG", env.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ingest = env.root("r").join("content/ingest");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let written: u64 = std::fs::read_dir(&ingest)
            .map(|d| {
                d.filter_map(|e| std::fs::metadata(e.ok()?.path().join("data")).ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if written >= 4 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the pull never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    ok(env.strata("r", &["pull", "--plain-http", &f.target]));
    assert_eq!(blobs_of(&env.root("r")), image_blobs(&img));
    let gets: Vec<_> = f
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&layer))
        .collect();
    let last = gets.last().unwrap();
    assert!(
        last.range
            .as_deref()
            .is_some_and(|r| !r.starts_with("bytes=0-")),
        "resumed with Range: {gets:?}"
    );
}

#[test]
fn single_platform_image_of_another_platform_is_not_pulled() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let img = ImageSpec::new(Platform::linux_amd64())
        .layer(LayerSpec::new().file("etc/hello", 0o644, "hello\n"))
        .build()
        .unwrap();
    registry.push_image("team/app", "1", &img).unwrap();
    let target = format!("{}/team/app:1", registry.host());

    // Not an index: the platform is in the config, and it does not match.
    let stderr = err(env.strata(
        "r",
        &[
            "pull",
            "--plain-http",
            "--no-unpack",
            "--platform",
            "linux/arm64",
            &target,
        ],
    ));
    assert!(
        stderr.contains("linux/amd64") && stderr.contains("linux/arm64"),
        "{stderr}"
    );
    let images = ok(env.strata("r", &["image", "ls", "-q"]));
    assert_eq!(images.trim(), "", "no image recorded");

    // A typo is rejected before anything is fetched.
    let stderr = err(env.strata(
        "r",
        &["pull", "--plain-http", "--platform", "linux/amd46", &target],
    ));
    assert!(
        stderr.contains("linux/amd46") && stderr.contains("unknown architecture"),
        "{stderr}"
    );

    // The matching platform still pulls.
    let pulled = ok(env.strata(
        "r",
        &[
            "pull",
            "--plain-http",
            "--no-unpack",
            "--platform",
            "linux/amd64",
            &target,
        ],
    ));
    assert_eq!(pulled.trim(), img.manifest.digest);
}
