//! [`RegistryServer`]: start, stop, push, htpasswd auth.

use std::path::Path;

use oci_spec::image::{ImageIndex, ImageManifest};

use super::{ACCEPT_MANIFESTS, alive, registry_with_sample};
use crate::registry::{Error, RegistryServer, basic_auth};
use crate::{LayoutImage, sample_image, sample_multiplatform, sha256_digest, write_oci_layout};

#[test]
fn registry_starts_answers_and_stops() {
    let registry = RegistryServer::start().unwrap();
    assert_eq!(registry.host(), registry.addr().to_string());
    assert!(registry.url().starts_with("http://127.0.0.1:"));
    let response = registry.client().get("/v2/", &[]).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let pid = registry.pid();
    assert!(alive(pid));
    let storage = registry.storage_dir();
    drop(registry);
    assert!(!alive(pid), "registry {pid} survived drop");
    assert!(!storage.exists());
}

#[test]
fn missing_binary_says_how_to_install_it() {
    let err = RegistryServer::launch(
        Path::new("/nonexistent/docker-registry"),
        &[],
        bcrypt::Version::TwoY,
    )
    .unwrap_err();
    assert!(matches!(err, Error::RegistryMissing { .. }));
    assert!(err.to_string().contains("run scripts/setup.sh"), "{err}");
}

#[test]
fn pushed_image_is_served_byte_for_byte() {
    let (registry, pushed) = registry_with_sample();
    let image = sample_image(1).build().unwrap();
    assert_eq!(pushed.name, "test/sample:1.0");
    assert_eq!(pushed.target, image.manifest);

    let mut client = registry.client();
    let manifest = client
        .get(
            "/v2/test/sample/manifests/1.0",
            &[("Accept", ACCEPT_MANIFESTS)],
        )
        .unwrap();
    assert_eq!(manifest.status, 200, "{}", manifest.text());
    assert_eq!(manifest.body, image.manifest_json);
    assert_eq!(
        manifest.header("content-type"),
        Some(image.manifest.media_type.as_str())
    );
    assert_eq!(
        manifest.header("docker-content-digest"),
        Some(image.manifest.digest.as_str())
    );
    let parsed = ImageManifest::from_reader(manifest.body.as_slice()).unwrap();
    assert_eq!(parsed.layers().len(), 3);

    for (digest, bytes) in image.blobs() {
        if digest == image.manifest.digest {
            continue; // manifests live under /manifests/, checked above
        }
        let blob = client
            .get(&format!("/v2/test/sample/blobs/{digest}"), &[])
            .unwrap();
        assert_eq!(blob.status, 200, "{digest}");
        assert_eq!(blob.body, bytes, "{digest}");
        assert!(registry.blob_data_path(digest).is_file());
    }
    // One keep-alive connection carried all of it.
    assert_eq!(client.connections_opened(), 1);

    // Pushing again finds every blob present and changes nothing.
    let again = registry
        .push_layout("test/sample", "1.0", &sample_image(1).into())
        .unwrap();
    assert_eq!(again, pushed);
}

#[test]
fn multi_platform_index_matches_the_oci_layout() {
    let registry = RegistryServer::start().unwrap();
    let image = LayoutImage::Multi(sample_multiplatform(3));
    let pushed = registry.push_layout("multi", "v1", &image).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = write_oci_layout(dir.path(), &[("multi:v1", image)]).unwrap();
    assert_eq!(pushed.target, layout.refs[0].target);
    assert_eq!(pushed.images, layout.refs[0].images);

    let mut client = registry.client();
    let index = client
        .get("/v2/multi/manifests/v1", &[("Accept", ACCEPT_MANIFESTS)])
        .unwrap();
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some(crate::image::MEDIA_TYPE_INDEX)
    );
    assert_eq!(sha256_digest(&index.body), pushed.target.digest);
    let parsed = ImageIndex::from_reader(index.body.as_slice()).unwrap();
    let arm = &parsed.manifests()[1];
    assert_eq!(
        arm.platform().as_ref().unwrap().architecture().to_string(),
        "arm64"
    );
    let manifest = client
        .get(
            &format!("/v2/multi/manifests/{}", arm.digest()),
            &[("Accept", ACCEPT_MANIFESTS)],
        )
        .unwrap();
    assert_eq!(manifest.status, 200);
    assert_eq!(
        sha256_digest(&manifest.body),
        pushed.images[1].manifest.digest
    );
}

#[test]
fn large_blob_streams_in_and_out() {
    const SIZE: u64 = 64 << 20;
    let registry = RegistryServer::start().unwrap();
    let digest = random_digest(SIZE, 9);
    registry
        .push_blob_from("big", &digest, SIZE, &mut crate::RandomReader::new(9))
        .unwrap();
    let mut hasher = HashingSink::default();
    let response = registry
        .client()
        .download("GET", &format!("/v2/big/blobs/{digest}"), &[], &mut hasher)
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(hasher.finish(), (digest, SIZE));
}

/// Digest of the first `size` bytes of `RandomReader::new(seed)`.
pub(super) fn random_digest(size: u64, seed: u64) -> String {
    let mut hasher = HashingSink::default();
    crate::random::copy_random(&mut std::io::sink(), size, seed, |chunk| {
        std::io::Write::write_all(&mut hasher, chunk).unwrap();
    })
    .unwrap();
    hasher.finish().0
}

/// A sink that hashes and counts what it is given.
#[derive(Default)]
pub(super) struct HashingSink {
    hasher: sha2::Sha256,
    len: u64,
}

impl HashingSink {
    pub(super) fn finish(self) -> (String, u64) {
        use sha2::Digest as _;
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.len,
        )
    }
}

impl std::io::Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The registry accepts both bcrypt prefixes the `bcrypt` crate can write.
#[test]
fn htpasswd_auth_accepts_2y_and_2b_hashes() {
    for version in [bcrypt::Version::TwoY, bcrypt::Version::TwoB] {
        let users = [("alice", "s3cret"), ("bob", "hunter2")];
        let registry = RegistryServer::launch(
            Path::new(crate::registry::DOCKER_REGISTRY),
            &users,
            version.clone(),
        )
        .unwrap();
        let mut client = registry.client();
        let anonymous = client.get("/v2/", &[]).unwrap();
        assert_eq!(anonymous.status, 401);
        assert!(
            anonymous
                .header("www-authenticate")
                .unwrap()
                .starts_with("Basic realm=\"strata-test\"")
        );
        let wrong = client
            .get("/v2/", &[("Authorization", &basic_auth("alice", "nope"))])
            .unwrap();
        assert_eq!(wrong.status, 401);
        for (user, password) in users {
            let ok = client
                .get("/v2/", &[("Authorization", &basic_auth(user, password))])
                .unwrap();
            assert_eq!(
                ok.status,
                200,
                "{version:?} {user}: {}",
                registry.log_tail(5)
            );
        }
        // The push helpers authenticate as the first user.
        assert_eq!(registry.credentials(), Some(("alice", "s3cret")));
        let pushed = registry
            .push_layout("private", "1", &sample_image(2).into())
            .unwrap();
        let auth = registry.authorization().unwrap();
        let manifest = client
            .get(
                "/v2/private/manifests/1",
                &[("Accept", ACCEPT_MANIFESTS), ("Authorization", &auth)],
            )
            .unwrap();
        assert_eq!(sha256_digest(&manifest.body), pushed.target.digest);
    }
}
