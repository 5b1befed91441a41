//! The fuzz targets' bodies (in `targets.rs`, which the replay test includes too).
pub mod targets;
