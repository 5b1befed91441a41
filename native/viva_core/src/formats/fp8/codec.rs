//! FP8 E4M3 ("fn" variant, as `__nv_fp8_e4m3` and OCP FP8): 1 sign, 4 exponent (bias 7),
//! 3 mantissa bits, no infinities, max ±448, NaN = S.1111.111: the codec of the `fp8` format.
//!
//! Codec choices: encode rounds to nearest, ties to even; |v| ≥ 448 and ±inf saturate to ±448
//! (an overflow is never NaN); NaN in → +0 (a prepack never writes a NaN code, so no kernel has
//! to test for one); -0.0 → 0x80, which decodes to -0.0 (it adds nothing to a dot product).

/// Largest finite E4M3 magnitude.
pub const E4M3_MAX: f32 = 448.0;
/// Code of +448 (S=0, E=1111, M=110).
pub(super) const MAX_CODE: u8 = 0x7E;
/// Rows are padded to a multiple of this many codes (one 16-byte vector).
pub const ROW_ALIGN: usize = 16;
/// Smallest normal E4M3 magnitude, 2^-6; below it the grid step is 2^-9.
pub(super) const MIN_NORMAL: f32 = 1.0 / 64.0;
/// Grid step of the subnormals (and of the lowest normal binade): 2^-9.
pub(super) const SUBNORMAL_STEP: f32 = 1.0 / 512.0;
/// 2^(bias_f32 − bias_e4m3) = 2^(127 − 7): rebias of the exponent field.
pub(super) const REBIAS: u32 = 120;

/// Exact value of an E4M3 code (NaN for S.1111.111); const so the table below is built at
/// compile time and a lookup is a plain load.
const fn decode_exact(c: u8) -> f32 {
    let e = ((c >> 3) & 0x0F) as u32;
    let m = (c & 0x07) as u32;
    let mag = if e == 0x0F && m == 0x07 {
        f32::NAN
    } else if e == 0 {
        m as f32 * SUBNORMAL_STEP
    } else {
        // (1 + m/8) · 2^(e−7), built from its f32 bit fields
        f32::from_bits(((e + REBIAS) << 23) | (m << 20))
    };
    if c & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

const fn build_table() -> [f32; 256] {
    let mut t = [0.0f32; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = decode_exact(c as u8);
        c += 1;
    }
    t
}

/// Every code's value: the decode of record (the other decoders are tested against it).
static DECODE_TABLE: [f32; 256] = build_table();

/// E4M3 code → f32, exact for all 256 codes (table lookup; NaN for 0x7F / 0xFF).
#[inline]
pub fn e4m3_decode(c: u8) -> f32 {
    DECODE_TABLE[c as usize]
}

/// E4M3 code → f32 without a table, branch-free so a loop over codes vectorises. Equals
/// `e4m3_decode` for every non-NaN code; the NaN codes read as ±480 (never written by prepack).
#[inline(always)]
pub fn e4m3_decode_arith(c: u8) -> f32 {
    let c = c as u32;
    let em = c & 0x7F;
    let normal = f32::from_bits((em << 20) + (REBIAS << 23));
    let subnormal = em as f32 * SUBNORMAL_STEP;
    let mag = if em >= 8 { normal } else { subnormal };
    f32::from_bits(mag.to_bits() | ((c & 0x80) << 24))
}

/// E4M3 code → the bits of an f16 equal to its value · 2^-8 (exact, subnormals included; the
/// NaN codes read as ±480·2^-8). For SIMD/GPU dequant: convert as f16, multiply by 256·scale.
#[inline(always)]
pub const fn e4m3_to_f16_bits(c: u8) -> u16 {
    ((c as u16 & 0x80) << 8) | ((c as u16 & 0x7F) << 7)
}

/// The cases both encoders share: NaN → `Err(0)`, |v| ≥ 448 → `Err(±max)`; else the sign bit
/// and |v| to round.
#[inline]
fn sign_and_magnitude(v: f32) -> std::result::Result<(u8, f32), u8> {
    if v.is_nan() {
        return Err(0);
    }
    let sign = if v.is_sign_negative() { 0x80 } else { 0 };
    let x = v.abs();
    if x >= E4M3_MAX {
        return Err(sign | MAX_CODE);
    }
    Ok((sign, x))
}

/// f32 → E4M3, round to nearest even, saturating: |v| ≥ 448 (and ±inf) → ±448. NaN → +0.
/// -0.0 → 0x80 (-0). Bit arithmetic on the f32 (a few ns); `e4m3_encode_ref` is the
/// search-based twin.
#[inline]
pub fn e4m3_encode(v: f32) -> u8 {
    let (sign, x) = match sign_and_magnitude(v) {
        Ok(split) => split,
        Err(code) => return code,
    };
    if x < MIN_NORMAL {
        // subnormal: code = x / 2^-9 rounded half to even (8 lands exactly on the first normal)
        return sign | (x / SUBNORMAL_STEP).round_ties_even() as u8;
    }
    // normal: keep 3 of f32's 23 mantissa bits, rounding the other 20 half to even; a carry
    // into the exponent is the correct next binade. Rebias the exponent from 127 to 7.
    // x < 448 here, so the result is at most 448 (0x7E): rounding cannot reach the NaN code.
    let bits = x.to_bits();
    let rounded = bits + 0x7FFFF + ((bits >> 20) & 1);
    sign | ((rounded >> 20) - (REBIAS << 3)) as u8
}

/// Reference twin of [`e4m3_encode`]: nearest code by search over the decode table.
pub fn e4m3_encode_ref(v: f32) -> u8 {
    let (sign, x) = match sign_and_magnitude(v) {
        Ok(split) => split,
        Err(code) => return code,
    };
    // Non-negative codes 0..=0x7E are ordered by value: binary search for the largest code ≤ x,
    // then pick the nearer of it and the next one, the even code (mantissa LSB 0) on a tie.
    let t = &DECODE_TABLE;
    let (mut lo, mut hi) = (0u8, MAX_CODE); // invariant: t[lo] <= x < t[hi]
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if t[mid as usize] <= x {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (dlo, dhi) = (x - t[lo as usize], t[hi as usize] - x);
    let code = if dlo < dhi || (dlo == dhi && lo & 1 == 0) { lo } else { hi };
    sign | code
}
