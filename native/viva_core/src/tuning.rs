//! Tuning in one place: the CPU's instruction sets and every `VIVA_*` switch, read once per
//! process (the first call to [`get`]) and reported by `backend::info()`. A switch is on when
//! set to anything but empty or "0". README's "Tuning switches" table lists them.
use std::path::PathBuf;
use std::sync::OnceLock;

/// What this process runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// AVX-512F (+ AVX2, FMA) kernels: off with `VIVA_NO_AVX512`.
    pub avx512: bool,
    /// AVX512_BF16 (`vdpbf16ps`) on top of `avx512`: off with `VIVA_NO_AVX512_BF16`.
    pub avx512_bf16: bool,
    /// AVX2 + FMA + F16C (+ SSE4.1) kernels, the level below AVX-512: off with `VIVA_NO_AVX2`.
    pub avx2: bool,
    /// Which of the above the CPU has, before the switches (for `backend::info()`).
    pub cpu_has: CpuHas,
    /// `VIVA_DISABLE_CUDA`: never use the GPU (`device => auto` picks the CPU).
    pub disable_cuda: bool,
    /// `VIVA_NO_PDL`: no programmatic dependent launch on sm_90+ (for comparisons).
    pub no_pdl: bool,
    /// `VIVA_GEMV_BLOCKS_PER_SM` (default 2): GEMV blocks per SM, for tuning runs.
    pub gemv_blocks_per_sm: usize,
    /// `VIVA_FP8_HW_CVT=0|1`: force the fp8 GEMV's E4M3 decode (kernels/decode.cu) to the
    /// arithmetic (0) or hardware (1) form; None = the kernel's own choice per architecture.
    pub fp8_hw_cvt: Option<bool>,
    /// `VIVA_KERNEL_CACHE`: where compiled PTX is cached (else $XDG_CACHE_HOME or ~/.cache).
    pub kernel_cache: Option<PathBuf>,
}

/// The CPU's own instruction sets (what `is_x86_feature_detected!` says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuHas {
    pub avx512: bool,
    pub avx512_bf16: bool,
    pub avx2: bool,
}

/// The process's tuning, read on first use.
pub fn get() -> &'static Tuning {
    static T: OnceLock<Tuning> = OnceLock::new();
    T.get_or_init(|| Tuning::from_env(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()), detect()))
}

impl Tuning {
    /// The tuning for CPU features `has` and the variables `var` gives (tests pass their own).
    pub fn from_env(var: impl Fn(&str) -> Option<String>, has: CpuHas) -> Self {
        let on = |k: &str| var(k).is_some_and(|v| !v.is_empty() && v != "0");
        let avx512 = has.avx512 && !on("VIVA_NO_AVX512");
        Tuning {
            avx512,
            avx512_bf16: avx512 && has.avx512_bf16 && !on("VIVA_NO_AVX512_BF16"),
            avx2: has.avx2 && !on("VIVA_NO_AVX2"),
            cpu_has: has,
            disable_cuda: on("VIVA_DISABLE_CUDA"),
            no_pdl: on("VIVA_NO_PDL"),
            gemv_blocks_per_sm: var("VIVA_GEMV_BLOCKS_PER_SM").and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(2),
            fp8_hw_cvt: match var("VIVA_FP8_HW_CVT").as_deref() {
                Some("0") => Some(false),
                Some("1") => Some(true),
                _ => None,
            },
            kernel_cache: var("VIVA_KERNEL_CACHE").filter(|v| !v.is_empty()).map(PathBuf::from),
        }
    }

    /// The CPU kernel level in use: "avx512+bf16", "avx512", "avx2" or "portable".
    pub fn cpu_level(&self) -> &'static str {
        match (self.avx512_bf16, self.avx512, self.avx2) {
            (true, _, _) => "avx512+bf16",
            (_, true, _) => "avx512",
            (_, _, true) => "avx2",
            _ => "portable",
        }
    }

    /// Which CPU kernels run and why: (kernel, choice and reason), for `backend::info()`.
    pub fn cpu_kernels(&self) -> Vec<(&'static str, String)> {
        let level = self.cpu_level();
        let why = |k: &str, on: bool, has: bool| match (on, has) {
            (true, _) => format!("{k}: the CPU has it"),
            (false, true) => format!("{k} switched off (VIVA_NO_{})", k.to_uppercase().replace('+', "_")),
            (false, false) => format!("no {k} on this CPU"),
        };
        let reason = if self.avx512 {
            why("avx512", true, true)
        } else if self.cpu_has.avx512 {
            why("avx512", false, true)
        } else if self.avx2 {
            format!("{}; {}", why("avx512", false, false), why("avx2", true, true))
        } else {
            format!("{}; {}", why("avx512", false, self.cpu_has.avx512), why("avx2", false, self.cpu_has.avx2))
        };
        let gemm_bf16 = if self.avx512_bf16 {
            "vdpbf16ps tiles".to_string()
        } else if self.cpu_has.avx512_bf16 && self.avx512 {
            "f32 tiles on bf16-rounded values (VIVA_NO_AVX512_BF16)".to_string()
        } else {
            "f32 tiles on bf16-rounded values (no AVX512_BF16)".to_string()
        };
        let f32_tiles = match level {
            "avx512+bf16" | "avx512" => "AVX-512 f32 FMA tiles",
            "avx2" => "AVX2 f32 FMA tiles (6 rows × 16 tokens)",
            _ => "portable f32 tiles",
        };
        let attn = if self.avx512 { "grouped flash-decoding (AVX-512, head_dim 64/128)" } else { "per-head (attend_head)" };
        vec![
            ("cpu_level", format!("{level} ({reason})")),
            ("gemv", format!("{level} row dots")),
            ("gemm_f32", f32_tiles.to_string()),
            ("gemm_bf16", gemm_bf16),
            ("attention", attn.to_string()),
        ]
    }
}

/// The CPU's instruction sets: the one place `is_x86_feature_detected!` is called.
fn detect() -> CpuHas {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("sse4.1");
        let avx512 = avx2 && is_x86_feature_detected!("avx512f");
        CpuHas { avx512, avx512_bf16: avx512 && is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512bw"), avx2 }
    }
    #[cfg(not(target_arch = "x86_64"))]
    CpuHas::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)], has: CpuHas) -> Tuning {
        Tuning::from_env(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()), has)
    }

    const ALL: CpuHas = CpuHas { avx512: true, avx512_bf16: true, avx2: true };

    #[test]
    fn switches_step_down_one_level_at_a_time() {
        assert_eq!(with(&[], ALL).cpu_level(), "avx512+bf16");
        assert_eq!(with(&[("VIVA_NO_AVX512_BF16", "1")], ALL).cpu_level(), "avx512");
        assert_eq!(with(&[("VIVA_NO_AVX512", "1")], ALL).cpu_level(), "avx2");
        // no AVX-512 means no AVX512_BF16 either
        assert!(!with(&[("VIVA_NO_AVX512", "1")], ALL).avx512_bf16);
        assert_eq!(with(&[("VIVA_NO_AVX512", "1"), ("VIVA_NO_AVX2", "1")], ALL).cpu_level(), "portable");
        assert_eq!(with(&[], CpuHas::default()).cpu_level(), "portable");
    }

    #[test]
    fn a_switch_is_on_unless_empty_or_zero() {
        for (v, off) in [("1", true), ("yes", true), ("0", false), ("", false)] {
            assert_eq!(!with(&[("VIVA_NO_AVX2", v)], ALL).avx2, off, "{v:?}");
            assert_eq!(with(&[("VIVA_DISABLE_CUDA", v)], ALL).disable_cuda, off, "{v:?}");
        }
    }

    #[test]
    fn numeric_and_path_switches_parse_or_default() {
        assert_eq!(with(&[], ALL).gemv_blocks_per_sm, 2);
        assert_eq!(with(&[("VIVA_GEMV_BLOCKS_PER_SM", "4")], ALL).gemv_blocks_per_sm, 4);
        assert_eq!(with(&[("VIVA_GEMV_BLOCKS_PER_SM", "0")], ALL).gemv_blocks_per_sm, 2);
        assert_eq!(with(&[("VIVA_GEMV_BLOCKS_PER_SM", "x")], ALL).gemv_blocks_per_sm, 2);
        assert_eq!(with(&[("VIVA_FP8_HW_CVT", "1")], ALL).fp8_hw_cvt, Some(true));
        assert_eq!(with(&[("VIVA_FP8_HW_CVT", "0")], ALL).fp8_hw_cvt, Some(false));
        assert_eq!(with(&[("VIVA_FP8_HW_CVT", "2")], ALL).fp8_hw_cvt, None);
        assert_eq!(with(&[("VIVA_KERNEL_CACHE", "/tmp/k")], ALL).kernel_cache, Some(PathBuf::from("/tmp/k")));
    }

    #[test]
    fn the_report_names_the_level_and_why() {
        let t = with(&[("VIVA_NO_AVX512", "1")], ALL);
        let k = t.cpu_kernels();
        assert!(k[0].1.starts_with("avx2 (avx512 switched off (VIVA_NO_AVX512)"), "{:?}", k[0]);
    }
}
