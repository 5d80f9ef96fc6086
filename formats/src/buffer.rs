//! Byte buffers shared between threads without a copy: a chunk decompressed or read from
//! disk straight into the `Arc<[u8]>` every reader of it then holds.

use std::sync::Arc;

/// A new buffer of `len` zero bytes with one owner, to fill through [`Arc::get_mut`].
pub fn zeroed_shared(len: usize) -> Arc<[u8]> {
    let mut buf = Arc::<[u8]>::new_uninit_slice(len);
    Arc::get_mut(&mut buf)
        .expect("invariant: a new buffer has one owner")
        .fill(std::mem::MaybeUninit::new(0));
    // SAFETY: every element was just initialised (to 0).
    unsafe { buf.assume_init() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn zeroed_and_writable_once() {
        let mut b = super::zeroed_shared(5);
        assert_eq!(&b[..], &[0; 5]);
        std::sync::Arc::get_mut(&mut b)
            .unwrap()
            .copy_from_slice(b"chunk");
        assert_eq!(&b[..], b"chunk");
        assert_eq!(super::zeroed_shared(0).len(), 0);
    }
}
