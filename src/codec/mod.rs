//! AMQP 0-9-1 data types and their wire encoding: short and long strings, field values, tables, arrays.
//!
//! Sans-IO: these are plain values and pure functions over byte slices. Decoding never allocates on a
//! length the peer claims: every length prefix is checked against the bytes actually given before
//! anything is copied. What it builds is proportional to its input, at most 40 bytes of decoded values per
//! input byte (an array of one-byte voids, each a 40-byte [`FieldValue`]; a table entry, 72 bytes, takes at
//! least two), so a 128 KiB header frame decodes to at most about 5 MiB. Nesting of tables and arrays is
//! capped at [`MAX_NESTING`], checked before recursing.

pub mod decode;
pub mod encode;
mod error;
mod field_table;
mod field_value;
mod long_str;
mod short_str;
#[cfg(test)]
pub(crate) mod strategies;
#[cfg(test)]
mod tests;
mod timestamp;

pub use error::CodecError;
pub use field_table::{FieldArray, FieldTable};
pub use field_value::{Decimal, FieldValue};
pub use long_str::LongStr;
pub use short_str::ShortStr;
pub use timestamp::Timestamp;

/// How deeply tables and arrays may nest (the outermost table is level 1).
///
/// Real peers nest two or three levels (capabilities inside server properties); the cap keeps a hostile
/// peer from using recursion to exhaust the stack.
pub const MAX_NESTING: usize = 32;
