//! Generates the protocol's codecs from the XML spec in `spec/` into `$OUT_DIR/spec.rs`, and the proptest
//! strategies of the round-trip tests into `$OUT_DIR/spec_strategies.rs` (compiled only under `cfg(test)`).

use std::{
    env, fs,
    path::{Path, PathBuf},
};

const SPEC: &str = "spec/amqp0-9-1.stripped.extended.xml";
const ADDITIONS: &str = "spec/rabbitmq-additions.xml";

fn main() {
    println!("cargo:rerun-if-changed={SPEC}");
    println!("cargo:rerun-if-changed={ADDITIONS}");
    let spec = fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("reading {SPEC}: {e}"));
    let additions =
        fs::read_to_string(ADDITIONS).unwrap_or_else(|e| panic!("reading {ADDITIONS}: {e}"));
    let xmls = [spec.as_str(), additions.as_str()];
    let source = format!("{SPEC} + {ADDITIONS}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    let code = coney_codegen::generate(&xmls, &source)
        .unwrap_or_else(|e| panic!("generating from {SPEC}: {e}"));
    write(&out_dir.join("spec.rs"), &code);

    let strategies = coney_codegen::generate_strategies(&xmls, &source)
        .unwrap_or_else(|e| panic!("generating strategies from {SPEC}: {e}"));
    write(&out_dir.join("spec_strategies.rs"), &strategies);
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
