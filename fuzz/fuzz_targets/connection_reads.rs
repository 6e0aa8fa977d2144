//! Fuzz target `connection_reads`: server bytes after a valid handshake, fed at once and the way the
//! driver reads them (large body frames straight into their message); both must mean the same. The
//! property is [`coney::fuzzing::check_connection_reads`], shared with the corpus replay test
//! (`tests/fuzz_corpus.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| coney::fuzzing::check_connection_reads(data));
