//! The encoding of a snapshot and of its file, written and read piece by piece so that a snapshot
//! costs one copy of itself in memory, not one per layer of encoding.
//!
//! The bytes are exactly what [`codec::encode`] makes of the payload (format byte, the applied log
//! id, the membership, then every `(key, value)` pair as bincode writes a `Vec<(Vec<u8>, Vec<u8>)>`)
//! and of the file (format byte, the meta, then the payload as a length-prefixed byte string), so
//! snapshots written or sent by an earlier Skiff still read, and members of either build exchange
//! them.

use std::io::Write;
use std::path::Path;

use openraft::{LogId, SnapshotMeta, StoredMembership};
use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::types::Member;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("snapshot is truncated: {0}")]
    Truncated(&'static str),
    #[error("snapshot has {0} bytes after its last entry")]
    Trailing(usize),
}

/// What a snapshot file holds: the snapshot's meta and its payload.
pub struct SnapshotFile {
    pub meta: SnapshotMeta<u64, Member>,
    pub payload: Vec<u8>,
}

/// Builds a payload one entry at a time.
pub struct PayloadWriter {
    out: Vec<u8>,
    /// Where the entry count goes once known.
    count_at: usize,
    count: u64,
}

impl PayloadWriter {
    pub fn new(applied: &Option<LogId<u64>>, membership: &StoredMembership<u64, Member>) -> Result<Self, CodecError> {
        let mut out = vec![codec::FORMAT_V1];
        bincode::serialize_into(&mut out, applied).map_err(CodecError::Encode)?;
        bincode::serialize_into(&mut out, membership).map_err(CodecError::Encode)?;
        let count_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        Ok(Self { out, count_at, count: 0 })
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        for bytes in [key, value] {
            self.out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            self.out.extend_from_slice(bytes);
        }
        self.count += 1;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out[self.count_at..self.count_at + 8].copy_from_slice(&self.count.to_le_bytes());
        self.out
    }
}

/// Reads a payload without copying its entries: they borrow from the bytes.
pub struct PayloadReader<'a> {
    pub applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, Member>,
    rest: &'a [u8],
    left: u64,
}

impl<'a> PayloadReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, SnapshotError> {
        let mut rest = match bytes.split_first() {
            None => return Err(CodecError::Empty.into()),
            Some((&codec::FORMAT_V1, rest)) => rest,
            Some((&other, _)) => return Err(CodecError::UnknownFormat(other).into()),
        };
        let applied = read_value(&mut rest)?;
        let membership = read_value(&mut rest)?;
        let left = take_u64(&mut rest, "entry count")?;
        Ok(Self { applied, membership, rest, left })
    }
}

impl<'a> Iterator for PayloadReader<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            if !self.rest.is_empty() {
                let trailing = self.rest.len();
                self.rest = &[];
                return Some(Err(SnapshotError::Trailing(trailing)));
            }
            return None;
        }
        self.left -= 1;
        let entry = take_bytes(&mut self.rest, "key").and_then(|k| Ok((k, take_bytes(&mut self.rest, "value")?)));
        if entry.is_err() {
            self.left = 0;
            self.rest = &[];
        }
        Some(entry)
    }
}

fn read_value<T: DeserializeOwned>(rest: &mut &[u8]) -> Result<T, SnapshotError> {
    bincode::deserialize_from(rest).map_err(|e| CodecError::Decode(e).into())
}

fn take_u64(rest: &mut &[u8], what: &'static str) -> Result<u64, SnapshotError> {
    let (head, tail) = rest.split_first_chunk::<8>().ok_or(SnapshotError::Truncated(what))?;
    *rest = tail;
    Ok(u64::from_le_bytes(*head))
}

fn take_bytes<'a>(rest: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], SnapshotError> {
    let len = take_u64(rest, what)?;
    let len = usize::try_from(len).ok().filter(|&l| l <= rest.len()).ok_or(SnapshotError::Truncated(what))?;
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    Ok(bytes)
}

/// Checks that `payload` reads whole: its header and every entry, nothing after them.
pub fn validate(payload: &[u8]) -> Result<(), SnapshotError> {
    PayloadReader::new(payload)?.try_for_each(|entry| entry.map(|_| ()))
}

/// Writes the snapshot file (meta, then the payload) to `path`, fsynced, without copying the payload.
pub fn write_file(path: &Path, meta: &SnapshotMeta<u64, Member>, payload: &[u8]) -> std::io::Result<()> {
    let mut header = vec![codec::FORMAT_V1];
    bincode::serialize_into(&mut header, meta).map_err(std::io::Error::other)?;
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut f = std::fs::File::create(path)?;
    f.write_all(&header)?;
    f.write_all(payload)?;
    f.sync_all()
}

/// Reads a snapshot file: its meta and its payload (the file's bytes, less the header, in place).
pub fn read_file(path: &Path) -> std::io::Result<Option<SnapshotFile>> {
    let mut bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let invalid = |e: SnapshotError| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let (meta, header) = {
        let mut rest = match bytes.split_first() {
            None => return Err(invalid(CodecError::Empty.into())),
            Some((&codec::FORMAT_V1, rest)) => rest,
            Some((&other, _)) => return Err(invalid(CodecError::UnknownFormat(other).into())),
        };
        let meta: SnapshotMeta<u64, Member> = read_value(&mut rest).map_err(invalid)?;
        let len = take_u64(&mut rest, "payload length").map_err(invalid)?;
        if len != rest.len() as u64 {
            return Err(invalid(SnapshotError::Truncated("payload")));
        }
        (meta, bytes.len() - rest.len())
    };
    bytes.drain(..header);
    Ok(Some(SnapshotFile { meta, payload: bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    /// The layout earlier Skiffs wrote with `codec::encode`.
    #[derive(Serialize, Deserialize)]
    struct Payload {
        applied: Option<LogId<u64>>,
        membership: StoredMembership<u64, Member>,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    }

    #[derive(Serialize, Deserialize)]
    struct File {
        meta: SnapshotMeta<u64, Member>,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    }

    fn log_id(index: u64) -> Option<LogId<u64>> {
        Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), index))
    }

    fn sample() -> Payload {
        Payload {
            applied: log_id(42),
            membership: StoredMembership::default(),
            entries: vec![(b"dk1".to_vec(), b"v".to_vec()), (b"h\0".to_vec(), Vec::new()), (Vec::new(), vec![7; 300])],
        }
    }

    #[test]
    fn writes_what_the_codec_wrote_and_reads_it_back() {
        let p = sample();
        let mut w = PayloadWriter::new(&p.applied, &p.membership).expect("header");
        for (k, v) in &p.entries {
            w.push(k, v);
        }
        let bytes = w.finish();
        assert_eq!(bytes, codec::encode(&p).expect("encode"), "the same bytes as before");
        let r = PayloadReader::new(&bytes).expect("header");
        assert_eq!(r.applied, p.applied);
        let entries: Vec<(Vec<u8>, Vec<u8>)> =
            r.map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<_, _>>().expect("entries");
        assert_eq!(entries, p.entries);
    }

    #[test]
    fn the_file_is_what_the_codec_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.bin");
        let meta = SnapshotMeta {
            last_log_id: log_id(9),
            last_membership: StoredMembership::default(),
            snapshot_id: "a".into(),
        };
        let payload = codec::encode(&sample()).expect("encode");
        write_file(&path, &meta, &payload).expect("write");
        let old = codec::encode(&File { meta: meta.clone(), payload: payload.clone() }).expect("encode");
        assert_eq!(std::fs::read(&path).expect("read"), old);
        let read = read_file(&path).expect("read").expect("a file");
        assert_eq!(read.meta, meta);
        assert_eq!(read.payload, payload);
    }

    #[test]
    fn a_cut_payload_is_an_error_at_every_length() {
        let bytes = codec::encode(&sample()).expect("encode");
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            let failed = match PayloadReader::new(cut) {
                Err(_) => true,
                Ok(r) => r.collect::<Result<Vec<_>, _>>().is_err(),
            };
            assert!(failed, "{len} of {} bytes read as whole", bytes.len());
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            if let Ok(r) = PayloadReader::new(&bytes) {
                for entry in r {
                    let _ = entry;
                }
            }
        }
    }
}
