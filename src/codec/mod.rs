//! AMQP 0-9-1 data types and their wire encoding: short and long strings, field values, tables, arrays.
//!
//! Sans-IO: these are plain values and pure functions over byte slices. Decoding never allocates more
//! than the bytes it has been given, and nesting of tables and arrays is capped at [`MAX_NESTING`],
//! checked before recursing.

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
