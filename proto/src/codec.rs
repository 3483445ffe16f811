//! Payload encoding. bincode is pinned to 2.0.1 (DESIGN §8); everything else in the workspace
//! goes through these two functions, so replacing it touches only this file.

use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("malformed message: {0}")]
    Decode(String),
    #[error("malformed message: {0} trailing bytes after the payload")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes exactly one value; trailing bytes are an error, not ignored.
pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    // The limit keeps a hostile length inside the payload (a Vec or String claiming 4 GiB) from
    // allocating: bincode checks claimed lengths against it before reserving memory.
    let cfg = config().with_limit::<{ crate::frame::MAX_FRAME }>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, cfg)
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}
