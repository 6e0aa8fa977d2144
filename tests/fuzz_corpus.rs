//! Replays the fuzz corpus and the saved regressions through the fuzz targets' checks, so `cargo test`
//! catches a regression without the fuzzer (which needs nightly and takes minutes).
//!
//! Every file under `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` is run through
//! `coney::fuzzing::check(<target>, bytes)`, the same function the fuzz target of that name calls.

use std::{
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::Duration,
};

/// Replaying a few hundred small inputs takes well under a second; this only catches a hang.
const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn corpus_and_regressions_pass_the_fuzz_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let (done, finished) = mpsc::channel();
    thread::spawn(move || done.send(replay(&root)));
    let (replayed, failures) = match finished.recv_timeout(TIMEOUT) {
        Ok(outcome) => outcome,
        Err(RecvTimeoutError::Timeout) => panic!("corpus replay took longer than {TIMEOUT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("the replay failed outside any check"),
    };
    assert!(
        failures.is_empty(),
        "{} of {replayed} inputs fail their fuzz check (rerun one with \
         `cargo +nightly fuzz run <target> <file>` in fuzz/):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(replayed > 0, "no corpus found under fuzz/");
    println!("replayed {replayed} inputs");
}

/// Runs every input; returns how many ran and one line per failure.
fn replay(root: &Path) -> (usize, Vec<String>) {
    let mut replayed = 0;
    let mut failures = Vec::new();
    for set in ["corpus", "regressions"] {
        for target_dir in subdirs(&root.join(set)) {
            let target = target_dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            for file in files(&target_dir) {
                let data = fs::read(&file).unwrap();
                let result =
                    panic::catch_unwind(AssertUnwindSafe(|| coney::fuzzing::check(&target, &data)));
                replayed += 1;
                match result {
                    Ok(true) => {}
                    Ok(false) => {
                        failures.push(format!("{}: no fuzz target {target}", file.display()))
                    }
                    Err(panic) => failures.push(format!("{}: {}", file.display(), message(&panic))),
                }
            }
        }
    }
    (replayed, failures)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    dirs.sort();
    dirs
}

/// The inputs in a target's directory; dot files (`.gitkeep`) are not inputs.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

fn message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic with a non-string payload".into())
}
