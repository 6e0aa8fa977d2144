//! Generates the protocol's codecs from the XML spec in `spec/` into `$OUT_DIR/spec.rs`.

use std::{env, fs, path::PathBuf};

const SPEC: &str = "spec/amqp0-9-1.stripped.extended.xml";
const ADDITIONS: &str = "spec/rabbitmq-additions.xml";

fn main() {
    println!("cargo:rerun-if-changed={SPEC}");
    println!("cargo:rerun-if-changed={ADDITIONS}");
    let spec = fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("reading {SPEC}: {e}"));
    let additions =
        fs::read_to_string(ADDITIONS).unwrap_or_else(|e| panic!("reading {ADDITIONS}: {e}"));
    let code = coney_codegen::generate(&[&spec, &additions], &format!("{SPEC} + {ADDITIONS}"))
        .unwrap_or_else(|e| panic!("generating from {SPEC}: {e}"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("spec.rs");
    fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
