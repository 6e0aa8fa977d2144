//! Golden test: the generator's output for a small fixture is compared byte for byte with a checked-in
//! file, so every change to the emitted code is seen in review.
//!
//! After an intended change: `UPDATE_GOLDEN=1 cargo test -p coney-codegen --test golden`, then read the
//! diff of `tests/fixtures/*.expected.rs`.

use std::{fs, path::PathBuf};

const SOURCE: &str = "codegen/tests/fixtures/mini.xml";

#[test]
fn codecs_match_golden_file() {
    let xml = fixture("mini.xml");
    let actual = coney_codegen::generate(&[&xml], SOURCE).expect("the fixture generates");
    compare("mini.expected.rs", &actual);
}

#[test]
fn strategies_match_golden_file() {
    let xml = fixture("mini.xml");
    let actual =
        coney_codegen::generate_strategies(&[&xml], SOURCE).expect("the fixture generates");
    compare("mini.strategies.expected.rs", &actual);
}

/// Generating twice gives the same text: nothing depends on hash order or the environment.
#[test]
fn output_is_deterministic() {
    let xml = fixture("mini.xml");
    let first = coney_codegen::generate(&[&xml], SOURCE).unwrap();
    for _ in 0..4 {
        assert_eq!(coney_codegen::generate(&[&xml], SOURCE).unwrap(), first);
    }
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> String {
    let path = fixtures().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn compare(expected_name: &str, actual: &str) {
    let path = fixtures().join(expected_name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&path, actual).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("rewrote {}", path.display());
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}\nto create it: UPDATE_GOLDEN=1 cargo test -p coney-codegen --test golden",
            path.display()
        )
    });
    if expected == actual {
        return;
    }
    panic!(
        "generated code differs from {}\n{}\nIf the change is intended: UPDATE_GOLDEN=1 cargo test -p \
         coney-codegen --test golden, and review the diff.",
        path.display(),
        diff_hint(&expected, actual)
    );
}

/// The first differing line with three lines of context on each side, and the line counts.
fn diff_hint(expected: &str, actual: &str) -> String {
    let exp: Vec<&str> = expected.lines().collect();
    let act: Vec<&str> = actual.lines().collect();
    let first = exp
        .iter()
        .zip(&act)
        .position(|(e, a)| e != a)
        .unwrap_or(exp.len().min(act.len()));
    let mut out = format!(
        "expected {} lines, generated {}; first difference at line {}\n",
        exp.len(),
        act.len(),
        first + 1
    );
    let from = first.saturating_sub(3);
    for (label, lines) in [("expected", &exp), ("generated", &act)] {
        out.push_str(&format!("--- {label}\n"));
        for (i, line) in lines.iter().enumerate().skip(from).take(7) {
            let mark = if i == first { '>' } else { ' ' };
            out.push_str(&format!("{mark}{:5} | {line}\n", i + 1));
        }
    }
    if expected.trim_end() == actual.trim_end() {
        out.push_str("(only trailing whitespace or newlines differ)\n");
    }
    out
}
