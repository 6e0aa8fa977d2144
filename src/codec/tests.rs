//! Round trips and malformed input for the codec types.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::{collection::vec, prelude::*, strategy::ValueTree};

use crate::codec::{
    decode, encode,
    strategies::{check, field_table, field_value, long_str, short_str},
    CodecError, FieldArray, FieldTable, FieldValue, LongStr, ShortStr, MAX_NESTING,
};

#[test]
fn field_tables_round_trip() {
    check("field_tables_round_trip", 512, field_table(), |table| {
        let mut buf = BytesMut::new();
        encode::table(&mut buf, &table);
        let (rest, decoded) = decode::table(&buf).map_err(|e| {
            TestCaseError::fail(format!("decode failed: {:?}", CodecError::from(e)))
        })?;
        prop_assert!(rest.is_empty(), "{} bytes left over", rest.len());
        prop_assert_eq!(decoded, table);
        Ok(())
    });
}

#[test]
fn field_values_round_trip() {
    check("field_values_round_trip", 512, field_value(), |value| {
        let mut buf = BytesMut::new();
        encode::field_value(&mut buf, &value);
        prop_assert_eq!(buf[0], value.type_letter());
        let (rest, decoded) = decode::field_value(&buf).map_err(|e| {
            TestCaseError::fail(format!("decode failed: {:?}", CodecError::from(e)))
        })?;
        prop_assert!(rest.is_empty(), "{} bytes left over", rest.len());
        prop_assert_eq!(decoded, value);
        Ok(())
    });
}

#[test]
fn strings_round_trip() {
    check(
        "strings_round_trip",
        512,
        (short_str(), long_str()),
        |(short, long)| {
            let mut buf = BytesMut::new();
            encode::short_str(&mut buf, &short);
            encode::long_str(&mut buf, &long);
            prop_assert_eq!(buf.len(), 1 + short.len() + 4 + long.len());
            let (rest, s) = decode::short_str(&buf)
                .map_err(|e| TestCaseError::fail(format!("short: {:?}", CodecError::from(e))))?;
            let (rest, l) = decode::long_str(rest)
                .map_err(|e| TestCaseError::fail(format!("long: {:?}", CodecError::from(e))))?;
            prop_assert!(rest.is_empty());
            prop_assert_eq!(s, short);
            prop_assert_eq!(l, long);
            Ok(())
        },
    );
}

/// The table strategy is only as good as its reach: every type letter, nested containers, NaNs.
#[test]
fn field_value_strategy_reaches_every_type() {
    fn letters(value: &FieldValue, seen: &mut Vec<u8>) {
        if !seen.contains(&value.type_letter()) {
            seen.push(value.type_letter());
        }
        match value {
            FieldValue::Array(a) => a.iter().for_each(|v| letters(v, seen)),
            FieldValue::Table(t) => t.iter().for_each(|(_, v)| letters(v, seen)),
            _ => {}
        }
    }
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = vec(field_value(), 1..8);
    let mut seen = Vec::new();
    let (mut nan32, mut nan64) = (false, false);
    for _ in 0..500 {
        let values = strategy.new_tree(&mut runner).unwrap().current();
        for v in &values {
            letters(v, &mut seen);
            nan32 |= matches!(v, FieldValue::F32(f) if f.is_nan());
            nan64 |= matches!(v, FieldValue::F64(f) if f.is_nan());
        }
    }
    seen.sort_unstable();
    let mut all = b"tbBsuIilfdDSTVAFx".to_vec();
    all.sort_unstable();
    assert_eq!(
        String::from_utf8(seen).unwrap(),
        String::from_utf8(all).unwrap()
    );
    assert!(
        nan32 && nan64,
        "no NaN generated (f32: {nan32}, f64: {nan64})"
    );
}

#[test]
fn nan_payloads_survive_bit_for_bit() {
    let values = [
        FieldValue::F32(f32::from_bits(0x7fa0_0001)),
        FieldValue::F64(f64::from_bits(0xfff0_0000_0000_0001)),
        FieldValue::F64(-0.0),
    ];
    for value in values {
        let mut buf = BytesMut::new();
        encode::field_value(&mut buf, &value);
        let (_, decoded) = decode::field_value(&buf).unwrap();
        assert_eq!(decoded, value);
    }
    assert_ne!(FieldValue::F64(0.0), FieldValue::F64(-0.0));
}

#[test]
fn duplicate_keys_are_kept_when_decoding() {
    let mut buf = BytesMut::new();
    with_len(&mut buf, |b| {
        b.put_slice(b"\x01kI\x00\x00\x00\x01");
        b.put_slice(b"\x01kI\x00\x00\x00\x02");
    });
    let (_, table) = decode::table(&buf).unwrap();
    assert_eq!(table.len(), 2);
    assert_eq!(table.get("k"), Some(&FieldValue::I32(1)));
    let mut again = BytesMut::new();
    encode::table(&mut again, &table);
    assert_eq!(again, buf);
}

#[test]
fn rabbitmq_type_letters_on_the_wire() {
    let cases: [(FieldValue, &[u8]); 9] = [
        (FieldValue::Bool(true), b"t\x01"),
        (FieldValue::I8(-1), b"b\xff"),
        (FieldValue::I16(-2), b"s\xff\xfe"),
        (FieldValue::U16(2), b"u\x00\x02"),
        (FieldValue::U32(3), b"i\x00\x00\x00\x03"),
        (FieldValue::I64(-1), b"l\xff\xff\xff\xff\xff\xff\xff\xff"),
        (
            FieldValue::Decimal(crate::codec::Decimal { scale: 2, value: 5 }),
            b"D\x02\x00\x00\x00\x05",
        ),
        (FieldValue::Void, b"V"),
        (
            FieldValue::Bytes(bytes::Bytes::from_static(b"ab")),
            b"x\x00\x00\x00\x02ab",
        ),
    ];
    for (value, wire) in cases {
        let mut buf = BytesMut::new();
        encode::field_value(&mut buf, &value);
        assert_eq!(&buf[..], wire, "{value:?}");
        assert_eq!(decode::field_value(wire).unwrap().1, value);
    }
}

#[test]
fn tables_nest_to_the_limit_and_no_further() {
    for arrays in [false, true] {
        let ok = encoded(&nested(MAX_NESTING, arrays));
        let (_, table) = decode::table(&ok).unwrap_or_else(|e| {
            panic!(
                "{MAX_NESTING} levels (arrays: {arrays}) rejected: {:?}",
                CodecError::from(e)
            )
        });
        assert_eq!(table, nested(MAX_NESTING, arrays));
        let deep = encoded(&nested(MAX_NESTING + 1, arrays));
        assert_eq!(
            decode::table(&deep).map_err(CodecError::from).unwrap_err(),
            CodecError::NestingTooDeep { max: MAX_NESTING },
            "arrays: {arrays}"
        );
    }
}

/// A lone field value holding a table is that table's outermost level, as when it sits in a table.
#[test]
fn field_value_nesting_counts_the_value_itself() {
    let value = |levels| {
        let mut buf = BytesMut::new();
        encode::field_value(&mut buf, &FieldValue::Table(nested(levels, false)));
        buf
    };
    assert!(decode::field_value(&value(MAX_NESTING)).is_ok());
    assert_eq!(
        decode::field_value(&value(MAX_NESTING + 1))
            .map_err(CodecError::from)
            .unwrap_err(),
        CodecError::NestingTooDeep { max: MAX_NESTING }
    );
}

/// RabbitMQ relays a publisher's table untouched, and reads any octet but 0 as true; so does coney.
#[test]
fn a_boolean_octet_other_than_0_or_1_is_true() {
    for (octet, expected) in [(0u8, false), (1, true), (2, true), (0xff, true)] {
        let input = [b't', octet];
        let (rest, value) = decode::field_value(&input).expect("decodes");
        assert!(rest.is_empty());
        assert_eq!(value, FieldValue::Bool(expected), "octet {octet:#04x}");
        // The walker that checks a table on arrival agrees.
        let table = [0, 0, 0, 4, 1, b'k', b't', octet];
        let (rest, ()) = decode::skip_table(&table).expect("skips");
        assert!(rest.is_empty());
        let (_, decoded) = decode::table(&table).expect("decodes");
        assert_eq!(decoded.get("k"), Some(&FieldValue::Bool(expected)));
    }
}

#[test]
fn malformed_values_are_typed_errors() {
    let err = |input: &[u8]| {
        decode::field_value(input)
            .map_err(CodecError::from)
            .unwrap_err()
    };
    assert_eq!(err(b"Z"), CodecError::UnknownFieldType(b'Z'));
    // 0-9-1's own letter for a signed 16-bit value; RabbitMQ's errata use `s` instead.
    assert_eq!(err(b"U\x00\x01"), CodecError::UnknownFieldType(b'U'));
    assert_eq!(err(b"s\x00"), CodecError::Truncated);
    assert_eq!(err(b"S\x00\x00\x00\x05abc"), CodecError::Truncated);
    assert_eq!(err(b"x\xff\xff\xff\xff"), CodecError::Truncated);
    assert_eq!(err(b""), CodecError::Truncated);

    assert_eq!(
        decode::short_str(b"\x09abc")
            .map_err(CodecError::from)
            .unwrap_err(),
        CodecError::Truncated
    );
}

/// An entry must end inside its table: the bytes after the table's declared end are not its to read.
#[test]
fn table_entries_cannot_run_past_the_table() {
    let mut buf = BytesMut::new();
    buf.put_u32(7); // covers key and letter and 2 of the I32's 4 bytes
    buf.put_slice(b"\x03keyI\x00\x00\x00\x01");
    assert_eq!(
        decode::table(&buf).map_err(CodecError::from).unwrap_err(),
        CodecError::Truncated
    );
    let mut overlong = BytesMut::new();
    overlong.put_u32(100);
    overlong.put_slice(b"\x03keyV");
    assert_eq!(
        decode::table(&overlong)
            .map_err(CodecError::from)
            .unwrap_err(),
        CodecError::Truncated
    );
}

#[test]
fn short_strings_are_checked_when_built() {
    assert!(ShortStr::new(&"é".repeat(127)).is_ok()); // 254 bytes
    assert_eq!(
        ShortStr::new(&"é".repeat(128)).unwrap_err(),
        CodecError::ShortStrTooLong(256)
    );
    assert_eq!(
        ShortStr::try_from("x".repeat(256)).unwrap_err(),
        CodecError::ShortStrTooLong(256)
    );
    assert_eq!(ShortStr::new(&"x".repeat(255)).unwrap().len(), 255);
    assert_eq!(LongStr::from(vec![0xff]).as_str(), None);
}

/// `levels` tables (or one table holding `levels - 1` arrays) nested inside each other.
fn nested(levels: usize, arrays: bool) -> FieldTable {
    assert!(levels >= 1);
    if arrays {
        let mut value = FieldValue::Array(FieldArray::default());
        for _ in 2..levels {
            value = FieldValue::Array(FieldArray(vec![value]));
        }
        return if levels == 1 {
            FieldTable::new()
        } else {
            FieldTable::new().with("a", value)
        };
    }
    let mut table = FieldTable::new();
    for _ in 1..levels {
        table = FieldTable::new().with("a", table);
    }
    table
}

fn encoded(table: &FieldTable) -> BytesMut {
    let mut buf = BytesMut::new();
    encode::table(&mut buf, table);
    buf
}

fn with_len(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let mut inner = BytesMut::new();
    body(&mut inner);
    buf.put_u32(inner.len() as u32);
    buf.put_slice(&inner);
}

/// `Borrow<str>` promises that a short string hashes and compares as the `str` it holds, so a map keyed
/// by short strings can be looked up with a `&str`.
#[test]
fn short_string_keys_are_found_by_str() {
    use std::collections::{BTreeSet, HashSet};
    let keys = ["", "orders", "amq.ctag-0123456789abcdefghijkl", "é"];
    let hashed: HashSet<ShortStr> = keys.iter().map(|k| ShortStr::new(k).unwrap()).collect();
    let ordered: BTreeSet<ShortStr> = keys.iter().map(|k| ShortStr::new(k).unwrap()).collect();
    for key in keys {
        assert!(hashed.contains(key), "{key:?} in a HashSet");
        assert!(ordered.contains(key), "{key:?} in a BTreeSet");
    }
    assert!(!hashed.contains("order"));
}

/// A short string compares equal to the same text as `str`, `&str` and `String`, whichever side it is on.
#[test]
fn short_strings_compare_with_text_on_either_side() {
    let name = ShortStr::new("orders").unwrap();
    let owned = String::from("orders");
    assert_eq!(name, "orders");
    assert_eq!("orders", name);
    assert_eq!(name, *"orders");
    assert_eq!(*"orders", name);
    assert_eq!(name, owned);
    assert_eq!(owned, name);
    let other = String::from("order");
    assert_ne!(name, "order");
    assert_ne!("order", name);
    assert_ne!(name, other);
    assert_ne!(other, name);
}

/// The module docs promise decoded values of at most about 40 bytes per input byte: the densest input is
/// an array of one-byte voids (`V`), each a whole [`FieldValue`]; a table entry is at least two bytes
/// (an empty key's length and a type letter) for a key and a value.
#[test]
fn decoded_values_stay_within_the_documented_size_per_input_byte() {
    let value = std::mem::size_of::<FieldValue>();
    let entry = std::mem::size_of::<(ShortStr, FieldValue)>();
    assert!(value <= 40, "FieldValue is {value} bytes");
    assert!(entry <= 2 * 40, "a table entry is {entry} bytes");
}

/// Short strings from the network that are not UTF-8 are decoded lossily, never refused, and stay within
/// 255 bytes however many replacement characters they take.
#[test]
fn short_strings_that_are_not_utf8_decode_lossily() {
    let (rest, s) = decode::short_str(b"\x03k\xff\xfe!").unwrap();
    assert_eq!(rest, b"!");
    assert_eq!(s.as_str(), "k\u{FFFD}\u{FFFD}");
    // 255 invalid bytes would be 765 bytes of U+FFFD: cut at 255, on a character boundary.
    let mut wire = vec![255u8];
    wire.extend(std::iter::repeat(0xffu8).take(255));
    let (_, s) = decode::short_str(&wire).unwrap();
    assert_eq!(s.as_str(), "\u{FFFD}".repeat(85));
    // The shared-buffer decoder agrees, and a valid string still shares the buffer.
    let shared = Bytes::from_static(b"\x03k\xff\xfe");
    let (_, s) = decode::short_str_shared(&shared, Some(&shared)).unwrap();
    assert_eq!(s.as_str(), "k\u{FFFD}\u{FFFD}");
    // The skipper accepts what the decoder accepts.
    assert_eq!(decode::skip_short_str(b"\x02\xc3\x28").unwrap().0, b"");
}

/// `FieldTable::nests_deeper_than(MAX_NESTING)` says exactly which tables the decoder refuses, for
/// tables nested in tables and in arrays.
#[test]
fn nests_deeper_than_agrees_with_the_decoder() {
    fn nested(levels: usize, arrays: bool) -> FieldTable {
        let mut value = FieldValue::from(1i32);
        for _ in 1..levels {
            value = if arrays {
                FieldValue::Array(FieldArray(vec![value]))
            } else {
                FieldValue::Table(FieldTable::new().with("t", value))
            };
        }
        FieldTable::new().with("top", value)
    }
    for arrays in [false, true] {
        for levels in [
            1,
            2,
            MAX_NESTING - 1,
            MAX_NESTING,
            MAX_NESTING + 1,
            MAX_NESTING + 5,
        ] {
            let table = nested(levels, arrays);
            let mut buf = BytesMut::new();
            encode::table(&mut buf, &table);
            let decodes = decode::table(&buf).is_ok();
            assert_eq!(
                table.nests_deeper_than(MAX_NESTING),
                !decodes,
                "{levels} levels, arrays: {arrays}"
            );
        }
    }
}
