//! The EROFS writer end to end: tar layers into images (copied and tar-index), read back
//! with erofs-rs, checked by `fsck.erofs` and our validator, mounted by the kernel (alone
//! and under an overlay, for whiteouts), and the validator on malicious images.

mod common;
mod mounts;
mod tar_images;
mod validator;
