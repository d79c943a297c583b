//! Structural checks on a library file before the dynamic loader maps it.
//!
//! The platform loader maps a library's segments straight from the file. A truncated library
//! whose segments reach past the end of the file is mapped anyway on some platforms, and the
//! first touch of a missing page kills the process with SIGBUS. Checking the headers against the
//! file's size first turns that into an ordinary refusal.

use std::path::Path;

/// Why a file is not a loadable library.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LibraryCheckError {
    #[error("cannot read the file: {0}")]
    Read(String),
    #[error("not a shared library (unknown file format)")]
    UnknownFormat,
    #[error("not a shared library for this platform ({0})")]
    WrongPlatform(&'static str),
    #[error("truncated library: {0}")]
    Truncated(String),
}

/// Checks that `path` looks like a complete shared library for this platform.
pub fn check_library_file(path: &Path) -> Result<(), LibraryCheckError> {
    let bytes = std::fs::read(path).map_err(|e| LibraryCheckError::Read(e.to_string()))?;
    check_library_bytes(&bytes)
}

/// Checks library bytes (see [`check_library_file`]).
pub fn check_library_bytes(bytes: &[u8]) -> Result<(), LibraryCheckError> {
    match bytes {
        [0x7f, b'E', b'L', b'F', ..] => check_elf(bytes),
        [0xcf, 0xfa, 0xed, 0xfe, ..] | [0xca, 0xfe, 0xba, 0xbe, ..] => {
            platform_is("macos", "Mach-O")
        }
        [b'M', b'Z', ..] => platform_is("windows", "PE"),
        _ => Err(LibraryCheckError::UnknownFormat),
    }
}

fn platform_is(os: &'static str, format: &'static str) -> Result<(), LibraryCheckError> {
    if std::env::consts::OS == os {
        Ok(())
    } else {
        Err(LibraryCheckError::WrongPlatform(format))
    }
}

/// Reads a little- or big-endian unsigned integer of `N` bytes at `at`.
fn read_uint<const N: usize>(bytes: &[u8], at: usize, little: bool) -> Option<u64> {
    let slice: [u8; N] = bytes.get(at..at.checked_add(N)?)?.try_into().ok()?;
    let mut value = 0u64;
    for i in 0..N {
        let b = if little { slice[N - 1 - i] } else { slice[i] };
        value = (value << 8) | u64::from(b);
    }
    Some(value)
}

fn check_elf(bytes: &[u8]) -> Result<(), LibraryCheckError> {
    if !cfg!(target_os = "linux") && !cfg!(target_os = "freebsd") {
        return Err(LibraryCheckError::WrongPlatform("ELF"));
    }
    let truncated = |what: &str| LibraryCheckError::Truncated(what.to_string());
    let class64 = match bytes.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(truncated("ELF header incomplete")),
    };
    if class64 != cfg!(target_pointer_width = "64") {
        return Err(LibraryCheckError::WrongPlatform("ELF of another word size"));
    }
    let little = match bytes.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err(truncated("ELF header incomplete")),
    };
    let len = bytes.len() as u64;
    // Offsets of the fields we need, for 32- and 64-bit headers.
    let (phoff, phentsize_at, phnum_at, shoff, shentsize_at, shnum_at) = if class64 {
        (
            read_uint::<8>(bytes, 0x20, little),
            0x36,
            0x38,
            read_uint::<8>(bytes, 0x28, little),
            0x3a,
            0x3c,
        )
    } else {
        (
            read_uint::<4>(bytes, 0x1c, little),
            0x2a,
            0x2c,
            read_uint::<4>(bytes, 0x20, little),
            0x2e,
            0x30,
        )
    };
    let field = |v: Option<u64>| v.ok_or_else(|| truncated("ELF header incomplete"));
    let phoff = field(phoff)?;
    let phentsize = field(read_uint::<2>(bytes, phentsize_at, little))?;
    let phnum = field(read_uint::<2>(bytes, phnum_at, little))?;
    let shoff = field(shoff)?;
    let shentsize = field(read_uint::<2>(bytes, shentsize_at, little))?;
    let shnum = field(read_uint::<2>(bytes, shnum_at, little))?;

    if phoff + phentsize * phnum > len {
        return Err(truncated("program headers past the end of the file"));
    }
    if shoff + shentsize * shnum > len {
        return Err(truncated("section headers past the end of the file"));
    }
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        let (offset, filesz) = if class64 {
            (
                read_uint::<8>(bytes, at + 0x08, little),
                read_uint::<8>(bytes, at + 0x20, little),
            )
        } else {
            (
                read_uint::<4>(bytes, at + 0x04, little),
                read_uint::<4>(bytes, at + 0x10, little),
            )
        };
        let (offset, filesz) = (field(offset)?, field(filesz)?);
        if offset.saturating_add(filesz) > len {
            return Err(truncated(&format!(
                "segment {i} ends at byte {} but the file has {len}",
                offset.saturating_add(filesz)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_test_binary() -> Vec<u8> {
        std::fs::read(std::env::current_exe().expect("test binary path")).expect("read test binary")
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn complete_elf_passes() {
        assert_eq!(check_library_bytes(&this_test_binary()), Ok(()));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn truncated_elf_is_refused() {
        let bytes = this_test_binary();
        for cut in [10, 64, 1000, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(
                    check_library_bytes(&bytes[..cut]),
                    Err(LibraryCheckError::Truncated(_))
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn text_is_not_a_library() {
        assert_eq!(
            check_library_bytes(b"this is a text file"),
            Err(LibraryCheckError::UnknownFormat)
        );
        assert_eq!(
            check_library_bytes(b""),
            Err(LibraryCheckError::UnknownFormat)
        );
    }
}
