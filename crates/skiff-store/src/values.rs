//! Large values in files of their own (`<data_dir>/values`), out of sled's tree.
//!
//! sled 0.34 writes a page larger than a quarter of a segment (a leaf holding a few values of some
//! hundred KiB) to a blob file, rewrites that file whenever the page changes, and removes the old
//! one only once the segment that points at the new one is full, which with small records can be
//! never (spacejam/sled#786). Written in a loop, 1 MiB values grew `state/blobs` by 1.6 MB per MiB
//! written, without end, for 50 MiB of live state. So a value larger than [`FILE_THRESHOLD`] is
//! written once to a file here, and sled holds its [`FileRef`].
//!
//! A file is written and synced before the sled batch that refers to it is applied, so sled never
//! refers to a file a crash lost. A file no record refers to any more (its object was overwritten
//! and the history moved past it) is removed by a sweep: sled is flushed first, so the state a crash
//! could fall back to refers to none of the files removed. Files are only ever read through a
//! record, and snapshots carry the values themselves, never file names.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Values larger than this are kept in a file of their own. A sled leaf holds up to 16 records;
/// with values up to 32 KiB it stays far below the 2 MiB at which sled (8 MiB segments) writes a
/// page as a blob.
pub const FILE_THRESHOLD: usize = 32 << 10;

/// A value kept in a file: the file's name in the values directory and the value's length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    pub name: String,
    pub len: u64,
}

/// A value as a record holds it: inline, or in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    File(FileRef),
}

/// The directory of value files.
#[derive(Debug)]
pub struct ValueFiles {
    dir: PathBuf,
}

impl ValueFiles {
    /// Opens (or creates) the values directory.
    pub fn open(dir: &Path) -> io::Result<Self> {
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// Whether `name` is one this store gives its files (`a...` or `s...`, letters, digits, `-`).
    fn is_value_file(name: &str) -> bool {
        matches!(name.as_bytes().first(), Some(b'a' | b's'))
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        if !Self::is_value_file(name) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("invalid value file name {name:?}")));
        }
        Ok(self.dir.join(name))
    }

    /// Writes `value` to the file `name` (replacing any file of that name) and syncs it. Call
    /// [`ValueFiles::sync_dir`] after the last one, before a record refers to them.
    pub fn write(&self, name: &str, value: &[u8]) -> io::Result<FileRef> {
        let mut file = File::create(self.path(name)?)?;
        file.write_all(value)?;
        file.sync_data()?;
        Ok(FileRef { name: name.to_string(), len: value.len() as u64 })
    }

    /// Makes the names of the files written so far durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// Reads the value a record refers to.
    pub fn read(&self, file: &FileRef) -> io::Result<Vec<u8>> {
        let path = self.path(&file.name)?;
        let value = fs::read(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if value.len() as u64 != file.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} holds {} bytes, its record says {}", path.display(), value.len(), file.len),
            ));
        }
        Ok(value)
    }

    /// Removes every value file whose name is not in `keep` (anything else in the directory, such
    /// as a `lost+found`, is left alone); returns the bytes of the files kept.
    pub fn sweep(&self, keep: &HashSet<String>) -> io::Result<u64> {
        let mut kept = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !Self::is_value_file(&name) || !entry.file_type()?.is_file() {
                continue;
            }
            if keep.contains(name.as_ref()) {
                kept += entry.metadata()?.len();
            } else {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_round_trips_and_a_short_or_foreign_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = ValueFiles::open(dir.path()).expect("open");
        let file = files.write("a10-0", b"hello").expect("write");
        files.sync_dir().expect("sync");
        assert_eq!(files.read(&file).expect("read"), b"hello");
        let wrong = FileRef { len: 4, ..file.clone() };
        assert!(files.read(&wrong).is_err(), "a length that does not match is refused");
        let escape = FileRef { name: "../x".into(), len: 1 };
        assert!(files.read(&escape).is_err(), "a name that leaves the directory is refused");
        let gone = FileRef { name: "a11-0".into(), len: 1 };
        let err = files.read(&gone).expect_err("missing");
        assert!(err.to_string().contains("a11-0"), "{err}");
    }

    #[test]
    fn a_sweep_removes_what_nothing_refers_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = ValueFiles::open(dir.path()).expect("open");
        files.write("a1-0", &[1; 10]).expect("write");
        files.write("a2-0", &[2; 20]).expect("write");
        fs::create_dir(dir.path().join("lost+found")).expect("a directory of someone else's");
        fs::create_dir(dir.path().join("a3-0")).expect("a directory with a value file's name");
        let kept = files.sweep(&HashSet::from(["a2-0".to_string()])).expect("sweep");
        assert_eq!(kept, 20);
        let mut left: Vec<_> = fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        left.sort();
        assert_eq!(left, ["a2-0", "a3-0", "lost+found"]);
    }
}
