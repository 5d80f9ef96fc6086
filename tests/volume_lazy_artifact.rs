//! `strata volume mount` of a model artifact with a chunk index, lazily, against a real
//! registry (Debian's distribution 2.8) behind a proxy that logs every request: only the
//! manifest, the index and the small tar layer are fetched at mount; reads fetch their
//! chunks by range, once, verified; mmap works; a second model version sharing the
//! weights fetches nothing; a corrupted blob gives EIO, never wrong bytes; umount leaves
//! nothing.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use strata_formats::Digest;
use strata_formats::artifact::Manifest;
use strata_testdata::registry::{FaultProxy, RegistryServer, RequestRecord};

mod serve_support;
mod support;

use serve_support::UnmountOnDrop;
use support::Env;
use support::mounts::mounts_under;

const CHUNK: usize = 4 << 20;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A safetensors-shaped weights file of `len` bytes: header length, JSON header, data.
fn weights(len: usize) -> Vec<u8> {
    seeded_weights(len, 0x9e37_79b9_7f4a_7c15)
}

/// [`weights`] whose data (nonzero `seed`) shares no chunk with other seeds'.
fn seeded_weights(len: usize, seed: u64) -> Vec<u8> {
    let header = r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let mut x = seed;
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn model_dir(dir: &Path, weights: &[u8], config: &str) {
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("tokenizer.json"), r#"{"model":{}}"#).unwrap();
    std::fs::write(dir.join("docs/guide.md"), "# guide\n").unwrap();
}

/// The digest of the weights layer of `reference`'s manifest.
fn weights_layer(registry: &RegistryServer, repo: &str, tag: &str) -> Digest {
    let resp = registry
        .client()
        .get(
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Accept", OCI_MANIFEST)],
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    let m = Manifest::parse(&resp.body).unwrap();
    m.layers
        .iter()
        .find(|l| l.media_type.contains("weight") && !l.media_type.contains("tar"))
        .unwrap_or_else(|| panic!("no raw weight layer in {:?}", m.layers))
        .digest
        .clone()
}

/// The requests for blob `digest`.
fn blob_requests(proxy: &FaultProxy, digest: &Digest) -> Vec<RequestRecord> {
    let path = format!("/blobs/{digest}");
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(&path))
        .collect()
}

/// The serving process of the volume on `target`, from its record.
fn server_pid(root: &Path, target: &Path) -> u32 {
    for e in std::fs::read_dir(root.join("volumes")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "json") {
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            if record["target"] == target.to_str().unwrap() {
                return record["server_pid"].as_u64().unwrap() as u32;
            }
        }
    }
    panic!("no record of {}", target.display())
}

fn drop_page_cache() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

/// Reads `len` bytes at `offset` of `path` through an mmap of the file.
fn mmap_read(path: &Path, offset: usize, len: usize) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len() as usize;
    // SAFETY: a private read-only mapping of a file we keep open; read within its size.
    unsafe {
        use std::os::fd::AsRawFd;
        let p = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap {}", path.display());
        let bytes = std::slice::from_raw_parts(p.cast::<u8>().add(offset), len).to_vec();
        libc::munmap(p, size);
        Ok(bytes)
    }
}

#[test]
#[ignore = "needs root (FUSE and overlay mounts) and docker-registry: make test runs it"]
fn an_indexed_artifact_is_mounted_lazily_and_every_read_is_verified() {
    strata_testdata::host::require_root("lazy volumes are FUSE mounts");
    let env = Env::new();
    let _unmount = UnmountOnDrop(env.dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    let host = proxy.host();
    let blob = weights(5 * CHUNK + 12_345);
    model_dir(&env.path("v1"), &blob, r#"{"hidden_size":64}"#);
    model_dir(&env.path("v2"), &blob, r#"{"hidden_size":64,"v":2}"#);
    for v in ["v1", "v2"] {
        let reference = format!("{host}/models/tiny:{v}");
        env.strata_ok(
            "push",
            &[
                "artifact",
                "push",
                "--plain-http",
                env.path(v).to_str().unwrap(),
                &reference,
            ],
        );
    }
    let layer = weights_layer(&registry, "models/tiny", "v1");
    assert_eq!(layer, Digest::of(&blob));

    // Mount: no byte of the weights is fetched.
    proxy.clear_requests();
    let dir = env.path("mnt");
    std::fs::create_dir_all(&dir).unwrap();
    let dir_s = dir.to_str().unwrap();
    let v1 = format!("{host}/models/tiny:v1");
    env.strata_ok("root", &["volume", "mount", "--plain-http", &v1, dir_s]);
    assert!(blob_requests(&proxy, &layer).is_empty());
    let listing = env.strata_ok("root", &["volume", "ls"]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(dir_s) && l.contains(" lazy ") && l.ends_with("mounted")),
        "{listing}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("config.json")).unwrap(),
        r#"{"hidden_size":64}"#
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("docs/guide.md")).unwrap(),
        "# guide\n"
    );
    let weights_path = dir.join("model.safetensors");
    assert_eq!(
        std::fs::metadata(&weights_path).unwrap().len(),
        blob.len() as u64
    );
    assert!(std::fs::write(dir.join("new"), b"x").is_err(), "read-only");

    // The header: one chunk.
    proxy.clear_requests();
    let file = std::fs::File::open(&weights_path).unwrap();
    let mut head = [0u8; 8];
    file.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, blob[..8]);
    let fetched = blob_requests(&proxy, &layer);
    let bytes: u64 = fetched.iter().map(|r| r.bytes_sent).sum();
    assert_eq!(bytes, CHUNK as u64, "{fetched:?}");
    drop(file);

    // A tensor through mmap (chunk 3), by four readers at once: fetched once (the kernel
    // reads a megabyte around the fault, so chunk 2's end may be read too).
    let at = 3 * CHUNK + 1000;
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                assert_eq!(
                    mmap_read(&weights_path, at, 5000).unwrap(),
                    blob[at..at + 5000]
                );
            });
        }
    });
    let ranges = |proxy: &FaultProxy| -> Vec<String> {
        blob_requests(proxy, &layer)
            .into_iter()
            .map(|r| r.range.unwrap_or_default())
            .collect()
    };
    let fetched = ranges(&proxy);
    assert!(
        fetched.contains(&"bytes=12582912-16777215".to_owned()) && fetched.len() <= 3,
        "{fetched:?}"
    );

    // The whole file, in order: each chunk fetched once, in all.
    assert!(std::fs::read(&weights_path).unwrap() == blob);
    let mut fetched = ranges(&proxy);
    assert_eq!(fetched.len(), 6, "{fetched:?}");
    fetched.sort();
    fetched.dedup();
    assert_eq!(fetched.len(), 6, "a chunk fetched twice");

    // From the chunk cache once the page cache is gone; and a second model version with
    // the same weights (another serving process, with passthrough: the cached file is
    // then read by the kernel) fetches none of them either.
    proxy.clear_requests();
    drop_page_cache();
    assert!(std::fs::read(&weights_path).unwrap() == blob);
    let dir2 = env.path("mnt2");
    std::fs::create_dir_all(&dir2).unwrap();
    let v2 = format!("{host}/models/tiny:v2");
    env.strata_ok(
        "root",
        &[
            "volume",
            "mount",
            "--plain-http",
            "--passthrough",
            &v2,
            dir2.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(dir2.join("model.safetensors")).unwrap() == blob);
    drop_page_cache();
    assert!(std::fs::read(dir2.join("model.safetensors")).unwrap() == blob);
    assert!(
        std::fs::read_to_string(dir2.join("config.json"))
            .unwrap()
            .contains("\"v\":2")
    );
    assert!(blob_requests(&proxy, &layer).is_empty());

    // The serving process dies: a reader waits in the kernel (the fd holder keeps the
    // connection), the next `strata volume` command starts a new process that resumes
    // it, and the reader gets its bytes.
    let pid = server_pid(&env.path("root"), &dir);
    // SAFETY: kill(2) of the serving process this test's volume started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    while Path::new(&format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop_page_cache();
    let reader = {
        let path = weights_path.clone();
        std::thread::spawn(move || std::fs::read(path).unwrap())
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!reader.is_finished(), "a read with no server did not wait");
    let out = env.strata("root", &["volume", "ls"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("serves it again"), "{stderr}");
    assert!(reader.join().unwrap() == blob);
    assert_ne!(server_pid(&env.path("root"), &dir), pid);

    // Unmount: nothing left, the serving processes end.
    for d in [&dir, &dir2] {
        env.strata_ok("root", &["volume", "umount", d.to_str().unwrap()]);
        assert!(mounts_under(d).is_empty());
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
    }
    assert!(mounts_under(&env.path("root")).is_empty());
    let left: Vec<_> = std::fs::read_dir(env.path("root/volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "cache")
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A directory of it, lazily too.
    env.strata_ok(
        "root",
        &[
            "volume",
            "mount",
            "--plain-http",
            "--subpath",
            "docs",
            &v1,
            dir_s,
        ],
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("guide.md")).unwrap(),
        "# guide\n"
    );
    assert!(!dir.join("model.safetensors").exists());
    env.strata_ok("root", &["volume", "umount", dir_s]);

    // The registry now serves a corrupted chunk 2: reading it is EIO, never its bytes;
    // the other chunks still read.
    std::fs::remove_dir_all(env.path("root/volumes/cache")).unwrap();
    let data = registry.blob_data_path(&layer.to_string());
    let mut bad = blob.clone();
    bad[2 * CHUNK + 77] ^= 0x01;
    std::fs::write(&data, &bad).unwrap();
    env.strata_ok("root", &["volume", "mount", "--plain-http", &v1, dir_s]);
    let file = std::fs::File::open(&weights_path).unwrap();
    let mut buf = vec![0u8; 4096];
    file.read_exact_at(&mut buf, CHUNK as u64).unwrap();
    assert_eq!(buf, blob[CHUNK..CHUNK + 4096]);
    let err = file.read_exact_at(&mut buf, 2 * CHUNK as u64).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Asked again, it fails again (an mmap reader would get SIGBUS).
    assert!(file.read_exact_at(&mut buf, 2 * CHUNK as u64).is_err());
    drop(file);
    std::thread::sleep(Duration::from_millis(100));
    env.strata_ok("root", &["volume", "umount", dir_s]);
    assert!(mounts_under(&dir).is_empty());
}

/// Bytes of the files under `dir`, recursively.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            bytes_under(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[test]
#[ignore = "needs root (FUSE and overlay mounts) and docker-registry: make test runs it"]
fn lazy_volumes_in_several_processes_share_one_cache_bound() {
    strata_testdata::host::require_root("lazy volumes are FUSE mounts");
    let env = Env::new();
    let _unmount = UnmountOnDrop(env.dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let host = registry.host();
    // Two models sharing no chunk, 5 and a bit chunks each, under a 3-chunk bound.
    let blobs = [
        seeded_weights(5 * CHUNK + 1000, 1),
        seeded_weights(5 * CHUNK + 2000, 2),
    ];
    let mut dirs = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        let model = env.path(&format!("model{i}"));
        model_dir(&model, blob, "{}");
        let reference = format!("{host}/models/m{i}:v1");
        env.strata_ok(
            "push",
            &[
                "artifact",
                "push",
                "--plain-http",
                model.to_str().unwrap(),
                &reference,
            ],
        );
        let dir = env.path(&format!("mnt{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        env.strata_ok(
            "root",
            &[
                "volume",
                "mount",
                "--plain-http",
                "--cache-size",
                "12",
                &reference,
                dir.to_str().unwrap(),
            ],
        );
        dirs.push(dir);
    }
    // Both serving processes read their whole model at once, twice (the second read
    // fetches again what the bound evicted).
    std::thread::scope(|s| {
        for (dir, blob) in dirs.iter().zip(&blobs) {
            s.spawn(move || {
                for _ in 0..2 {
                    assert!(std::fs::read(dir.join("model.safetensors")).unwrap() == *blob);
                    drop_page_cache();
                }
            });
        }
    });
    for dir in &dirs {
        env.strata_ok("root", &["volume", "umount", dir.to_str().unwrap()]);
    }
    let cache = env.path("root/volumes/cache");
    let held = bytes_under(&cache.join("sha256"));
    assert!(
        held <= 12 << 20,
        "the shared cache holds {held} bytes, over its 12 MiB bound"
    );
    assert!(held >= 2 * CHUNK as u64, "the cache was used: {held} bytes");
}
