//! Weight quantization formats (FP8 E4M3 weight-only; later sparse 2:4).
pub mod fp8;
