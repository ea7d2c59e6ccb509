//! Every integration test, in one test crate (as ripgrep does): the shared
//! helpers in `common` are compiled and linked once instead of once per
//! file, which halves the test build. `autotests = false` in Cargo.toml
//! makes this list the only way in: `every_test_file_is_a_module` below
//! fails when a file in tests/ is not declared here.

mod common;

mod bounds;
mod cli;
mod customvision;
mod daemon;
mod decode_props;
mod download;
mod eventgrid;
mod eventgrid_download;
mod eventgrid_routing;
mod hardening;
mod identity;
mod ops;
mod prometheus;
mod queues;
mod reliability;
mod secrets;
mod setup;
mod traces;
mod webhook;

#[test]
fn every_test_file_is_a_module() {
    let this = include_str!("tests.rs");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(dir).expect("tests/ is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs")
            && stem != "tests"
            && !this.contains(&format!("\nmod {stem};\n"))
        {
            missing.push(stem.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "files in tests/ not declared as `mod` in tests/tests.rs, so never compiled: {missing:?}"
    );
}
