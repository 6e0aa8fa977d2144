//! Fuzz target `field_table`: the property is [`coney::fuzzing::check_field_table`], shared with the corpus replay
//! test (`tests/fuzz_corpus.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| coney::fuzzing::check_field_table(data));
