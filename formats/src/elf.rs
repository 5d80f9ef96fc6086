//! ELF headers, just enough to know what the dynamic loader will open: the program
//! interpreter (`PT_INTERP`) and the dynamic section's `DT_NEEDED`, `DT_RPATH`,
//! `DT_RUNPATH` and `DT_SONAME`.
//!
//! This is what [`crate::prefetch`] walks to list the files a container touches at start.
//! 32- and 64-bit, little- and big-endian files are read through a [`ReadAt`]; section
//! headers are never consulted (the loader does not use them either, and stripped or
//! hostile files may lie in them). The input is an untrusted image file: every count,
//! offset and string length is bounded, and a malformed file is an [`ElfError`], never a
//! panic. A file that does not start with the ELF magic is `Ok(None)`.

use std::io;

use crate::errdefs::ErrorKind;
use crate::read_at::ReadAt;

/// At most this many program headers; real files have about a dozen.
pub const MAX_PROGRAM_HEADERS: usize = 4096;
/// At most this many dynamic entries are scanned; real files have a few dozen.
pub const MAX_DYNAMIC_ENTRIES: usize = 65536;
/// Longest string (interpreter path, library name, search path) accepted, without its NUL.
pub const MAX_STRING_LEN: usize = 4096;
/// At most this many `DT_NEEDED` entries are kept.
pub const MAX_NEEDED: usize = 4096;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// `e_machine` values Strata knows a library layout for (see `prefetch`).
pub mod machine {
    /// Intel 80386.
    pub const I386: u16 = 3;
    /// MIPS.
    pub const MIPS: u16 = 8;
    /// 32-bit PowerPC.
    pub const PPC: u16 = 20;
    /// 64-bit PowerPC.
    pub const PPC64: u16 = 21;
    /// IBM S/390 and z/Architecture.
    pub const S390: u16 = 22;
    /// 32-bit ARM.
    pub const ARM: u16 = 40;
    /// AMD x86-64.
    pub const X86_64: u16 = 62;
    /// 64-bit ARM.
    pub const AARCH64: u16 = 183;
    /// RISC-V.
    pub const RISCV: u16 = 243;
    /// LoongArch.
    pub const LOONGARCH: u16 = 258;
}

/// Why a file that claims to be ELF cannot be read as one.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// Reading the underlying blob failed (or it ended inside a structure).
    #[error("reading ELF {what}: {source}")]
    Read {
        /// The structure being read.
        what: &'static str,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// A header field or structure is inconsistent.
    #[error("malformed ELF: {0}")]
    Malformed(String),
    /// A count exceeds Strata's bound.
    #[error("ELF {what} count {count} exceeds the limit of {limit}")]
    TooMany {
        /// What is counted.
        what: &'static str,
        /// The count found.
        count: u64,
        /// The bound.
        limit: usize,
    },
}

impl ElfError {
    /// The error category: I/O failures are `Internal`, bad files `InvalidArgument`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ElfError::Read { source, .. } if source.kind() != io::ErrorKind::UnexpectedEof => {
                ErrorKind::Internal
            }
            _ => ErrorKind::InvalidArgument,
        }
    }
}

/// 32- or 64-bit ELF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElfClass {
    /// `ELFCLASS32`.
    Elf32,
    /// `ELFCLASS64`.
    Elf64,
}

/// Byte order of the file's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    /// `ELFDATA2LSB`.
    Little,
    /// `ELFDATA2MSB`.
    Big,
}

/// What the dynamic loader needs to know about one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// 32- or 64-bit.
    pub class: ElfClass,
    /// Byte order.
    pub endian: Endian,
    /// `e_type`: 2 executable, 3 shared object (or PIE), 1 relocatable, 4 core.
    pub e_type: u16,
    /// `e_machine` (see [`machine`]).
    pub machine: u16,
    /// The `PT_INTERP` path, e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// Whether the file has a `PT_DYNAMIC` segment.
    pub dynamic: bool,
    /// `DT_NEEDED` names, in file order (the loader's breadth-first order).
    pub needed: Vec<String>,
    /// `DT_RPATH`, colon-separated, unexpanded.
    pub rpath: Option<String>,
    /// `DT_RUNPATH`, colon-separated, unexpanded.
    pub runpath: Option<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
}

impl ElfInfo {
    /// Whether a library of `other`'s class, byte order and machine could be loaded into a
    /// process of this one (the loader skips candidates that could not).
    pub fn compatible_with(&self, other: &ElfInfo) -> bool {
        self.class == other.class && self.endian == other.endian && self.machine == other.machine
    }
}

/// Field decoding for one class and byte order.
#[derive(Clone, Copy)]
struct Layout {
    class: ElfClass,
    endian: Endian,
}

impl Layout {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let a = [b[at], b[at + 1]];
        match self.endian {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        }
    }

    fn u32(self, b: &[u8], at: usize) -> u32 {
        let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        match self.endian {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        }
    }

    fn u64(self, b: &[u8], at: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        match self.endian {
            Endian::Little => u64::from_le_bytes(a),
            Endian::Big => u64::from_be_bytes(a),
        }
    }

    /// A word: 4 bytes in ELF32, 8 in ELF64.
    fn word(self, b: &[u8], at: usize) -> u64 {
        match self.class {
            ElfClass::Elf32 => u64::from(self.u32(b, at)),
            ElfClass::Elf64 => self.u64(b, at),
        }
    }

    fn phdr_size(self) -> usize {
        match self.class {
            ElfClass::Elf32 => 32,
            ElfClass::Elf64 => 56,
        }
    }

    fn dyn_size(self) -> usize {
        match self.class {
            ElfClass::Elf32 => 8,
            ElfClass::Elf64 => 16,
        }
    }

    fn phdr(self, b: &[u8]) -> Phdr {
        match self.class {
            ElfClass::Elf32 => Phdr {
                p_type: self.u32(b, 0),
                offset: self.word(b, 4),
                vaddr: self.word(b, 8),
                filesz: self.word(b, 16),
            },
            ElfClass::Elf64 => Phdr {
                p_type: self.u32(b, 0),
                offset: self.word(b, 8),
                vaddr: self.word(b, 16),
                filesz: self.word(b, 32),
            },
        }
    }
}

#[derive(Clone, Copy)]
struct Phdr {
    p_type: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

fn read_exact<R: ReadAt + ?Sized>(
    r: &R,
    what: &'static str,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, ElfError> {
    if offset
        .checked_add(len as u64)
        .is_none_or(|end| end > r.size())
    {
        return Err(ElfError::Malformed(format!(
            "{what} at offset {offset} (+{len} bytes) lies past the end of the {}-byte file",
            r.size()
        )));
    }
    let mut buf = vec![0; len];
    r.read_exact_at(&mut buf, offset)
        .map_err(|source| ElfError::Read { what, source })?;
    Ok(buf)
}

/// Parses the ELF headers of `r`; `Ok(None)` if it is not an ELF file at all.
pub fn parse_elf<R: ReadAt + ?Sized>(r: &R) -> Result<Option<ElfInfo>, ElfError> {
    let magic = r.read_range(0, 4).map_err(|source| ElfError::Read {
        what: "magic",
        source,
    })?;
    if magic != b"\x7fELF" {
        return Ok(None);
    }
    let class = match read_exact(r, "identification", 4, 1)?[0] {
        1 => ElfClass::Elf32,
        2 => ElfClass::Elf64,
        c => {
            return Err(ElfError::Malformed(format!(
                "unknown class {c} (expected 1 or 2)"
            )));
        }
    };
    let endian = match read_exact(r, "identification", 5, 1)?[0] {
        1 => Endian::Little,
        2 => Endian::Big,
        d => {
            return Err(ElfError::Malformed(format!(
                "unknown data encoding {d} (expected 1 or 2)"
            )));
        }
    };
    let l = Layout { class, endian };
    let ehdr = read_exact(
        r,
        "file header",
        0,
        if class == ElfClass::Elf32 { 52 } else { 64 },
    )?;
    let e_type = l.u16(&ehdr, 16);
    let machine = l.u16(&ehdr, 18);
    let (phoff, phentsize, phnum) = match class {
        ElfClass::Elf32 => (l.word(&ehdr, 28), l.u16(&ehdr, 42), l.u16(&ehdr, 44)),
        ElfClass::Elf64 => (l.word(&ehdr, 32), l.u16(&ehdr, 54), l.u16(&ehdr, 56)),
    };
    let phnum = usize::from(phnum);
    // 0xffff (PN_XNUM) defers the real count to section 0; it is ≥ 0xffff, past our bound anyway.
    if phnum > MAX_PROGRAM_HEADERS {
        return Err(ElfError::TooMany {
            what: "program header",
            count: phnum as u64,
            limit: MAX_PROGRAM_HEADERS,
        });
    }
    let mut info = ElfInfo {
        class,
        endian,
        e_type,
        machine,
        interpreter: None,
        dynamic: false,
        needed: Vec::new(),
        rpath: None,
        runpath: None,
        soname: None,
    };
    if phnum == 0 {
        return Ok(Some(info));
    }
    // The loader insists on the native entry size; a different one means garbage.
    if usize::from(phentsize) != l.phdr_size() {
        return Err(ElfError::Malformed(format!(
            "program header entry size {phentsize}, expected {}",
            l.phdr_size()
        )));
    }
    let table = read_exact(r, "program headers", phoff, phnum * l.phdr_size())?;
    let phdrs: Vec<Phdr> = table
        .chunks_exact(l.phdr_size())
        .map(|b| l.phdr(b))
        .collect();

    if let Some(interp) = phdrs.iter().find(|p| p.p_type == PT_INTERP) {
        let len = usize::try_from(interp.filesz)
            .ok()
            .filter(|&n| n <= MAX_STRING_LEN + 1)
            .ok_or_else(|| {
                ElfError::Malformed(format!(
                    "PT_INTERP of {} bytes exceeds {MAX_STRING_LEN}",
                    interp.filesz
                ))
            })?;
        let bytes = read_exact(r, "PT_INTERP", interp.offset, len)?;
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        info.interpreter = Some(utf8(&bytes[..end], "PT_INTERP path")?);
    }

    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
        return Ok(Some(info));
    };
    info.dynamic = true;
    let count = dynamic.filesz / l.dyn_size() as u64;
    if count > MAX_DYNAMIC_ENTRIES as u64 {
        return Err(ElfError::TooMany {
            what: "dynamic entry",
            count,
            limit: MAX_DYNAMIC_ENTRIES,
        });
    }
    let table = read_exact(
        r,
        "dynamic section",
        dynamic.offset,
        count as usize * l.dyn_size(),
    )?;
    let mut entries = Vec::new();
    for e in table.chunks_exact(l.dyn_size()) {
        let (tag, val) = match class {
            ElfClass::Elf32 => (u64::from(l.u32(e, 0)), u64::from(l.u32(e, 4))),
            ElfClass::Elf64 => (l.u64(e, 0), l.u64(e, 8)),
        };
        if tag == DT_NULL {
            break;
        }
        entries.push((tag, val));
    }
    let strtab_vaddr = entries
        .iter()
        .find(|(t, _)| *t == DT_STRTAB)
        .map(|&(_, v)| v);
    let strsz = entries
        .iter()
        .find(|(t, _)| *t == DT_STRSZ)
        .map(|&(_, v)| v);
    let wants_strings = entries
        .iter()
        .any(|(t, _)| matches!(*t, DT_NEEDED | DT_SONAME | DT_RPATH | DT_RUNPATH));
    if !wants_strings {
        return Ok(Some(info));
    }
    let strtab_vaddr = strtab_vaddr.ok_or_else(|| {
        ElfError::Malformed("dynamic section names strings but has no DT_STRTAB".into())
    })?;
    let strtab = StrTab {
        offset: vaddr_to_offset(&phdrs, strtab_vaddr)?,
        size: strsz,
    };
    for &(tag, val) in &entries {
        match tag {
            DT_NEEDED => {
                if info.needed.len() >= MAX_NEEDED {
                    return Err(ElfError::TooMany {
                        what: "DT_NEEDED",
                        count: MAX_NEEDED as u64 + 1,
                        limit: MAX_NEEDED,
                    });
                }
                info.needed.push(strtab.get(r, val, "DT_NEEDED")?);
            }
            DT_SONAME => info.soname = Some(strtab.get(r, val, "DT_SONAME")?),
            DT_RPATH => info.rpath = Some(strtab.get(r, val, "DT_RPATH")?),
            DT_RUNPATH => info.runpath = Some(strtab.get(r, val, "DT_RUNPATH")?),
            _ => {}
        }
    }
    Ok(Some(info))
}

/// Maps a virtual address to a file offset through the `PT_LOAD` segment containing it, as
/// the loader sees it once the file is mapped.
fn vaddr_to_offset(phdrs: &[Phdr], vaddr: u64) -> Result<u64, ElfError> {
    phdrs
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .find(|p| vaddr >= p.vaddr && vaddr - p.vaddr < p.filesz)
        .and_then(|p| p.offset.checked_add(vaddr - p.vaddr))
        .ok_or_else(|| {
            ElfError::Malformed(format!(
                "DT_STRTAB address {vaddr:#x} is in no PT_LOAD segment"
            ))
        })
}

struct StrTab {
    offset: u64,
    size: Option<u64>,
}

impl StrTab {
    fn get<R: ReadAt + ?Sized>(
        &self,
        r: &R,
        index: u64,
        what: &'static str,
    ) -> Result<String, ElfError> {
        if self.size.is_some_and(|s| index >= s) {
            return Err(ElfError::Malformed(format!(
                "{what} string index {index} is past DT_STRSZ"
            )));
        }
        let at = self
            .offset
            .checked_add(index)
            .filter(|&at| at < r.size())
            .ok_or_else(|| {
                ElfError::Malformed(format!(
                    "{what} string index {index} is past the end of the file"
                ))
            })?;
        let mut limit = MAX_STRING_LEN as u64 + 1;
        if let Some(s) = self.size {
            limit = limit.min(s - index);
        }
        let bytes = r
            .read_range(at, limit)
            .map_err(|source| ElfError::Read { what, source })?;
        let end = bytes.iter().position(|&b| b == 0).ok_or_else(|| {
            ElfError::Malformed(format!(
                "{what} string at index {index} is unterminated or longer than {MAX_STRING_LEN} bytes"
            ))
        })?;
        utf8(&bytes[..end], what)
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, ElfError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ElfError::Malformed(format!("{what} is not valid UTF-8")))
}

/// Emits small but loader-valid ELF files, for tests here and in `prefetch`.
#[cfg(test)]
pub(crate) mod build {
    /// What to put in a synthetic 64-bit little-endian x86-64 shared object.
    #[derive(Default)]
    pub(crate) struct Spec<'a> {
        pub(crate) interp: Option<&'a str>,
        pub(crate) needed: &'a [&'a str],
        pub(crate) runpath: Option<&'a str>,
        pub(crate) rpath: Option<&'a str>,
        pub(crate) soname: Option<&'a str>,
        pub(crate) machine: u16,
    }

    /// Layout: header, 4 program headers (PHDR-less: INTERP, LOAD, DYNAMIC), interp,
    /// string table, dynamic section. One PT_LOAD at vaddr 0x400000 maps the whole file.
    pub(crate) fn elf64(spec: &Spec<'_>) -> Vec<u8> {
        const BASE: u64 = 0x40_0000;
        let machine = if spec.machine == 0 {
            super::machine::X86_64
        } else {
            spec.machine
        };
        let phnum = 3u64;
        let interp_off = 64 + 56 * phnum;
        let interp = spec.interp.map(|s| format!("{s}\0")).unwrap_or_default();
        let strtab_off = interp_off + interp.len() as u64;
        let mut strtab = vec![0u8];
        let mut add = |s: &str| {
            let at = strtab.len() as u64;
            strtab.extend_from_slice(s.as_bytes());
            strtab.push(0);
            at
        };
        let mut dynamic: Vec<(u64, u64)> = spec.needed.iter().map(|n| (1, add(n))).collect();
        for (tag, val) in [(29, spec.runpath), (15, spec.rpath), (14, spec.soname)] {
            if let Some(v) = val {
                dynamic.push((tag, add(v)));
            }
        }
        dynamic.push((5, BASE + strtab_off));
        dynamic.push((10, strtab.len() as u64));
        dynamic.push((0, 0));
        let dyn_off = strtab_off + strtab.len() as u64;
        let total = dyn_off + 16 * dynamic.len() as u64;

        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        out.extend_from_slice(&3u16.to_le_bytes()); // ET_DYN
        out.extend_from_slice(&machine.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&BASE.to_le_bytes()); // entry
        out.extend_from_slice(&64u64.to_le_bytes()); // phoff
        out.extend_from_slice(&0u64.to_le_bytes()); // shoff
        out.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, phnum as u16, 64, 0, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut phdr = |p_type: u32, off: u64, size: u64| {
            out.extend_from_slice(&p_type.to_le_bytes());
            out.extend_from_slice(&4u32.to_le_bytes());
            for v in [off, BASE + off, BASE + off, size, size, 8] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        // An empty PT_INTERP is written as a NULL segment so "no interpreter" round-trips.
        phdr(
            if interp.is_empty() { 0 } else { 3 },
            interp_off,
            interp.len() as u64,
        );
        phdr(1, 0, total);
        phdr(2, dyn_off, 16 * dynamic.len() as u64);
        out.extend_from_slice(interp.as_bytes());
        out.extend_from_slice(&strtab);
        for (t, v) in dynamic {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        debug_assert_eq!(out.len() as u64, total);
        out
    }
}

#[cfg(test)]
#[path = "elf_tests.rs"]
mod tests;
