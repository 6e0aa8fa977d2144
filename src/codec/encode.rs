//! Writers for the primitive types, field values and tables.

use bytes::{BufMut, BytesMut};

use crate::codec::{FieldArray, FieldTable, FieldValue, LongStr, ShortStr};

/// `shortstr`: length octet and bytes. The length fits: [`ShortStr`] is at most 255 bytes by construction.
pub fn short_str(buf: &mut BytesMut, s: &ShortStr) {
    buf.put_u8(s.len() as u8);
    buf.put_slice(s.as_bytes());
}

/// `longstr`: 32-bit length and bytes.
///
/// A long string over 4 GiB cannot be framed at all (frame sizes are 32-bit), so lengths are written as
/// `u32` and callers keep payloads far below that.
pub fn long_str(buf: &mut BytesMut, s: &LongStr) {
    buf.put_u32(s.len() as u32);
    buf.put_slice(s.as_bytes());
}

/// `table`: the entries, prefixed by their total byte length.
pub fn table(buf: &mut BytesMut, table: &FieldTable) {
    with_length_prefix(buf, |buf| {
        for (key, value) in table.iter() {
            short_str(buf, key);
            field_value(buf, value);
        }
    });
}

/// A field array: the values, prefixed by their total byte length.
pub fn array(buf: &mut BytesMut, array: &FieldArray) {
    with_length_prefix(buf, |buf| {
        for value in array.iter() {
            field_value(buf, value);
        }
    });
}

/// A field value: its type letter, then the value.
pub fn field_value(buf: &mut BytesMut, value: &FieldValue) {
    buf.put_u8(value.type_letter());
    match value {
        FieldValue::Bool(v) => buf.put_u8(u8::from(*v)),
        FieldValue::I8(v) => buf.put_i8(*v),
        FieldValue::U8(v) => buf.put_u8(*v),
        FieldValue::I16(v) => buf.put_i16(*v),
        FieldValue::U16(v) => buf.put_u16(*v),
        FieldValue::I32(v) => buf.put_i32(*v),
        FieldValue::U32(v) => buf.put_u32(*v),
        FieldValue::I64(v) => buf.put_i64(*v),
        FieldValue::F32(v) => buf.put_f32(*v),
        FieldValue::F64(v) => buf.put_f64(*v),
        FieldValue::Decimal(d) => {
            buf.put_u8(d.scale);
            buf.put_u32(d.value);
        }
        FieldValue::LongStr(s) => long_str(buf, s),
        FieldValue::Timestamp(t) => buf.put_u64(t.0),
        FieldValue::Void => {}
        FieldValue::Array(a) => array(buf, a),
        FieldValue::Table(t) => table(buf, t),
        FieldValue::Bytes(b) => {
            buf.put_u32(b.len() as u32);
            buf.put_slice(b);
        }
    }
}

fn with_length_prefix(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let at = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}
