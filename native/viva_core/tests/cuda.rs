//! The CUDA backend against the CPU path (opt-in: runs where a GPU is found; with
//! VIVA_CUDA_TESTS=1 a missing GPU fails instead of skipping). Greedy tokens must be equal for
//! every fixture and weight format; logits within named tolerances; the GPU top-k equals the
//! CPU's; prefill (GEMMs) equals token-by-token decode on the GPU.
mod common;

use common::fixture;

use viva_core::llm::{Device, GenerateOptions, Llm, LoadOptions};
use viva_core::formats::fp8::Blocking;
use viva_core::sampling::top_k_into;
use viva_core::weights::WeightFormat;

/// |gpu − cpu| ≤ LOGIT_ATOL + LOGIT_RTOL·|cpu|: f32 activations on both, different summation order.
const LOGIT_ATOL: f32 = 2e-4;
const LOGIT_RTOL: f32 = 1e-4;
/// The GPU prefill's GEMMs see activations split into two 16-bit halves (~16 bits kept).
const PREFILL_ATOL: f32 = 2e-3;


/// The GPU, one test at a time (the out-of-memory test holds most of its memory), or None
/// (skip) when there is none.
fn gpu_or_skip() -> Option<std::sync::MutexGuard<'static, ()>> {
    static GPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let info = viva_core::backend::info();
    if info.cuda_available {
        return Some(GPU.lock().unwrap_or_else(|e| e.into_inner()));
    }
    if std::env::var_os("VIVA_CUDA_TESTS").is_some_and(|v| v == "1") {
        panic!("VIVA_CUDA_TESTS=1 but no usable GPU: {}", info.cuda_reason);
    }
    eprintln!("skipped: no usable GPU ({})", info.cuda_reason);
    None
}

const FIXTURES: [&str; 3] = ["tiny_gqa", "tiny_tied_llama3", "tiny_mha_sharded"];

fn formats() -> [WeightFormat; 4] {
    [
        WeightFormat::Native,
        WeightFormat::Bf16,
        WeightFormat::Fp8(Blocking::DEFAULT),
        WeightFormat::Fp8(Blocking::new(32).unwrap()),
    ]
}

fn load(name: &str, device: Device, weights: WeightFormat) -> Llm {
    Llm::load(&fixture(name), &LoadOptions { device, weights, ..Default::default() }).expect("fixture loads")
}

fn prompt(llm: &Llm) -> Vec<u32> {
    llm.tokenizer.encode("The capital of France is a city where", true).unwrap()
}

fn close(a: &[f32], b: &[f32], atol: f32, rtol: f32) -> Result<(), String> {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if (x - y).abs() > atol + rtol * y.abs() {
            return Err(format!("logit {i}: gpu {x} vs cpu {y}"));
        }
    }
    Ok(())
}

#[test]
fn greedy_tokens_and_logits_equal_the_cpu_path() {
    let Some(_gpu) = gpu_or_skip() else { return };
    for name in FIXTURES {
        for w in formats() {
            let (cpu, gpu) = (load(name, Device::Cpu, w), load(name, Device::Cuda, w));
            assert_eq!(gpu.backend(), "cuda");
            let ids = prompt(&cpu);
            let opts = GenerateOptions { max_new_tokens: 24, stop_on_eos: false, ..Default::default() };
            let (a, b) = (cpu.generate_ids(&ids, &opts).unwrap(), gpu.generate_ids(&ids, &opts).unwrap());
            assert_eq!(b.tokens, a.tokens, "{name} {w:?}");
            assert_eq!(b.text, a.text);
            // one-token prompts decode through the graph; longer ones prefill with GEMMs
            for n in [1, ids.len()] {
                let (lc, lg) = (cpu.last_logits(&ids[..n]).unwrap(), gpu.last_logits(&ids[..n]).unwrap());
                let tol = if n == 1 { LOGIT_ATOL } else { PREFILL_ATOL };
                close(&lg, &lc, tol, LOGIT_RTOL).unwrap_or_else(|e| panic!("{name} {w:?} n={n}: {e}"));
            }
        }
    }
}

#[test]
fn sampling_draws_from_the_same_candidates() {
    let Some(_gpu) = gpu_or_skip() else { return };
    let (cpu, gpu) = (load("tiny_gqa", Device::Cpu, WeightFormat::Native), load("tiny_gqa", Device::Cuda, WeightFormat::Native));
    let ids = prompt(&cpu);
    // same seed → same tokens while the candidate logits agree (they do to ~1e-6 here)
    for (k, t) in [(Some(5), 0.8), (None, 1.0), (Some(256), 0.7)] {
        let opts = GenerateOptions { max_new_tokens: 12, temperature: t, top_k: k, top_p: 0.95, seed: 7, stop_on_eos: false };
        assert_eq!(gpu.generate_ids(&ids, &opts).unwrap().tokens, cpu.generate_ids(&ids, &opts).unwrap().tokens, "{k:?} {t}");
    }
    // the GPU top-k of the GPU's logits equals top_k_into of the same logits
    let logits = gpu.last_logits(&ids).unwrap();
    let mut want = Vec::new();
    top_k_into(&logits, 256, &mut want);
    let got = viva_core::backend::cuda::check::top_k(&gpu, &ids, 256).unwrap();
    assert_eq!(got, want);
}

#[test]
fn long_prompts_prefill_in_chunks_and_match_stepwise_decode() {
    let Some(_gpu) = gpu_or_skip() else { return };
    let gpu = load("tiny_gqa", Device::Cuda, WeightFormat::Native);
    let ids: Vec<u32> = (0..700u32).map(|i| 3 + (i * 37) % 200).collect();
    let (whole, stepwise) = viva_core::backend::cuda::check::prefill_vs_steps(&gpu, &ids).unwrap();
    close(&whole, &stepwise, PREFILL_ATOL, LOGIT_RTOL).unwrap();
}

#[test]
fn concurrent_generations_share_one_model() {
    let Some(_gpu) = gpu_or_skip() else { return };
    let gpu = std::sync::Arc::new(load("tiny_gqa", Device::Cuda, WeightFormat::Fp8(Blocking::DEFAULT)));
    let ids = prompt(&gpu);
    let opts = GenerateOptions { max_new_tokens: 16, stop_on_eos: false, ..Default::default() };
    let want = gpu.generate_ids(&ids, &opts).unwrap().tokens;
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (g, ids, o) = (gpu.clone(), ids.clone(), opts.clone());
            std::thread::spawn(move || g.generate_ids(&ids, &o).unwrap().tokens)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), want);
    }
}

/// Each GEMV epilogue and weight kind against the CPU linear (backend::cpu::linear::linear over the same packed
/// weights), on shapes with odd rows and K not a multiple of the 16-byte vector.
#[test]
fn gemv_kernels_match_the_cpu_linear() {
    use viva_core::backend::cuda::check;
    use viva_core::backend::cuda::kernels::GemvMode;
    use viva_core::backend::cpu::{linear, ops};
    use viva_core::tensor::TensorView;
    use viva_core::weights::Linear;
    let Some(_gpu) = gpu_or_skip() else { return };
    for &(n, k) in &[(37usize, 48usize), (64, 100), (10, 2048), (2 * 352, 5632 / 4)] {
        let data: Vec<f32> = (0..n * k).map(|i| (((i * 7919 + 13) % 1009) as f32 - 504.0) / 700.0).collect();
        let t = TensorView::from_f32("w", vec![n, k], &data);
        let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin() * 1.5).collect();
        let nw: Vec<f32> = (0..k).map(|i| 0.5 + (i % 7) as f32 * 0.1).collect();
        let resid: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        for w in formats() {
            let lin = Linear::fuse(&[&t], w).unwrap();
            let mut xn = vec![0.0; k];
            ops::rmsnorm(&mut xn, &x, &nw, 1e-5);
            let mut want = vec![0.0; n];
            linear::linear(&lin, &xn, &mut want, viva_core::weights::Activations::F32);
            let tol = |a: &[f32], b: &[f32], what: &str| {
                close(a, b, 1e-4, 1e-4).unwrap_or_else(|e| panic!("{w:?} {n}x{k} {what}: {e}"));
            };
            tol(&check::linear(&lin, &xn, GemvMode::Store, None, None).unwrap(), &want, "store");
            tol(&check::linear(&lin, &x, GemvMode::Store, Some((&nw, 1e-5)), None).unwrap(), &want, "store+norm");
            let plus: Vec<f32> = want.iter().zip(&resid).map(|(a, b)| a + b).collect();
            tol(&check::linear(&lin, &xn, GemvMode::Resid, None, Some(&resid)).unwrap(), &plus, "resid");
            if n % 2 == 0 {
                let h = n / 2;
                let sw: Vec<f32> = (0..h).map(|i| ops::silu(want[i]) * want[h + i]).collect();
                tol(&check::linear(&lin, &x, GemvMode::Swiglu, Some((&nw, 1e-5)), None).unwrap(), &sw, "swiglu");
            }
        }
    }
}

/// The device-side fp8 prepack (used when loading fp8 onto the GPU) is bit-identical to the
/// host's PackedFp8::prepack, special values included.
#[test]
fn device_fp8_prepack_is_bit_identical_to_the_host_prepack() {
    use viva_core::formats::fp8::PackedFp8;
    use viva_core::tensor::TensorView;
    use viva_core::weights::Linear;
    let Some(_gpu) = gpu_or_skip() else { return };
    let (n, k) = (33usize, 200usize);
    let mut data: Vec<f32> = (0..n * k).map(|i| ((i * 2654435761usize % 100003) as f32 / 100003.0 - 0.5) * 0.08).collect();
    data[..16].fill(0.0); // an all-zero block
    for (i, v) in [(20, f32::INFINITY), (21, f32::NEG_INFINITY), (22, f32::NAN), (23, 1e-30), (24, -3e4), (25, -0.0)] {
        data[i] = v;
    }
    for (i, v) in data[k..2 * k].iter_mut().enumerate() {
        *v = (i as f32 - 100.0) * 1e-7; // values deep in the subnormal codes
    }
    let t = TensorView::from_f32("w", vec![n, k], &data);
    let lin = Linear::fuse(&[&t], WeightFormat::Native).unwrap();
    for b in [Blocking::DEFAULT, Blocking::new(32).unwrap(), Blocking::new(128).unwrap(), Blocking::PerChannel] {
        let host = PackedFp8::prepack(&data, n, k, b).unwrap();
        let (codes, scales) = viva_core::backend::cuda::check::pack_fp8(&lin, b).unwrap();
        assert_eq!(codes, host.codes, "{b:?}");
        assert_eq!(scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>(), host.scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>(), "{b:?}");
    }
}

/// The device bf16 rounding (used when loading `weights => bf16` from an f32/f16 checkpoint) is
/// bit-identical to the host's (formats/bf16.rs), special values included.
#[test]
fn device_bf16_conversion_is_bit_identical_to_the_host() {
    use viva_core::tensor::TensorView;
    use viva_core::weights::Linear;
    let Some(_gpu) = gpu_or_skip() else { return };
    let (n, k) = (9usize, 37usize); // k not a multiple of 8: padded rows
    let mut data: Vec<f32> = (0..n * k).map(|i| ((i * 2654435761usize % 100003) as f32 / 100003.0 - 0.5) * 3.0).collect();
    for (i, v) in [(0, f32::INFINITY), (1, f32::NEG_INFINITY), (2, f32::NAN), (3, 1e-40), (4, -0.0), (5, f32::MAX), (6, 1.00390625)] {
        data[i] = v;
    }
    let t = TensorView::from_f32("w", vec![n, k], &data);
    let Linear::Bf16(viva_core::formats::bf16::Bf16Linear { data: host, .. }) = Linear::fuse(&[&t], WeightFormat::Bf16).unwrap() else { panic!("bf16 linear") };
    let (stride, dev) = viva_core::backend::cuda::check::to_bf16(&Linear::fuse(&[&t], WeightFormat::Native).unwrap()).unwrap();
    for r in 0..n {
        assert_eq!(&dev[r * stride..r * stride + k], &host[r * k..(r + 1) * k], "row {r}");
        assert!(dev[r * stride + k..(r + 1) * stride].iter().all(|&b| b == 0), "row {r} padding");
    }
}

/// A zero-filled bf16 Llama checkpoint of about 1.2 GB (a sparse file: nothing is written but
/// the header) with the fixture's tokenizer, in a fresh temporary folder.
fn big_checkpoint() -> std::path::PathBuf {
    let (h, inter, layers, vocab) = (2048usize, 8192usize, 8usize, 512usize);
    let dir = std::env::temp_dir().join(format!("viva_big_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("tiny_gqa").join("config.json")).unwrap()).unwrap();
    for (key, v) in [("hidden_size", h), ("intermediate_size", inter), ("num_hidden_layers", layers), ("num_attention_heads", 16), ("num_key_value_heads", 16), ("head_dim", 128), ("vocab_size", vocab)] {
        cfg[key] = v.into();
    }
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(fixture("tiny_gqa").join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let mut tensors: Vec<(String, Vec<usize>)> = vec![("model.embed_tokens.weight".into(), vec![vocab, h]), ("model.norm.weight".into(), vec![h]), ("lm_head.weight".into(), vec![vocab, h])];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
            ("self_attn.q_proj.weight", vec![h, h]),
            ("self_attn.k_proj.weight", vec![h, h]),
            ("self_attn.v_proj.weight", vec![h, h]),
            ("self_attn.o_proj.weight", vec![h, h]),
            ("mlp.gate_proj.weight", vec![inter, h]),
            ("mlp.up_proj.weight", vec![inter, h]),
            ("mlp.down_proj.weight", vec![h, inter]),
        ] {
            tensors.push((format!("{p}.{name}"), shape));
        }
    }
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, shape) in &tensors {
        let len = shape.iter().product::<usize>() * 2;
        header.insert(name.clone(), serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [off, off + len]}));
        off += len;
    }
    let mut json = serde_json::Value::Object(header).to_string();
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    let path = dir.join("model.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len((bytes.len() + off) as u64).unwrap();
    dir
}

/// With most of the GPU's memory held elsewhere, a model or a session that does not fit is
/// `OutOfMemory`, and the context and a model loaded before keep working.
#[test]
fn out_of_memory_is_an_error_and_the_gpu_keeps_working() {
    use viva_core::backend::cuda::check;
    use viva_core::Error;
    let Some(_gpu) = gpu_or_skip() else { return };
    let small = load("tiny_gqa", Device::Cuda, WeightFormat::Fp8(Blocking::DEFAULT));
    let ids = prompt(&small);
    let opts = GenerateOptions { max_new_tokens: 16, stop_on_eos: false, ..Default::default() };
    let want = small.generate_ids(&ids, &opts).unwrap().tokens;
    let big = big_checkpoint();
    let headroom = 256 << 20;
    let hog = check::hog_memory(headroom).unwrap();
    eprintln!("free with the hog held: {} MiB", check::free_memory().unwrap() >> 20);
    for weights in [WeightFormat::Native, WeightFormat::Fp8(Blocking::DEFAULT)] {
        let r = Llm::load(&big, &LoadOptions { device: Device::Cuda, weights, ..Default::default() });
        assert!(matches!(r, Err(Error::OutOfMemory)), "{weights:?}: {:?}", r.err());
    }
    // a KV cache of 2 layers × 2^20 positions × 128 × 2 × 4 bytes = 2 GiB
    assert!(matches!(check::open_session(&small, 1 << 20), Err(Error::OutOfMemory)));
    assert_eq!(small.generate_ids(&ids, &opts).unwrap().tokens, want, "with the hog held");
    drop(hog);
    assert_eq!(small.generate_ids(&ids, &opts).unwrap().tokens, want, "after the hog");
    // and the big model loads once there is room
    let r = Llm::load(&big, &LoadOptions { device: Device::Cuda, weights: WeightFormat::Native, ..Default::default() });
    assert!(r.is_ok(), "{:?}", r.err());
    std::fs::remove_dir_all(&big).ok();
}

/// A GPU-loaded model holds no host model until the low-level CPU API asks for one; then it is
/// built in the load's format, and its decode-step loop gives generate's (GPU) greedy tokens.
#[test]
fn low_level_decode_steps_on_a_gpu_model_reproduce_generate() {
    use viva_core::sampling::argmax;
    use viva_core::backend::cpu::state::DecodeState;
    let Some(_gpu) = gpu_or_skip() else { return };
    for w in [WeightFormat::Native, WeightFormat::Fp8(Blocking::DEFAULT)] {
        let llm = load("tiny_mha_sharded", Device::Cuda, w);
        let ids = prompt(&llm);
        let opts = GenerateOptions { max_new_tokens: 12, stop_on_eos: false, ..Default::default() };
        let want = llm.generate_ids(&ids, &opts).unwrap().tokens;
        let model = llm.model().unwrap();
        assert_eq!(model.format, w);
        let mut st = DecodeState::new(model, 64).unwrap();
        let mut got = Vec::new();
        let mut next = 0;
        for (pos, &id) in ids.iter().enumerate() {
            next = argmax(st.step_at(model, id, pos).unwrap());
        }
        while got.len() < 12 {
            got.push(next);
            next = argmax(st.step_at(model, next, ids.len() + got.len() - 1).unwrap());
        }
        assert_eq!(got, want, "{w:?}");
        assert!(std::ptr::eq(model, llm.model().unwrap()), "built once");
    }
}
