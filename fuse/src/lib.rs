//! strata-fuse: the read-only FUSE filesystem that presents one lazily fetched layer.
//!
//! Role in Strata: the stargz snapshotter mounts one instance per remote layer, and the
//! mounts become the lower directories of a container's overlay rootfs. The filesystem is
//! built over two seams and knows nothing of HTTP or registries:
//! - a *layer index*: paths, attributes, xattrs, and for each regular file its chunk map
//!   (from an eStargz TOC, `strata_formats`);
//! - a *chunk source*: the bytes of a chunk, fetched on demand and verified against the
//!   chunk's digest before they are returned (implemented by the hub's chunk cache).
//!
//! Overlay whiteouts and opaque directories are presented as overlayfs expects, so a layer
//! can be an overlay lower as it is. This crate is filled in by the lazy-loading work; it
//! holds no code yet.
