//! A stable-Rust stand-in for libFuzzer on machines without `cargo-fuzz`: mutates the inputs in a
//! directory at random (byte overwrites, bit flips, insertions, deletions, and new values for the first
//! two bytes) and runs each through a target's check (`coney::fuzzing::check`) for a given time. No
//! coverage guidance, so it finds less than libFuzzer; it does exercise a check on millions of inputs
//! near the seeds. A failing input is saved as `mutate-crash-<n>` in the current directory.
//!
//! ```sh
//! RUSTFLAGS="-C debug-assertions -C overflow-checks" \
//!     cargo run --release --example mutate -- connection_reads corpus/connection_reads 180
//! ```

use std::{
    fs,
    panic::{self, AssertUnwindSafe},
    time::{Duration, Instant},
};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(dir), Some(secs)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: mutate TARGET DIR SECONDS");
        std::process::exit(2);
    };
    let secs: u64 = secs.parse().expect("SECONDS is a number");
    let seeds: Vec<Vec<u8>> = fs::read_dir(&dir)
        .expect("DIR is readable")
        .map(|entry| fs::read(entry.expect("entry").path()).expect("seed is readable"))
        .collect();
    assert!(!seeds.is_empty(), "no seeds in {dir}");
    assert!(
        coney::fuzzing::check(&target, &[]),
        "no fuzz target called {target}"
    );
    // xorshift64: reproducible from the seed printed below.
    let mut state = 0x9E37_79B9_7F4A_7C15 ^ u64::from(std::process::id());
    println!("rng seed {state:#x}");
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let end = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    while Instant::now() < end {
        let mut input = seeds[random() as usize % seeds.len()].clone();
        for _ in 0..1 + random() % 8 {
            if input.len() < 3 {
                break;
            }
            let at = random() as usize % input.len();
            match random() % 6 {
                0 => input[at] = random() as u8,
                1 => input[at] ^= 1 << (random() % 8),
                2 => {
                    input.remove(at);
                }
                3 => input.insert(at, random() as u8),
                4 => {
                    let len = (random() as usize % 64).min(input.len() - at);
                    input.drain(at..at + len);
                }
                _ => {
                    input[0] = random() as u8;
                    input[1] = random() as u8;
                }
            }
        }
        if panic::catch_unwind(AssertUnwindSafe(|| coney::fuzzing::check(&target, &input))).is_err()
        {
            let path = format!("mutate-crash-{runs}");
            fs::write(&path, &input).expect("write the failing input");
            eprintln!("{target}: input {runs} fails its check; saved as {path}");
            std::process::exit(1);
        }
        runs += 1;
    }
    println!("{target}: {runs} inputs in {secs} s, none failed");
}
