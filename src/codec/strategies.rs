//! proptest strategies for the codec types, and the seeded runner every property test in the crate uses.
//!
//! The generated method strategies (`crate::spec::strategies`) are built from these.

use std::{
    collections::hash_map::RandomState,
    fmt::Debug,
    hash::{BuildHasher, Hasher},
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner},
};

use crate::codec::{
    Decimal, FieldArray, FieldTable, FieldValue, LongStr, ShortStr, Timestamp, MAX_NESTING,
};

/// Any short string: UTF-8 of 0 to 255 bytes, with the 255-byte limit itself and multi-byte characters
/// straddling it well represented.
pub(crate) fn short_str() -> impl Strategy<Value = ShortStr> {
    prop_oneof![
        3 => "[a-z0-9._-]{0,24}",
        2 => vec(any::<char>(), 0..=255).prop_map(|chars| {
            let mut s = String::new();
            for c in chars {
                if s.len() + c.len_utf8() > ShortStr::MAX_LEN {
                    break;
                }
                s.push(c);
            }
            s
        }),
        1 => "[a-z]{255}",
    ]
    .prop_map(|s| ShortStr::try_from(s).expect("the strategy keeps to 255 bytes"))
}

/// Any long string: arbitrary bytes, not necessarily UTF-8.
pub(crate) fn long_str() -> impl Strategy<Value = LongStr> {
    vec(any::<u8>(), 0..300).prop_map(LongStr::from)
}

/// Any timestamp.
pub(crate) fn timestamp() -> impl Strategy<Value = Timestamp> {
    any::<u64>().prop_map(Timestamp)
}

/// Any field value of the 17 types, tables and arrays nested up to 4 levels below this value.
pub(crate) fn field_value() -> impl Strategy<Value = FieldValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<i64>().prop_map(FieldValue::I64),
        // Arbitrary bit patterns as well as proptest's float classes, and NaNs with any sign and payload
        // (signalling ones included): all must survive the round trip bit for bit.
        prop_oneof![
            any::<f32>(),
            any::<u32>().prop_map(f32::from_bits),
            any::<u32>().prop_map(|bits| f32::from_bits(bits | 0x7f80_0001)),
        ]
        .prop_map(FieldValue::F32),
        prop_oneof![
            any::<f64>(),
            any::<u64>().prop_map(f64::from_bits),
            any::<u64>().prop_map(|bits| f64::from_bits(bits | 0x7ff0_0000_0000_0001)),
        ]
        .prop_map(FieldValue::F64),
        (any::<u8>(), any::<u32>())
            .prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value })),
        long_str().prop_map(FieldValue::LongStr),
        timestamp().prop_map(FieldValue::Timestamp),
        Just(FieldValue::Void),
        vec(any::<u8>(), 0..64).prop_map(|b| FieldValue::Bytes(Bytes::from(b))),
    ];
    // Depth 4 keeps every generated table far inside MAX_NESTING (a table holding this value adds one).
    const _: () = assert!(4 + 2 < MAX_NESTING);
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(|v| FieldValue::Array(FieldArray(v))),
            vec((short_str(), inner), 0..8)
                .prop_map(|entries| FieldValue::Table(table_of(entries))),
        ]
    })
}

/// Any field table, nested tables and arrays included. Keys may repeat: decoding keeps duplicates.
pub(crate) fn field_table() -> impl Strategy<Value = FieldTable> {
    vec((short_str(), field_value()), 0..8).prop_map(table_of)
}

/// Builds a table as a decoder would: every entry kept, in order, duplicate keys included.
fn table_of(entries: Vec<(ShortStr, FieldValue)>) -> FieldTable {
    let mut table = FieldTable::new();
    for (key, value) in entries {
        table.push_decoded(key, value);
    }
    table
}

/// Runs a property test with a seed that is printed and can be replayed: `SEED=<n> cargo test <name>`.
///
/// Panics with the seed and the minimal failing input when the property fails.
pub(crate) fn check<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let seed = match std::env::var("SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("SEED={text:?} is not a u64")),
        Err(_) => fresh_seed(),
    };
    println!("{name}: seed {seed} (replay with SEED={seed})");
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    match runner.run(&strategy, test) {
        Ok(()) => {}
        Err(TestError::Fail(reason, value)) => {
            panic!("{name} failed with SEED={seed}: {reason}\nminimal input: {value:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("{name} aborted with SEED={seed}: {reason}"),
    }
}

fn fresh_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}
