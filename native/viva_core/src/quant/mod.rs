//! Weight quantization formats: FP8 E4M3 weight-only (per-channel or K-blocked scales) and
//! the linears that read them.
pub mod fp8;
pub mod linear;
