//! Tests for the ELF header reader: synthetic files, the host's own binaries (compared
//! with `readelf -d`), and hostile input.

use super::build::{Spec, elf64};
use super::*;
use crate::read_at::FileReadAt;
use proptest::prelude::*;

fn parse(bytes: &[u8]) -> Result<Option<ElfInfo>, ElfError> {
    parse_elf(bytes)
}

#[test]
fn synthetic_binary_round_trips() {
    let bytes = elf64(&Spec {
        interp: Some("/lib64/ld-linux-x86-64.so.2"),
        needed: &["libm.so.6", "libc.so.6"],
        runpath: Some("$ORIGIN/../lib:/opt/lib"),
        soname: Some("libfoo.so.1"),
        ..Spec::default()
    });
    let info = parse(&bytes).unwrap().unwrap();
    assert_eq!(info.class, ElfClass::Elf64);
    assert_eq!(info.endian, Endian::Little);
    assert_eq!(info.machine, machine::X86_64);
    assert_eq!(info.e_type, 3);
    assert!(info.dynamic);
    assert_eq!(
        info.interpreter.as_deref(),
        Some("/lib64/ld-linux-x86-64.so.2")
    );
    assert_eq!(info.needed, ["libm.so.6", "libc.so.6"]);
    assert_eq!(info.runpath.as_deref(), Some("$ORIGIN/../lib:/opt/lib"));
    assert_eq!(info.rpath, None);
    assert_eq!(info.soname.as_deref(), Some("libfoo.so.1"));
}

#[test]
fn non_elf_is_none() {
    assert!(parse(b"").unwrap().is_none());
    assert!(parse(b"\x7fEL").unwrap().is_none());
    assert!(parse(b"#!/bin/sh\necho hi\n").unwrap().is_none());
}

/// A hand-written 32-bit big-endian file (MIPS-like) with a dynamic section.
#[test]
fn elf32_big_endian() {
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x01\x02\x01\0\0\0\0\0\0\0\0\0");
    f.extend_from_slice(&2u16.to_be_bytes()); // ET_EXEC
    f.extend_from_slice(&machine::MIPS.to_be_bytes());
    f.extend_from_slice(&1u32.to_be_bytes());
    for v in [0u32, 52, 0, 0] {
        f.extend_from_slice(&v.to_be_bytes()); // entry, phoff, shoff, flags
    }
    for v in [52u16, 32, 3, 40, 0, 0] {
        f.extend_from_slice(&v.to_be_bytes());
    }
    let interp_off = 52 + 3 * 32;
    let interp = b"/lib/ld.so.1\0";
    let str_off = interp_off + interp.len() as u32;
    let strtab = b"\0libc.so.6\0";
    let dyn_off = str_off + strtab.len() as u32;
    let dynamic: [(u32, u32); 4] = [
        (1, 1),
        (5, 0x1000 + str_off),
        (10, strtab.len() as u32),
        (0, 0),
    ];
    let total = dyn_off + 8 * dynamic.len() as u32;
    for (t, off, size, vaddr) in [
        (3u32, interp_off, interp.len() as u32, 0x1000 + interp_off),
        (1, 0, total, 0x1000),
        (2, dyn_off, 8 * dynamic.len() as u32, 0x1000 + dyn_off),
    ] {
        for v in [t, off, vaddr, vaddr, size, size, 4, 4] {
            f.extend_from_slice(&v.to_be_bytes());
        }
    }
    f.extend_from_slice(interp);
    f.extend_from_slice(strtab);
    for (t, v) in dynamic {
        f.extend_from_slice(&t.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
    }
    let info = parse(&f).unwrap().unwrap();
    assert_eq!(
        (info.class, info.endian, info.machine, info.e_type),
        (ElfClass::Elf32, Endian::Big, machine::MIPS, 2)
    );
    assert_eq!(info.interpreter.as_deref(), Some("/lib/ld.so.1"));
    assert_eq!(info.needed, ["libc.so.6"]);
}

#[test]
fn static_file_without_program_headers() {
    let mut bytes = elf64(&Spec::default());
    bytes[56..58].copy_from_slice(&0u16.to_le_bytes()); // e_phnum = 0
    let info = parse(&bytes).unwrap().unwrap();
    assert!(!info.dynamic && info.needed.is_empty() && info.interpreter.is_none());
}

#[test]
fn hostile_inputs_error_without_panicking() {
    let good = elf64(&Spec {
        interp: Some("/lib/ld.so"),
        needed: &["liba.so"],
        ..Spec::default()
    });
    // Truncated anywhere: an error (or, before the magic is complete, not ELF), never a panic.
    for len in 0..good.len() {
        let _ = parse(&good[..len]);
    }
    assert!(parse(&good[..40]).is_err());

    let mut bad_class = good.clone();
    bad_class[4] = 7;
    assert!(matches!(parse(&bad_class), Err(ElfError::Malformed(_))));

    let mut huge_phnum = good.clone();
    huge_phnum[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
    let err = parse(&huge_phnum).unwrap_err();
    assert!(
        matches!(
            err,
            ElfError::TooMany {
                what: "program header",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    let mut far_phoff = good.clone();
    far_phoff[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(
        parse(&far_phoff)
            .unwrap_err()
            .to_string()
            .contains("past the end")
    );

    let mut bad_entsize = good.clone();
    bad_entsize[54..56].copy_from_slice(&1u16.to_le_bytes());
    assert!(parse(&bad_entsize).is_err());

    // Program header 0 is PT_INTERP: make it claim an absurd size, then a far offset.
    let ph0 = 64;
    let mut big_interp = good.clone();
    big_interp[ph0 + 32..ph0 + 40].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(parse(&big_interp).is_err());
    let mut far_interp = good.clone();
    far_interp[ph0 + 8..ph0 + 16].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    assert!(parse(&far_interp).is_err());

    // Program header 2 is PT_DYNAMIC: a count past the bound.
    let ph2 = 64 + 2 * 56;
    let mut huge_dyn = good.clone();
    huge_dyn[ph2 + 32..ph2 + 40].copy_from_slice(&(16 * 70_000u64).to_le_bytes());
    assert!(matches!(
        parse(&huge_dyn),
        Err(ElfError::TooMany {
            what: "dynamic entry",
            ..
        })
    ));

    // A string index far past the string table.
    let dyn_off = good.len() - 16 * 4;
    let mut far_string = good.clone();
    far_string[dyn_off + 8..dyn_off + 16].copy_from_slice(&(1u64 << 50).to_le_bytes());
    assert!(parse(&far_string).is_err());

    // DT_STRTAB outside every PT_LOAD.
    let mut unmapped = good.clone();
    unmapped[dyn_off + 16 + 8..dyn_off + 32].copy_from_slice(&0x10u64.to_le_bytes());
    assert!(
        parse(&unmapped)
            .unwrap_err()
            .to_string()
            .contains("no PT_LOAD")
    );
}

#[test]
fn unterminated_or_overlong_strings_are_errors() {
    // Dynamic: NEEDED, STRTAB, STRSZ, NULL. Point NEEDED at bytes appended past everything,
    // and turn DT_STRSZ into an ignored tag so only the file end and the length bound apply.
    let base = elf64(&Spec {
        needed: &["libz.so.1"],
        ..Spec::default()
    });
    let dyn_off = base.len() - 16 * 4;
    let strtab_off = dyn_off - "\0libz.so.1\0".len();
    for (tail, want) in [(10, "unterminated"), (5000, "longer than")] {
        let mut bytes = base.clone();
        bytes[dyn_off + 8..dyn_off + 16]
            .copy_from_slice(&((base.len() - strtab_off) as u64).to_le_bytes());
        bytes[dyn_off + 32..dyn_off + 40].copy_from_slice(&0x7fffu64.to_le_bytes());
        bytes.extend(std::iter::repeat_n(b'A', tail));
        let err = parse(&bytes).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}

fn readelf_dynamic(path: &str) -> Option<(Vec<String>, Option<String>)> {
    let out = std::process::Command::new("readelf")
        .args(["-W", "-d", "-l", path])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let bracketed = |line: &str| {
        line.split_once('[')
            .and_then(|(_, r)| r.split_once(']'))
            .map(|(s, _)| s.to_owned())
    };
    let needed = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(bracketed)
        .collect();
    let interp = text
        .lines()
        .find(|l| l.contains("Requesting program interpreter:"))
        .and_then(|l| {
            l.split_once(": ")
                .map(|(_, r)| r.trim_end_matches(']').to_owned())
        });
    Some((needed, interp))
}

#[test]
fn host_binaries_match_readelf() {
    for path in [
        "/bin/ls",
        "/usr/bin/python3",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ] {
        let Ok(file) = std::fs::File::open(path) else {
            eprintln!("skipping {path}: absent");
            continue;
        };
        let r = FileReadAt::new(file).unwrap();
        let info = parse_elf(&r)
            .unwrap()
            .unwrap_or_else(|| panic!("{path} is not ELF"));
        assert!(info.dynamic || info.needed.is_empty(), "{path}");
        if path.ends_with("libc.so.6") {
            assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
        }
        let Some((needed, interp)) = readelf_dynamic(path) else {
            eprintln!("skipping readelf comparison for {path}: readelf unavailable");
            continue;
        };
        assert_eq!(info.needed, needed, "{path}");
        assert_eq!(info.interpreter, interp, "{path}");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
        let mut with_magic = b"\x7fELF".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = parse(&with_magic);
    }

    #[test]
    fn mutated_valid_files_never_panic(flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..8)) {
        let mut bytes = elf64(&Spec { interp: Some("/lib/ld.so"), needed: &["a.so", "b.so"], runpath: Some("/x"), ..Spec::default() });
        for (at, v) in flips {
            let at = at % bytes.len();
            bytes[at] = v;
        }
        let _ = parse(&bytes);
    }
}
