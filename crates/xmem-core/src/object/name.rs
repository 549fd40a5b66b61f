//! Object names.
//!
//! A name is what users type (`camera`), never a path: it becomes the file `xmem.camera` in the
//! shared-memory directory. The `xmem.` prefix keeps xmem's objects findable and keeps xmem away
//! from everyone else's files.

use crate::error::{Error, Result};

/// Longest accepted name. Leaves room for the prefix within a file name's 255 bytes.
pub const MAX_NAME_LEN: usize = 200;

/// Prefix of every xmem object's file name.
pub const FILE_PREFIX: &str = "xmem.";

/// Checks that `name` is an acceptable object name.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is too long")
    } else if name.starts_with('/') {
        Some("it starts with '/': names are not paths, drop the '/'")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains("..") {
        Some("it contains '..'")
    } else if name.starts_with('.') {
        Some("it starts with '.'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it contains a character other than A-Z a-z 0-9 . _ -")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_string(),
            reason,
            max: MAX_NAME_LEN,
        }),
        None => Ok(()),
    }
}

/// The file name of the object called `name`.
pub fn file_name(name: &str) -> Result<String> {
    validate_name(name)?;
    Ok(format!("{FILE_PREFIX}{name}"))
}

/// The object name in an xmem file name, if it is one.
pub fn name_of_file(file_name: &str) -> Option<&str> {
    file_name
        .strip_prefix(FILE_PREFIX)
        .filter(|n| validate_name(n).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for n in ["camera", "cam-0", "a.b_c", "X", &"n".repeat(MAX_NAME_LEN)] {
            validate_name(n).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("/camera", "not paths"),
            ("a/b", "'/'"),
            ("a..b", "'..'"),
            ("..", "'..'"),
            (".hidden", "starts with '.'"),
            ("sp ace", "character"),
            ("tab\t", "character"),
            ("ünï", "character"),
        ];
        for (name, why) in cases {
            let err = validate_name(name).unwrap_err().to_string();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert!(validate_name(&long).unwrap_err().to_string().contains("too long"));
    }

    #[test]
    fn maps_names_to_files_and_back() {
        assert_eq!(file_name("cam").unwrap(), "xmem.cam");
        assert_eq!(name_of_file("xmem.cam"), Some("cam"));
        assert_eq!(name_of_file("other"), None);
        assert_eq!(name_of_file("xmem."), None);
    }
}
