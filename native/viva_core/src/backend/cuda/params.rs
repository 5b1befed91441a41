//! Kernel parameter structs, mirrored field for field from kernels/params.cuh (the one place
//! that states each layout and what every field holds). Every kernel takes one of these by
//! value; both sides assert the sizes and offsets, so a field changed on one side only fails
//! to compile. Device pointers are `u64` (CUdeviceptr); 0 is the null pointer.
use std::mem::{offset_of, size_of};

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

/// A launchable parameter struct.
///
/// # Safety
/// The type is `#[repr(C)]`, has no implicit padding, and mirrors a struct of
/// kernels/params.cuh byte for byte (the layout asserts below).
pub unsafe trait KernelParams: Copy {}

macro_rules! layout {
    ($t:ty, $size:expr $(, $field:ident = $off:expr)*) => {
        const _: () = assert!(size_of::<$t>() == $size);
        $(const _: () = assert!(offset_of!($t, $field) == $off);)*
        // SAFETY: #[repr(C)], sizes and offsets checked against params.cuh above.
        unsafe impl KernelParams for $t {}
    };
}

/// A decode session's per-step inputs and greedy output in device memory (`DecodeIo`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeIo {
    pub token: i32,
    pub pos: i32,
    pub argmax: i32,
    pub pad: i32,
}
layout!(DecodeIo, 16, argmax = 8);
// SAFETY: plain i32 fields; all-zero is a valid value.
unsafe impl DeviceRepr for DecodeIo {}
unsafe impl ValidAsZeroBits for DecodeIo {}

/// A linear weight (n, k) on the device (`WeightView`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WeightView {
    pub data: u64,
    pub scales: u64,
    pub n: i32,
    pub k: i32,
    pub row_stride: i32,
    pub bpr: i32,
    pub block: i32,
    pub pad: i32,
}
layout!(WeightView, 40, block = 32);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GemvParams {
    pub w: WeightView,
    pub x: u64,
    pub norm_w: u64,
    pub out: u64,
    pub kc: u64,
    pub vc: u64,
    pub io: u64,
    pub rope_tab: u64,
    pub eps: f32,
    pub units: i32,
    pub upb: i32,
    pub hd: i32,
    pub q_dim: i32,
    pub kv_dim: i32,
    pub inter: i32,
    pub pad: i32,
}
layout!(GemvParams, 128, x = 40, eps = 96, inter = 120);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EmbedParams {
    pub table: u64,
    pub ids: u64,
    pub x: u64,
    pub io: u64,
    pub inv_freq: u64,
    pub rope_tab: u64,
    pub hidden: i32,
    pub half: i32,
}
layout!(EmbedParams, 56, hidden = 48);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnParams {
    pub q: u64,
    pub kc: u64,
    pub vc: u64,
    pub part: u64,
    pub counters: u64,
    pub out: u64,
    pub io: u64,
    pub n_heads: i32,
    pub n_kv: i32,
    pub hd: i32,
    pub max_splits: i32,
    pub chunk: i32,
    pub pad: i32,
}
layout!(AttnParams, 80, n_heads = 56, chunk = 72);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ArgmaxParams {
    pub logits: u64,
    pub io: u64,
    pub n: i32,
    pub pad: i32,
}
layout!(ArgmaxParams, 24, n = 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TopkParams {
    pub logits: u64,
    pub out_val: u64,
    pub out_idx: u64,
    pub n: i32,
    pub k: i32,
}
layout!(TopkParams, 32, k = 28);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitParams {
    pub x: u64,
    pub norm_w: u64,
    pub hi: u64,
    pub lo: u64,
    pub k: i32,
    pub eps: f32,
}
layout!(SplitParams, 40, eps = 36);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RopeRowsParams {
    pub qkv: u64,
    pub q_out: u64,
    pub kc: u64,
    pub vc: u64,
    pub io: u64,
    pub inv_freq: u64,
    pub hd: i32,
    pub q_dim: i32,
    pub kv_dim: i32,
    pub pad: i32,
}
layout!(RopeRowsParams, 64, hd = 48);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DequantParams {
    pub w: WeightView,
    pub hi: u64,
    pub lo: u64,
}
layout!(DequantParams, 56, hi = 40);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct QuantParams {
    pub src: u64,
    pub codes: u64,
    pub scales: u64,
    pub n: i32,
    pub k: i32,
    pub src_stride: i32,
    pub block: i32,
    pub row_stride: i32,
    pub bpr: i32,
}
layout!(QuantParams, 48, n = 24, bpr = 44);
