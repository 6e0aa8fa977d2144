//! nom parsers for the primitive types, field values and tables.
//!
//! All parsers work on complete input (a whole frame payload is in memory before any method is decoded),
//! so running out of bytes is [`CodecError::Truncated`]. No parser allocates on a length it has not seen
//! the bytes for: a length prefix is checked against the remaining input before anything is copied. The
//! values built are at most 40 bytes per input byte (see the module docs of [`crate::codec`]).

use bytes::Bytes;
use nom::{
    bytes::complete::take,
    number::complete::{be_f32, be_f64, be_i16, be_i32, be_i64, be_u16, be_u32, be_u64, be_u8},
    IResult,
};

use crate::codec::{
    CodecError, Decimal, FieldArray, FieldTable, FieldValue, LongStr, ShortStr, Timestamp,
    MAX_NESTING,
};

type Parsed<'a, T> = IResult<&'a [u8], T, CodecError>;

/// `octet`.
pub fn octet(input: &[u8]) -> Parsed<'_, u8> {
    be_u8(input)
}

/// `short`: big-endian u16.
pub fn short(input: &[u8]) -> Parsed<'_, u16> {
    be_u16(input)
}

/// `long`: big-endian u32.
pub fn long(input: &[u8]) -> Parsed<'_, u32> {
    be_u32(input)
}

/// `longlong`: big-endian u64.
pub fn longlong(input: &[u8]) -> Parsed<'_, u64> {
    be_u64(input)
}

/// `timestamp`.
pub fn timestamp(input: &[u8]) -> Parsed<'_, Timestamp> {
    let (input, secs) = be_u64(input)?;
    Ok((input, Timestamp(secs)))
}

/// `shortstr`: length octet, then that many bytes of UTF-8 (decoded lossily if they are not: see
/// [`ShortStr`]).
pub fn short_str(input: &[u8]) -> Parsed<'_, ShortStr> {
    let (input, len) = be_u8(input)?;
    let (input, bytes) = take(len)(input)?;
    Ok((input, ShortStr::from_wire(bytes)))
}

/// `shortstr` like [`short_str`]; with `shared` (a buffer that `input` lies in), the string shares its
/// allocation instead of being copied into a new one.
// Inlined into each method's decoder: a delivery decodes three, and each call cost a fifth of the
// decoder's instructions when it was not (callgrind, fake-broker deliveries).
#[inline(always)]
pub fn short_str_shared<'a>(input: &'a [u8], shared: Option<&Bytes>) -> Parsed<'a, ShortStr> {
    let (input, len) = be_u8(input)?;
    let (input, bytes) = take(len)(input)?;
    let s = match shared {
        Some(shared) => ShortStr::from_wire_shared(shared, bytes),
        None => ShortStr::from_wire(bytes),
    };
    Ok((input, s))
}

/// `longstr`: 32-bit length, then that many bytes.
pub fn long_str(input: &[u8]) -> Parsed<'_, LongStr> {
    let (input, bytes) = long_bytes(input)?;
    Ok((input, LongStr::from(Bytes::copy_from_slice(bytes))))
}

fn long_bytes(input: &[u8]) -> Parsed<'_, &[u8]> {
    let (input, len) = be_u32(input)?;
    // `take` checks `len` against what is left before slicing; nothing is allocated from `len`.
    take(len)(input)
}

/// `table`: 32-bit byte length, then (short string name, field value) pairs.
pub fn table(input: &[u8]) -> Parsed<'_, FieldTable> {
    table_at(input, 1)
}

/// A field value: type letter, then the value.
///
/// A table or array value is itself the outermost nesting level, as the outermost table is in [`table`].
pub fn field_value(input: &[u8]) -> Parsed<'_, FieldValue> {
    value_at(input, 0)
}

/// `depth` is the nesting level of the table being read (the outermost is 1).
fn table_at(input: &[u8], depth: usize) -> Parsed<'_, FieldTable> {
    let (rest, mut body) = long_bytes(input)?;
    let mut table = FieldTable::new();
    while !body.is_empty() {
        let (after_key, key) = short_str(body)?;
        let (after_value, value) = value_at(after_key, depth)?;
        table.push_decoded(key, value);
        body = after_value;
    }
    Ok((rest, table))
}

fn array_at(input: &[u8], depth: usize) -> Parsed<'_, FieldArray> {
    let (rest, mut body) = long_bytes(input)?;
    let mut values = Vec::new();
    while !body.is_empty() {
        let (after, value) = value_at(body, depth)?;
        values.push(value);
        body = after;
    }
    Ok((rest, FieldArray(values)))
}

/// Reads one value found inside a container at nesting level `depth` (0: inside none).
fn value_at(input: &[u8], depth: usize) -> Parsed<'_, FieldValue> {
    let (input, letter) = be_u8(input)?;
    let value = match letter {
        b't' => {
            // Any octet but 0 is true, as RabbitMQ and the Java client read it. RabbitMQ relays a
            // publisher's table untouched, so refusing another octet would close the connection of
            // every consumer over one message, which the broker then requeues.
            let (input, b) = be_u8(input)?;
            return Ok((input, FieldValue::Bool(b != 0)));
        }
        b'b' => return be_u8(input).map(|(i, v)| (i, FieldValue::I8(v as i8))),
        b'B' => return be_u8(input).map(|(i, v)| (i, FieldValue::U8(v))),
        b's' => return be_i16(input).map(|(i, v)| (i, FieldValue::I16(v))),
        b'u' => return be_u16(input).map(|(i, v)| (i, FieldValue::U16(v))),
        b'I' => return be_i32(input).map(|(i, v)| (i, FieldValue::I32(v))),
        b'i' => return be_u32(input).map(|(i, v)| (i, FieldValue::U32(v))),
        b'l' => return be_i64(input).map(|(i, v)| (i, FieldValue::I64(v))),
        b'f' => return be_f32(input).map(|(i, v)| (i, FieldValue::F32(v))),
        b'd' => return be_f64(input).map(|(i, v)| (i, FieldValue::F64(v))),
        b'D' => {
            let (input, scale) = be_u8(input)?;
            let (input, value) = be_u32(input)?;
            return Ok((input, FieldValue::Decimal(Decimal { scale, value })));
        }
        b'S' => return long_str(input).map(|(i, v)| (i, FieldValue::LongStr(v))),
        b'T' => return timestamp(input).map(|(i, v)| (i, FieldValue::Timestamp(v))),
        b'V' => return Ok((input, FieldValue::Void)),
        b'x' => {
            let (input, bytes) = long_bytes(input)?;
            return Ok((input, FieldValue::Bytes(Bytes::copy_from_slice(bytes))));
        }
        b'A' | b'F' => letter,
        other => return Err(nom::Err::Failure(CodecError::UnknownFieldType(other))),
    };
    // The check comes before the recursive call, so hostile nesting costs at most MAX_NESTING stack frames.
    check_nesting(depth)?;
    if value == b'A' {
        let (input, array) = array_at(input, depth + 1)?;
        Ok((input, FieldValue::Array(array)))
    } else {
        let (input, table) = table_at(input, depth + 1)?;
        Ok((input, FieldValue::Table(table)))
    }
}

/// Fails if a container inside one at nesting level `depth` would be nested too deeply.
fn check_nesting(depth: usize) -> Result<(), nom::Err<CodecError>> {
    if depth >= MAX_NESTING {
        return Err(nom::Err::Failure(CodecError::NestingTooDeep {
            max: MAX_NESTING,
        }));
    }
    Ok(())
}

// Checking without building: the same rules as the parsers above, for input that is validated where it
// arrives and decoded later elsewhere (a delivery's properties, built on the consumer's thread). Each
// fails exactly where its parser would, with the same error, and allocates nothing.

/// Checks a `shortstr` as [`short_str`] does and returns the input after it.
pub fn skip_short_str(input: &[u8]) -> Parsed<'_, ()> {
    let (input, len) = be_u8(input)?;
    let (input, _) = take(len)(input)?;
    Ok((input, ()))
}

/// Checks a `longstr` as [`long_str`] does and returns the input after it.
pub fn skip_long_str(input: &[u8]) -> Parsed<'_, ()> {
    let (input, _) = long_bytes(input)?;
    Ok((input, ()))
}

/// Checks a `table` as [`table`] does and returns the input after it.
pub fn skip_table(input: &[u8]) -> Parsed<'_, ()> {
    skip_table_at(input, 1)
}

fn skip_table_at(input: &[u8], depth: usize) -> Parsed<'_, ()> {
    let (rest, mut body) = long_bytes(input)?;
    while !body.is_empty() {
        let (after_key, ()) = skip_short_str(body)?;
        let (after_value, ()) = skip_value_at(after_key, depth)?;
        body = after_value;
    }
    Ok((rest, ()))
}

fn skip_array_at(input: &[u8], depth: usize) -> Parsed<'_, ()> {
    let (rest, mut body) = long_bytes(input)?;
    while !body.is_empty() {
        let (after, ()) = skip_value_at(body, depth)?;
        body = after;
    }
    Ok((rest, ()))
}

/// [`value_at`] without the value.
fn skip_value_at(input: &[u8], depth: usize) -> Parsed<'_, ()> {
    let (input, letter) = be_u8(input)?;
    let fixed = |n: usize| take(n)(input).map(|(i, _)| (i, ()));
    let container = match letter {
        b't' | b'b' | b'B' => return fixed(1),
        b's' | b'u' => return fixed(2),
        b'I' | b'i' | b'f' => return fixed(4),
        b'l' | b'd' | b'T' => return fixed(8),
        b'D' => return fixed(5),
        b'S' | b'x' => return skip_long_str(input),
        b'V' => return Ok((input, ())),
        b'A' | b'F' => letter,
        other => return Err(nom::Err::Failure(CodecError::UnknownFieldType(other))),
    };
    check_nesting(depth)?;
    if container == b'A' {
        skip_array_at(input, depth + 1)
    } else {
        skip_table_at(input, depth + 1)
    }
}
