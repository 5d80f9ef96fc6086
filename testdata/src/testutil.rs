//! Helpers shared by the unit tests: decoding tars and gzip streams.

use std::io::Read;

use tar::EntryType;

/// A decoded tar entry.
#[derive(Debug, Clone)]
pub(crate) struct TarEntry {
    pub(crate) path: String,
    pub(crate) kind: EntryType,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
    pub(crate) mtime: u64,
    pub(crate) link: Option<String>,
    pub(crate) data: Vec<u8>,
}

/// Decodes every entry of `tar` (GNU long names resolved).
pub(crate) fn tar_entries(tar: &[u8]) -> Vec<TarEntry> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push(TarEntry {
            path,
            kind: header.entry_type(),
            mode: header.mode().unwrap(),
            uid: header.uid().unwrap(),
            gid: header.gid().unwrap(),
            mtime: header.mtime().unwrap(),
            link,
            data,
        });
    }
    out
}

/// Returns the data of the entry named `name`.
pub(crate) fn tar_file(tar: &[u8], name: &str) -> Vec<u8> {
    tar_entries(tar)
        .into_iter()
        .find(|e| e.path == name)
        .unwrap_or_else(|| panic!("{name} not in tar"))
        .data
}

/// Decompresses a gzip stream.
pub(crate) fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}
