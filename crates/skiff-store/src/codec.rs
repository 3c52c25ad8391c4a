//! The versioned binary encoding of everything Skiff stores on disk or sends between members.
//!
//! Every encoded value starts with one format byte, then bincode. A future format gets a new byte
//! and a decoder for the old one, so data written by an older Skiff stays readable.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The format byte of the current encoding (bincode 1, little-endian, fixed-width integers).
pub const FORMAT_V1: u8 = 1;
/// The same encoding for a value whose type gained fields since format 1 (the watch history since
/// it records each change's previous revision): the reader picks the type by the byte.
pub const FORMAT_V2: u8 = 2;
/// A record of the state machine whose values may be kept in files of their own
/// ([`crate::values`]): never sent to another member.
pub const FORMAT_V3: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode: {0}")]
    Encode(bincode::Error),
    #[error("cannot decode: {0}")]
    Decode(bincode::Error),
    #[error("cannot decode: empty value")]
    Empty,
    #[error("cannot decode: unknown format byte {0} (written by a newer Skiff?)")]
    UnknownFormat(u8),
}

/// Encodes `value` with the current format byte in front.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_as(FORMAT_V1, value)
}

/// Encodes `value` with `format` in front.
pub fn encode_as<T: Serialize + ?Sized>(format: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    let size = bincode::serialized_size(value).map_err(CodecError::Encode)?;
    let mut out = Vec::with_capacity(size as usize + 1);
    out.push(format);
    bincode::serialize_into(&mut out, value).map_err(CodecError::Encode)?;
    Ok(out)
}

/// The length [`encode`] gives `value`, without encoding it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<u64, CodecError> {
    Ok(bincode::serialized_size(value).map_err(CodecError::Encode)? + 1)
}

/// Decodes a value written by [`encode`] (any format this Skiff knows).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_V1 | &FORMAT_V2 | &FORMAT_V3, rest)) => bincode::deserialize(rest).map_err(CodecError::Decode),
        Some((&other, _)) => Err(CodecError::UnknownFormat(other)),
    }
}

/// The format byte of an encoded value.
pub fn format_of(bytes: &[u8]) -> Result<u8, CodecError> {
    bytes.first().copied().ok_or(CodecError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, Op};

    #[test]
    fn command_round_trips_with_format_byte() {
        let cmd = Command::Writes(vec![vec![Op::Put { key: "/kv/a".into(), value: vec![1, 2, 3], expect: Some(0) }]]);
        let bytes = encode(&cmd).expect("encode");
        assert_eq!(bytes[0], FORMAT_V1);
        let back: Command = decode(&bytes).expect("decode");
        assert_eq!(back, cmd);
    }

    #[test]
    fn unknown_format_is_refused_not_misread() {
        let err = decode::<Command>(&[9, 0, 0]).expect_err("must fail");
        assert!(matches!(err, CodecError::UnknownFormat(9)), "{err}");
    }
}
