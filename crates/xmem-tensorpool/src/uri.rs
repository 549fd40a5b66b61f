//! Region URIs (§2.5): `shm:file?path=<abs-path>[|require_hugepages=true|false]`.
//!
//! Parameters are separated by `|`; only `path` (required, absolute, VCHAR except `?`, `|` and
//! space) and `require_hugepages` exist; keys match exactly, each at most once; 4096 bytes at
//! most. Anything else is rejected whole.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Longest URI accepted (as the C implementation).
pub const MAX_URI_LEN: usize = 4096;

/// A parsed region URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmUri {
    path: PathBuf,
    require_hugepages: bool,
}

fn bad(uri: &str, why: impl Into<String>) -> Error {
    Error::BadUri {
        uri: uri.chars().take(200).collect(),
        why: why.into(),
    }
}

impl ShmUri {
    /// A URI for `path` (absolute).
    pub fn new(path: impl Into<PathBuf>, require_hugepages: bool) -> Result<ShmUri> {
        let path = path.into();
        let text = path.to_str().ok_or_else(|| bad("?", "the path is not UTF-8"))?;
        ShmUri::parse(&format!(
            "shm:file?path={text}|require_hugepages={require_hugepages}"
        ))
    }

    /// Parses and validates `uri`.
    pub fn parse(uri: &str) -> Result<ShmUri> {
        if uri.len() > MAX_URI_LEN {
            return Err(bad(uri, format!("longer than {MAX_URI_LEN} bytes")));
        }
        let rest = uri
            .strip_prefix("shm:file?")
            .ok_or_else(|| bad(uri, "the scheme must be `shm:file?`"))?;
        let mut path = None;
        let mut huge = None;
        for param in rest.split('|') {
            let (key, value) = param
                .split_once('=')
                .ok_or_else(|| bad(uri, format!("parameter {param:?} has no `=`")))?;
            if key.is_empty() || value.is_empty() {
                return Err(bad(uri, "an empty key or value"));
            }
            match key {
                "path" => {
                    if path.is_some() {
                        return Err(bad(uri, "`path` given twice"));
                    }
                    if !value.starts_with('/') {
                        return Err(bad(uri, "the path must be absolute"));
                    }
                    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic() || *c == '?') {
                        return Err(bad(uri, format!("the path holds {c:?}")));
                    }
                    path = Some(PathBuf::from(value));
                }
                "require_hugepages" => {
                    if huge.is_some() {
                        return Err(bad(uri, "`require_hugepages` given twice"));
                    }
                    huge = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(uri, "require_hugepages is true or false")),
                    });
                }
                other => return Err(bad(uri, format!("unknown parameter {other:?}"))),
            }
        }
        Ok(ShmUri {
            path: path.ok_or_else(|| bad(uri, "no `path`"))?,
            require_hugepages: huge.unwrap_or(false),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the region must be on hugetlbfs.
    pub fn require_hugepages(&self) -> bool {
        self.require_hugepages
    }
}

impl fmt::Display for ShmUri {
    /// The form drivers emit: `require_hugepages` always given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shm:file?path={}|require_hugepages={}",
            self.path.display(),
            self.require_hugepages
        )
    }
}
