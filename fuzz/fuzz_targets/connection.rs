//! Fuzz target `connection`: the client's connection state machine fed arbitrary server bytes after a
//! valid handshake. The property is [`coney::fuzzing::check_connection`], shared with the corpus replay
//! test (`tests/fuzz_corpus.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| coney::fuzzing::check_connection(data));
