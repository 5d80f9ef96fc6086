//! The volume UUID containerd gives a layer's EROFS image: a name-based (version 5,
//! SHA-1) UUID in the URL namespace of `"erofs:blobs/" + digest`, as its differ computes
//! with `uuid.NewSHA1(uuid.NameSpaceURL, …)`. Deriving it from the digest keeps images
//! reproducible, so the same layer converted twice (or by containerd) has the same bytes.

use sha1::{Digest as _, Sha1};

/// RFC 4122's URL namespace, `6ba7b811-9dad-11d1-80b4-00c04fd430c8`.
const NAMESPACE_URL: [u8; 16] = [
    0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8,
];

/// The UUID for the layer blob with this digest (`sha256:<hex>`, the compressed blob's
/// digest as containerd uses it).
pub fn layer_uuid(digest: &str) -> [u8; 16] {
    let mut h = Sha1::new();
    h.update(NAMESPACE_URL);
    h.update(b"erofs:blobs/");
    h.update(digest.as_bytes());
    let hash = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&hash[..16]);
    u[6] = (u[6] & 0x0f) | 0x50; // version 5
    u[8] = (u[8] & 0x3f) | 0x80; // RFC 4122 variant
    u
}

/// The UUID's usual text form (`8-4-4-4-12` lowercase hex), as `mkfs.erofs -U` takes it.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_containerd_and_python_uuid5() {
        // python3 -c 'import uuid; print(uuid.uuid5(uuid.NAMESPACE_URL, "erofs:blobs/sha256:" + "0"*64))'
        let d = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            uuid_string(&layer_uuid(&d)),
            "c10bde68-dd4e-5792-ba63-78c7b75c15bf"
        );
    }
}
