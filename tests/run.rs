//! `strata run` with the real runc over Strata's snapshots, from a real registry: the
//! container's output, exit status, environment, working directory and user; signals
//! passed on; host and image volumes; `ps` and `rm`; the cleanup after `kill -9` of
//! `strata run`; errors naming their cause. Needs root, runc and docker-registry.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use strata_testdata::LayerSpec;
use strata_testdata::registry::RegistryServer;

mod serve_support;
mod support;

use serve_support::{KillHolders, UnmountOnDrop, estargz_and_daemon, runnable_image};
use support::mounts::mounts_under;
use support::{Env, STRATA};

const RUNC: &str = "/usr/sbin/runc";

/// A runnable image (dash, `/tmp`) with a user `app` (1000:1000, also in group `staff`).
fn push_image(registry: &RegistryServer) -> String {
    let users = LayerSpec::new()
        .created_by("users")
        .file(
            "etc/passwd",
            0o644,
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
        )
        .file(
            "etc/group",
            0o644,
            "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
        )
        .file("etc/greeting", 0o644, "hello from the image\n");
    let image = runnable_image(vec![users]).build().unwrap();
    registry.push_image("run/app", "1", &image).unwrap();
    format!("{}/run/app:1", registry.host())
}

fn run(env: &Env, args: &[&str]) -> Output {
    env.strata("root", &[&["run", "--plain-http"][..], args].concat())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Nothing of container `id` is left: no bundle, no snapshot, no mount.
fn assert_gone(env: &Env, id_prefix: &str) {
    let containers = env.path("root/containers");
    let left: Vec<String> = std::fs::read_dir(&containers)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(id_prefix))
        .collect();
    assert!(left.is_empty(), "bundles left: {left:?}");
    let snapshots = env.strata_ok("root", &["snapshot", "ls"]);
    assert!(!snapshots.contains("strata-run:"), "{snapshots}");
    assert!(mounts_under(&env.path("root")).is_empty(), "mounts left");
}

fn require() {
    strata_testdata::host::require_root("containers need root");
    strata_testdata::host::require_tools(&[RUNC]);
}

#[test]
#[ignore = "needs root, runc and docker-registry: make test runs it"]
fn a_container_runs_with_its_status_env_workdir_and_user_and_leaves_nothing() {
    require();
    let env = Env::new();
    let _unmount = UnmountOnDrop(env.dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let reference = push_image(&registry);

    let out = run(
        &env,
        &[
            "--rm",
            "-e",
            "A=from-e",
            "-w",
            "/tmp",
            &reference,
            "sh",
            "-c",
            "echo $A; echo $PATH; pwd; read g < /etc/greeting; echo $g; exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "from-e\n/bin\n/tmp\nhello from the image\n"
    );
    assert_gone(&env, "strata-");

    // The user, resolved in the image; its supplementary group too.
    let status = "while read k v rest; do case $k in Uid:|Gid:|Groups:) echo $k $v $rest;; esac; done < /proc/self/status";
    let out = run(
        &env,
        &["--rm", "--user", "app", &reference, "sh", "-c", status],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = text(&out.stdout);
    assert!(seen.contains("Uid: 1000"), "{seen}");
    assert!(seen.contains("Gid: 1000"), "{seen}");
    assert!(seen.contains("Groups: 50"), "{seen}");

    // Errors name their cause and leave nothing.
    let out = run(
        &env,
        &["--rm", "--user", "nobody", &reference, "sh", "-c", "true"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("user \"nobody\": not in the image's /etc/passwd"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&env, &["--rm", &reference, "/no/such/binary"]);
    assert!(!out.status.success());
    assert_gone(&env, "strata-");

    // Without --rm the container stays until `strata rm`.
    let out = run(&env, &["--name", "kept", &reference, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let ps = env.strata_ok("root", &["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("kept") && l.contains("exited (3)")),
        "{ps}"
    );
    assert!(
        env.strata_ok("root", &["snapshot", "ls"])
            .contains("strata-run:kept")
    );
    assert!(mounts_under(&env.path("root/containers")).is_empty());
    env.strata_ok("root", &["rm", "kept"]);
    assert_gone(&env, "kept");
    assert!(!env.strata_ok("root", &["ps"]).contains("kept"));
}

#[test]
#[ignore = "needs root, runc and docker-registry: make test runs it"]
fn signals_reach_the_container_and_a_killed_strata_run_is_cleaned_up_after() {
    require();
    let env = Env::new();
    let _unmount = UnmountOnDrop(env.dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let reference = push_image(&registry);
    env.strata_ok("root", &["pull", "--plain-http", &reference]);
    let spawn = |name: &str, script: &str| {
        Command::new(STRATA)
            .arg("--root")
            .arg(env.path("root"))
            .args([
                "run", "--rm", "--name", name, &reference, "sh", "-c", script,
            ])
            .env("DOCKER_CONFIG", env.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_running = |name: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let state = Command::new(RUNC)
                .arg("--root")
                .arg(env.path("root/runc"))
                .args(["state", name])
                .output()
                .unwrap();
            if text(&state.stdout).contains("\"running\"") {
                return;
            }
            assert!(Instant::now() < deadline, "{name} never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    // SIGTERM to strata run reaches the container, whose trap decides the status.
    let child = spawn(
        "trapped",
        "trap 'echo got TERM; exit 42' TERM; while :; do :; done",
    );
    wait_running("trapped");
    // SAFETY: kill(2) of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(42), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "got TERM\n");
    assert_gone(&env, "trapped");

    // kill -9 of strata run: the container finishes on its own; the next command that
    // looks cleans up after it.
    let mut child = spawn(
        "orphan",
        "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done",
    );
    wait_running("orphan");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = Command::new(RUNC)
            .arg("--root")
            .arg(env.path("root/runc"))
            .args(["state", "orphan"])
            .output()
            .unwrap();
        if !text(&state.stdout).contains("\"running\"") {
            break;
        }
        assert!(Instant::now() < deadline, "the orphan never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(env.path("root/containers/orphan").exists());
    let out = run(&env, &["--rm", &reference, "sh", "-c", "true"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("removed container orphan"),
        "{}",
        text(&out.stderr)
    );
    assert_gone(&env, "orphan");

    // Detached: `run -d` returns once it runs; ps, logs; stop sends TERM (the trap
    // decides the status), then the stopped container stays until rm.
    let out = run(
        &env,
        &[
            "-d",
            "--name",
            "web",
            &reference,
            "sh",
            "-c",
            "echo started; trap 'echo stopping; exit 7' TERM; while :; do :; done",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "web\n");
    let ps = env.strata_ok("root", &["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("web ") && l.contains("running")),
        "{ps}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.strata_ok("root", &["logs", "web"]).contains("started") {
        assert!(Instant::now() < deadline, "no output in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
    env.strata_ok("root", &["stop", "web"]);
    let ps = env.strata_ok("root", &["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with("web ") && l.contains("exited (7)")),
        "{ps}"
    );
    assert_eq!(
        env.strata_ok("root", &["logs", "web"]),
        "started\nstopping\n"
    );
    env.strata_ok("root", &["rm", "web"]);
    assert_gone(&env, "web");
    // A container that ignores TERM is killed after --time.
    let out = run(
        &env,
        &[
            "-d",
            "--rm",
            "--name",
            "stubborn",
            &reference,
            "sh",
            "-c",
            "trap '' TERM; while :; do :; done",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let start = Instant::now();
    let out = env.strata("root", &["stop", "--time", "1", "stubborn"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("SIGKILL"),
        "{}",
        text(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(8));
    assert_gone(&env, "stubborn");
}

#[test]
#[ignore = "needs root, runc and docker-registry: make test runs it"]
fn host_and_image_volumes_are_mounted_into_the_container() {
    require();
    let env = Env::new();
    let _unmount = UnmountOnDrop(env.dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let reference = push_image(&registry);
    let models = runnable_image(vec![LayerSpec::new().file(
        "models/config.json",
        0o644,
        "{\"layers\": 2}\n",
    )])
    .build()
    .unwrap();
    registry.push_image("run/models", "1", &models).unwrap();
    let models_ref = format!("{}/run/models:1", registry.host());
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f"), "host file\n").unwrap();

    let script = "read a < /data/f; echo $a; read b < /m/models/config.json; echo $b; \
                  (echo x > /data/new) 2>/dev/null || echo data-ro; \
                  (echo x > /m/new) 2>/dev/null || echo image-ro";
    let out = run(
        &env,
        &[
            "--rm",
            "--snapshotter",
            "erofs",
            "-v",
            &format!("{}:/data:ro", data.display()),
            "-v",
            &format!("{models_ref}:/m"),
            &reference,
            "sh",
            "-c",
            script,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "host file\n{\"layers\": 2}\ndata-ro\nimage-ro\n"
    );
    assert!(!data.join("new").exists());
    let snapshots = env.strata_ok("root", &["snapshot", "--snapshotter", "erofs", "ls"]);
    assert!(
        !snapshots.contains("strata-run:") && !snapshots.contains("strata-volume:"),
        "{snapshots}"
    );
    assert!(
        !env.strata_ok("root", &["volume", "ls"])
            .contains("containers")
    );
    assert!(mounts_under(&env.path("root")).is_empty());
    let left = std::fs::read_dir(env.path("root/containers")).map_or(0, Iterator::count);
    assert_eq!(left, 0, "bundles left");
}

/// `--snapshotter stargz`: the layers of an eStargz image are mounted lazily by `strata
/// serve`, nothing is downloaded whole, and the container reads the right bytes.
#[test]
#[ignore = "needs root, runc, FUSE and docker-registry: make test runs it"]
fn a_container_runs_lazily_through_the_daemon() {
    require();
    let env = Env::new();
    let _holders = KillHolders(env.dir.path().to_path_buf());
    let _unmount = UnmountOnDrop(env.dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let reference = push_image(&registry);
    let esgz = format!("{}/run/app:1-esgz", registry.host());
    let mut serve = estargz_and_daemon(&env, &registry.host(), &reference, &esgz);
    let socket = serve.socket.to_str().unwrap().to_owned();
    let out = run(
        &env,
        &[
            "--rm",
            "--snapshotter",
            "stargz",
            "--socket",
            &socket,
            &esgz,
            "sh",
            "-c",
            "read g < /etc/greeting; echo $g",
        ],
    );
    assert!(
        out.status.success(),
        "{}\nserve log:\n{}",
        text(&out.stderr),
        serve.log_text()
    );
    assert_eq!(text(&out.stdout), "hello from the image\n");
    let blobs = std::fs::read_dir(env.path("root/content/blobs/sha256")).map_or(0, Iterator::count);
    assert_eq!(blobs, 0, "the CLI downloaded blobs");
    let snapshots = env.strata_ok(
        "root",
        &[
            "snapshot",
            "--snapshotter",
            "stargz",
            "--socket",
            &socket,
            "ls",
        ],
    );
    assert!(!snapshots.contains("strata-run:"), "{snapshots}");
    assert!(mounts_under(&env.path("root")).is_empty());
    serve.terminate();
}
