//! Field values: the typed values inside field tables and arrays.

use bytes::Bytes;

use crate::codec::{FieldArray, FieldTable, LongStr, Timestamp};

/// A value in a [`FieldTable`] or [`FieldArray`], one variant per type letter RabbitMQ uses.
///
/// RabbitMQ's type letters differ from the 0-9-1 spec's table (see RabbitMQ's errata): `s` is a signed
/// 16-bit integer, `u` an unsigned one, and there is no short-string value. Those letters are what goes on
/// the wire here.
///
/// Equality compares floats by their bits, so a decoded `NaN` equals the `NaN` that was encoded.
#[derive(Debug, Clone)]
pub enum FieldValue {
    /// `t`: boolean (written as octet 0 or 1; any octet but 0 reads as true, as RabbitMQ reads it).
    Bool(bool),
    /// `b`: signed 8-bit.
    I8(i8),
    /// `B`: unsigned 8-bit.
    U8(u8),
    /// `s`: signed 16-bit.
    I16(i16),
    /// `u`: unsigned 16-bit.
    U16(u16),
    /// `I`: signed 32-bit.
    I32(i32),
    /// `i`: unsigned 32-bit.
    U32(u32),
    /// `l`: signed 64-bit.
    I64(i64),
    /// `f`: 32-bit IEEE float.
    F32(f32),
    /// `d`: 64-bit IEEE float.
    F64(f64),
    /// `D`: decimal.
    Decimal(Decimal),
    /// `S`: long string.
    LongStr(LongStr),
    /// `T`: timestamp.
    Timestamp(Timestamp),
    /// `V`: no value.
    Void,
    /// `A`: array.
    Array(FieldArray),
    /// `F`: nested table.
    Table(FieldTable),
    /// `x`: byte array.
    Bytes(Bytes),
}

/// A decimal: `value / 10^scale`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// Number of decimal digits after the point.
    pub scale: u8,
    /// The unscaled value.
    pub value: u32,
}

impl FieldValue {
    /// The type letter this value is encoded with.
    pub fn type_letter(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal(_) => b'D',
            FieldValue::LongStr(_) => b'S',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Void => b'V',
            FieldValue::Array(_) => b'A',
            FieldValue::Table(_) => b'F',
            FieldValue::Bytes(_) => b'x',
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string content of a long string that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongStr(s) => s.as_str(),
            _ => None,
        }
    }

    /// Any integer variant widened to `i64` (a `U64` does not exist in RabbitMQ's set).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            FieldValue::I8(v) => v.into(),
            FieldValue::U8(v) => v.into(),
            FieldValue::I16(v) => v.into(),
            FieldValue::U16(v) => v.into(),
            FieldValue::I32(v) => v.into(),
            FieldValue::U32(v) => v.into(),
            FieldValue::I64(v) => v,
            _ => return None,
        })
    }

    /// The nested table, if this is one.
    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            FieldValue::Table(t) => Some(t),
            _ => None,
        }
    }
}

impl PartialEq for FieldValue {
    fn eq(&self, other: &FieldValue) -> bool {
        use FieldValue::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a == b,
            (I8(a), I8(b)) => a == b,
            (U8(a), U8(b)) => a == b,
            (I16(a), I16(b)) => a == b,
            (U16(a), U16(b)) => a == b,
            (I32(a), I32(b)) => a == b,
            (U32(a), U32(b)) => a == b,
            (I64(a), I64(b)) => a == b,
            (F32(a), F32(b)) => a.to_bits() == b.to_bits(),
            (F64(a), F64(b)) => a.to_bits() == b.to_bits(),
            (Decimal(a), Decimal(b)) => a == b,
            (LongStr(a), LongStr(b)) => a == b,
            (Timestamp(a), Timestamp(b)) => a == b,
            (Void, Void) => true,
            (Array(a), Array(b)) => a == b,
            (Table(a), Table(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            _ => false,
        }
    }
}

macro_rules! from_scalar {
    ($($ty:ty => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for FieldValue {
            fn from(v: $ty) -> FieldValue {
                FieldValue::$variant(v.into())
            }
        })*
    };
}

from_scalar! {
    bool => Bool, i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32, i64 => I64,
    f32 => F32, f64 => F64, Decimal => Decimal, LongStr => LongStr, Timestamp => Timestamp,
    FieldArray => Array, FieldTable => Table, String => LongStr, &'static str => LongStr,
}
