//! The one error type of the sans-IO decoders.

use nom::error::{ErrorKind, ParseError};

/// Why bytes could not be decoded as AMQP 0-9-1 data.
///
/// Every variant is a property of the input, never of the decoder's state, so the same bytes always give
/// the same error. [`CodecError::Truncated`] inside a complete frame means the frame lied about its
/// contents; the frame layer reports "need more bytes" separately, as `Ok(None)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A value runs past the end of the bytes that contain it.
    #[error("truncated: a value runs past the end of its frame")]
    Truncated,
    /// A field value type letter outside RabbitMQ's set (`t b B s u I i l f d D S T V A F x`).
    #[error("unknown field value type {0:#04x}")]
    UnknownFieldType(u8),
    /// Tables and arrays nested deeper than [`MAX_NESTING`](crate::codec::MAX_NESTING).
    #[error("field tables nested deeper than {max} levels")]
    NestingTooDeep {
        /// The limit that was hit.
        max: usize,
    },
    /// A short string longer than 255 bytes (only possible when building one, never on the wire).
    #[error("short string of {0} bytes is longer than 255")]
    ShortStrTooLong(usize),
    /// A (class id, method id) pair the spec does not define.
    #[error("unknown method: class {class_id}, method {method_id}")]
    UnknownMethod {
        /// The class id received.
        class_id: u16,
        /// The method id received.
        method_id: u16,
    },
}

impl<'a> ParseError<&'a [u8]> for CodecError {
    fn from_error_kind(_input: &'a [u8], _kind: ErrorKind) -> Self {
        // Every primitive parser used on method payloads is a `complete` one; the only way they fail is by
        // running out of input.
        CodecError::Truncated
    }

    fn append(_input: &'a [u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

impl From<nom::Err<CodecError>> for CodecError {
    fn from(err: nom::Err<CodecError>) -> Self {
        match err {
            nom::Err::Incomplete(_) => CodecError::Truncated,
            nom::Err::Error(e) | nom::Err::Failure(e) => e,
        }
    }
}
