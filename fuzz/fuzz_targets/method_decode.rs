//! Fuzz target `method_decode`: the property is [`coney::fuzzing::check_method_decode`], shared with the corpus replay
//! test (`tests/fuzz_corpus.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| coney::fuzzing::check_method_decode(data));
