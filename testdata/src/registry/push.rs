//! Pushing images into a [`RegistryServer`] with plain HTTP requests, so
//! tests of a client's pull never depend on that client's push.
//!
//! Blobs go up with the two-step monolithic upload of the distribution
//! spec (`POST /v2/<repo>/blobs/uploads/` → `Location`, then
//! `PUT <location>&digest=…`), skipped when a `HEAD` finds the blob already
//! there; manifests and indexes are `PUT` with their media type.

use std::io::Read;

use oci_spec::image::{ImageIndexBuilder, MediaType};

use super::client::{RawClient, RawResponse, origin_form};
use super::server::RegistryServer;
use super::{Error, Result};
use crate::image::{BlobRef, BuiltImage, MEDIA_TYPE_INDEX};
use crate::layout::{LayoutImage, RefSummary};
use crate::{canonical_json, sha256_digest};

impl RegistryServer {
    /// Pushes `image` as `repo:tag`: all blobs, then the manifest (single
    /// platform) or every platform manifest by digest and then an image
    /// index (multi-platform). The manifest and index bytes are exactly
    /// those [`write_oci_layout`](crate::write_oci_layout) writes, so the
    /// returned digests match a layout of the same image.
    pub fn push_layout(&self, repo: &str, tag: &str, image: &LayoutImage) -> Result<RefSummary> {
        let (target, images) = match image {
            LayoutImage::Single(spec) => {
                let built = spec.build()?;
                let target = self.push_image(repo, tag, &built)?;
                (target, vec![built.summary()])
            }
            LayoutImage::Multi(specs) => {
                let built = specs
                    .iter()
                    .map(|spec| spec.build())
                    .collect::<crate::Result<Vec<_>>>()?;
                let target = self.push_index(repo, tag, &built)?;
                (target, built.iter().map(BuiltImage::summary).collect())
            }
        };
        Ok(RefSummary {
            name: format!("{repo}:{tag}"),
            target,
            images,
        })
    }

    /// Pushes a built image's layers and config, then its manifest as
    /// `reference` (a tag or the manifest's own digest).
    pub fn push_image(&self, repo: &str, reference: &str, image: &BuiltImage) -> Result<BlobRef> {
        let mut client = self.client();
        for layer in &image.layers {
            self.upload_blob(&mut client, repo, &layer.digest, &layer.gzip)?;
        }
        self.upload_blob(&mut client, repo, &image.config.digest, &image.config_json)?;
        self.put_manifest(
            &mut client,
            repo,
            reference,
            &image.manifest.media_type,
            &image.manifest_json,
        )?;
        Ok(image.manifest.clone())
    }

    /// Pushes every image by digest, then an OCI image index of them (with
    /// each image's platform) as `reference`.
    pub fn push_index(
        &self,
        repo: &str,
        reference: &str,
        images: &[BuiltImage],
    ) -> Result<BlobRef> {
        if images.is_empty() {
            return Err(crate::Error::EmptyIndex(format!("{repo}:{reference}")).into());
        }
        let mut manifests = Vec::new();
        for image in images {
            self.push_image(repo, &image.manifest.digest, image)?;
            let mut descriptor = image.manifest.to_descriptor()?;
            descriptor.set_platform(Some(image.platform.to_oci()?));
            manifests.push(descriptor);
        }
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .map_err(crate::Error::from)?;
        let index_json = canonical_json(&index)?;
        self.push_manifest(repo, reference, MEDIA_TYPE_INDEX, &index_json)
    }

    /// Uploads one blob (skipped if the registry has it); returns its descriptor
    /// with media type `application/octet-stream`.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> Result<BlobRef> {
        let digest = sha256_digest(bytes);
        self.upload_blob(&mut self.client(), repo, &digest, bytes)?;
        Ok(BlobRef::of("application/octet-stream", bytes))
    }

    /// Uploads a blob of `size` bytes streamed from `reader`, whose digest the
    /// caller already knows (e.g. from [`random_file`](crate::random_file)),
    /// without holding it in memory: for tests with blobs of hundreds of MB.
    pub fn push_blob_from(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        reader: &mut dyn Read,
    ) -> Result<()> {
        let mut client = self.client();
        if self.blob_exists(&mut client, repo, digest)? {
            return Ok(());
        }
        let location = self.start_upload(&mut client, repo)?;
        let target = upload_target(&location, digest);
        let auth = self.authorization();
        let mut headers = vec![("Content-Type", "application/octet-stream")];
        headers.extend(auth.as_deref().map(|a| ("Authorization", a)));
        let response = client
            .upload("PUT", &target, &headers, reader, size)
            .map_err(Error::io(format!("PUT {target}")))?;
        expect("PUT", &target, response, &[201])?;
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with `Content-Type: media_type`.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<BlobRef> {
        self.put_manifest(&mut self.client(), repo, reference, media_type, bytes)?;
        Ok(BlobRef::of(media_type, bytes))
    }

    fn put_manifest(
        &self,
        client: &mut RawClient,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let target = format!("/v2/{repo}/manifests/{reference}");
        self.send(
            client,
            "PUT",
            &target,
            &[("Content-Type", media_type)],
            bytes,
            &[201],
        )?;
        Ok(())
    }

    fn upload_blob(
        &self,
        client: &mut RawClient,
        repo: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<()> {
        if self.blob_exists(client, repo, digest)? {
            return Ok(());
        }
        let location = self.start_upload(client, repo)?;
        let target = upload_target(&location, digest);
        self.send(
            client,
            "PUT",
            &target,
            &[("Content-Type", "application/octet-stream")],
            bytes,
            &[201],
        )?;
        Ok(())
    }

    fn blob_exists(&self, client: &mut RawClient, repo: &str, digest: &str) -> Result<bool> {
        let target = format!("/v2/{repo}/blobs/{digest}");
        let response = self.send(client, "HEAD", &target, &[], &[], &[200, 404])?;
        Ok(response.status == 200)
    }

    /// Starts an upload session; returns its `Location`.
    fn start_upload(&self, client: &mut RawClient, repo: &str) -> Result<String> {
        let target = format!("/v2/{repo}/blobs/uploads/");
        let response = self.send(client, "POST", &target, &[], &[], &[202])?;
        response
            .header("location")
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol(format!("POST {target}: 202 without Location")))
    }

    fn send(
        &self,
        client: &mut RawClient,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        ok: &[u16],
    ) -> Result<RawResponse> {
        let auth = self.authorization();
        let mut all = headers.to_vec();
        all.extend(auth.as_deref().map(|a| ("Authorization", a)));
        let response = client
            .request(method, target, &all, body)
            .map_err(Error::io(format!("{method} {target}")))?;
        expect(method, target, response, ok)
    }
}

fn expect(method: &str, target: &str, response: RawResponse, ok: &[u16]) -> Result<RawResponse> {
    if ok.contains(&response.status) {
        return Ok(response);
    }
    Err(Error::Status {
        method: method.to_owned(),
        target: target.to_owned(),
        status: response.status,
        body: response.text(),
    })
}

/// The `PUT` target completing an upload: the session URL plus `digest`.
fn upload_target(location: &str, digest: &str) -> String {
    let path = origin_form(location);
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}digest={digest}")
}
