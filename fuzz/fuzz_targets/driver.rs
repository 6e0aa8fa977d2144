//! Fuzz target `driver`: the whole client (handles, driver task, wake gate) against a scripted broker
//! that sends arbitrary bytes after a valid start and a fixed preamble. The property is
//! [`coney::fuzzing::check_driver`], shared with the corpus replay test (`tests/fuzz_corpus.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| coney::fuzzing::check_driver(data));
