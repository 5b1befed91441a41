//! Helpers shared by the integration tests (each test file is its own crate: `mod common;`).
#![allow(dead_code)]
use std::path::PathBuf;

/// The HF fixtures (test/fixtures, made by make_fixtures.py), or `VIVA_FIXTURES`.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("VIVA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures"))
}

/// One fixture checkpoint folder.
pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}
