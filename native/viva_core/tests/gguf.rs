//! GGUF reader: files written by a small writer here (every metadata type, each tensor type
//! with exactly known values), hostile files, and (ignored unless VIVA_SMOLLM2_GGUF is set)
//! the real SmolLM2-135M Q4_1 file against llama.cpp's `gguf` Python reader.
use std::path::{Path, PathBuf};

use half::f16;
use viva_core::gguf::{unpermute_qk, Gguf, GgufValue};
use viva_core::tensor::DType;
use viva_core::Error;

/// A minimal GGUF writer (the format's own description, version 2 or 3).
struct Writer {
    version: u32,
    kv: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    alignment: usize,
}

fn s(x: &str) -> Vec<u8> {
    let mut v = (x.len() as u64).to_le_bytes().to_vec();
    v.extend(x.as_bytes());
    v
}

impl Writer {
    fn new(version: u32) -> Self {
        Writer { version, kv: vec![], tensors: vec![], alignment: 32 }
    }
    fn kv(&mut self, key: &str, ty: u32, bytes: Vec<u8>) -> &mut Self {
        self.kv.push((key.into(), ty, bytes));
        self
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kv.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kv {
            b.extend(s(k));
            b.extend(ty.to_le_bytes());
            b.extend(v);
        }
        let mut offset = 0usize;
        let mut offsets = vec![];
        for (_, _, _, data) in &self.tensors {
            offsets.push(offset);
            offset = (offset + data.len()).div_ceil(self.alignment) * self.alignment;
        }
        for ((name, dims, ty, _), off) in self.tensors.iter().zip(&offsets) {
            b.extend(s(name));
            b.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
            b.extend(ty.to_le_bytes());
            b.extend((*off as u64).to_le_bytes());
        }
        b.resize(b.len().div_ceil(self.alignment) * self.alignment, 0);
        let start = b.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(&offsets) {
            b.resize(start + off, 0);
            b.extend(data);
        }
        b
    }
}

fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("viva_gguf_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Q8_0 block of 32: d, then i8 codes; returns (bytes, exact dequantized values).
fn q8_0(codes: &[i8; 32], d: f32) -> (Vec<u8>, Vec<f32>) {
    let d16 = f16::from_f32(d);
    let mut b = d16.to_le_bytes().to_vec();
    b.extend(codes.iter().map(|&q| q as u8));
    (b, codes.iter().map(|&q| q as f32 * d16.to_f32()).collect())
}

/// Q4_1 block: d, m, 16 bytes; byte j = weight j (low nibble) | weight j+16 (high nibble).
fn q4_1(q: &[u8; 32], d: f32, m: f32) -> (Vec<u8>, Vec<f32>) {
    let (d16, m16) = (f16::from_f32(d), f16::from_f32(m));
    let mut b = d16.to_le_bytes().to_vec();
    b.extend(m16.to_le_bytes());
    b.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
    (b, q.iter().map(|&x| x as f32 * d16.to_f32() + m16.to_f32()).collect())
}

/// Q4_0 block: d, 16 bytes; w = (q − 8)·d.
fn q4_0(q: &[u8; 32], d: f32) -> (Vec<u8>, Vec<f32>) {
    let d16 = f16::from_f32(d);
    let mut b = d16.to_le_bytes().to_vec();
    b.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
    (b, q.iter().map(|&x| (x as f32 - 8.0) * d16.to_f32()).collect())
}

fn sample_file(version: u32) -> (Vec<u8>, Vec<(&'static str, Vec<f32>)>) {
    let mut w = Writer::new(version);
    w.kv("general.architecture", 8, s("llama"))
        .kv("u8", 0, vec![7])
        .kv("i8", 1, vec![0xFF])
        .kv("u16", 2, 513u16.to_le_bytes().to_vec())
        .kv("i16", 3, (-2i16).to_le_bytes().to_vec())
        .kv("u32", 4, 70000u32.to_le_bytes().to_vec())
        .kv("i32", 5, (-70000i32).to_le_bytes().to_vec())
        .kv("f32", 6, 1.5f32.to_le_bytes().to_vec())
        .kv("bool", 7, vec![1])
        .kv("u64", 10, (1u64 << 40).to_le_bytes().to_vec())
        .kv("i64", 11, (-5i64).to_le_bytes().to_vec())
        .kv("f64", 12, 0.25f64.to_le_bytes().to_vec());
    let mut arr = 4u32.to_le_bytes().to_vec(); // array of u32
    arr.extend(3u64.to_le_bytes());
    [1u32, 2, 3].iter().for_each(|v| arr.extend(v.to_le_bytes()));
    w.kv("arr", 9, arr);
    let mut sarr = 8u32.to_le_bytes().to_vec(); // array of strings
    sarr.extend(2u64.to_le_bytes());
    sarr.extend(s("a"));
    sarr.extend(s("▁b"));
    w.kv("tokens", 9, sarr);
    let qa: [u8; 32] = std::array::from_fn(|i| (i * 7 % 16) as u8);
    let qi: [i8; 32] = std::array::from_fn(|i| (i as i8 - 16) * 7);
    let (q80, q80v) = q8_0(&qi, 0.0123);
    let (q41, q41v) = q4_1(&qa, 0.5, -3.25);
    let (q40, q40v) = q4_0(&qa, 0.75);
    let fv: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
    let hv: Vec<f32> = vec![1.0, -0.5, 65504.0, 2.0];
    let bv: Vec<f32> = vec![1.0, -2.0, 0.15625, 3.0e10];
    w.tensor("f32", &[3, 2], 0, f32s(&fv))
        .tensor("f16", &[4], 1, hv.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect())
        .tensor("bf16", &[2, 2], 30, bv.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect())
        .tensor("q8_0", &[32, 1], 8, q80)
        .tensor("q4_1", &[32], 3, q41)
        .tensor("q4_0", &[32], 2, q40);
    let bf_exact: Vec<f32> = bv.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
    (w.bytes(), vec![("f32", fv), ("f16", hv), ("bf16", bf_exact), ("q8_0", q80v), ("q4_1", q41v), ("q4_0", q40v)])
}

#[test]
fn reads_metadata_and_dequantizes_every_type_v2_and_v3() {
    for version in [2, 3] {
        let (bytes, want) = sample_file(version);
        let g = Gguf::open(&tmp(&format!("sample{version}.gguf"), &bytes)).unwrap();
        assert_eq!(g.version, version);
        assert_eq!(g.get_str("general.architecture"), Some("llama"));
        assert_eq!(g.get("u8"), Some(&GgufValue::U8(7)));
        assert_eq!(g.get("i8"), Some(&GgufValue::I8(-1)));
        assert_eq!(g.get_u64("u16"), Some(513));
        assert_eq!(g.get("i16"), Some(&GgufValue::I16(-2)));
        assert_eq!(g.get_u64("u32"), Some(70000));
        assert_eq!(g.get("i32"), Some(&GgufValue::I32(-70000)));
        assert_eq!(g.get_f64("f32"), Some(1.5));
        assert_eq!(g.get("bool"), Some(&GgufValue::Bool(true)));
        assert_eq!(g.get_u64("u64"), Some(1 << 40));
        assert_eq!(g.get_u64("i64"), None);
        assert_eq!(g.get_f64("f64"), Some(0.25));
        assert_eq!(g.get_array("arr").unwrap().iter().map(|v| v.as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(g.get_array("tokens").unwrap()[1].as_str(), Some("▁b"));
        for (name, values) in &want {
            let (shape, got) = g.dequantize(name).unwrap();
            assert_eq!(&got, values, "{name}");
            assert_eq!(shape.iter().product::<usize>(), values.len());
        }
        assert_eq!(g.tensor_info("f32").unwrap().shape(), vec![2, 3]); // dims [ne0=3, ne1=2] → rows 2, cols 3
        assert!(matches!(g.dequantize("nope"), Err(Error::MissingTensor(_))));
    }
}

fn assert_bad(bytes: &[u8], name: &str) {
    match Gguf::open(&tmp(name, bytes)) {
        Err(Error::BadFormat { .. }) => {}
        Err(e) => panic!("{name}: expected BadFormat, got {e:?}"),
        Ok(_) => panic!("{name}: expected BadFormat, got Ok"),
    }
}

#[test]
fn hostile_files_are_bad_format() {
    let (good, _) = sample_file(3);
    let mut wrong_magic = good.clone();
    wrong_magic[0] = b'X';
    assert_bad(&wrong_magic, "magic");
    let mut v1 = good.clone();
    v1[4] = 1;
    assert_bad(&v1, "version1");
    let mut huge_tensors = good.clone();
    huge_tensors[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_bad(&huge_tensors, "tensor_count");
    let mut huge_kv = good.clone();
    huge_kv[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_bad(&huge_kv, "kv_count");
    // the first key's string length absurd
    let mut huge_str = good.clone();
    huge_str[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    assert_bad(&huge_str, "string_len");
    // a tensor whose data lies past the end
    let mut w = Writer::new(3);
    w.tensor("t", &[1 << 20], 0, vec![0; 16]);
    let mut b = w.bytes();
    b.truncate(b.len() - 8);
    assert_bad(&b, "past_end");
    // an element count that overflows, a dim count of 9, a non-block Q8_0 length
    assert_bad(&Writer::new(3).tensor("t", &[u64::MAX, 4], 0, vec![]).bytes(), "overflow");
    let mut nine = Writer::new(3).tensor("t", &[1], 0, vec![0; 4]).bytes();
    let at = 24 + 8 + 1; // n_dims after the one-char name
    nine[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    assert_bad(&nine, "dims");
    assert_bad(&Writer::new(3).tensor("t", &[33], 8, vec![0; 68]).bytes(), "partial_block");
    // unknown metadata type, bad bool, arrays nested too deep
    assert_bad(&Writer::new(3).kv("k", 99, vec![0; 8]).bytes(), "meta_type");
    assert_bad(&Writer::new(3).kv("k", 7, vec![2]).bytes(), "bool");
    let mut nest = Vec::new();
    for _ in 0..6 {
        nest.extend(9u32.to_le_bytes());
        nest.extend(1u64.to_le_bytes());
    }
    nest.extend(0u32.to_le_bytes());
    nest.extend(1u64.to_le_bytes());
    nest.push(0);
    assert_bad(&Writer::new(3).kv("k", 9, nest[4..].to_vec()).bytes(), "nesting");
    // an unknown tensor type is kept but refused when read
    let g = Gguf::open(&tmp("unk.gguf", &Writer::new(3).tensor("t", &[4], 77, vec![]).bytes())).unwrap();
    assert!(matches!(g.dequantize("t"), Err(Error::UnsupportedDtype { .. })));
    assert!(matches!(Gguf::open(Path::new("/nonexistent/x.gguf")), Err(Error::FileNotFound(_))));
}

#[test]
fn every_truncation_is_ok_or_bad_format() {
    let (good, _) = sample_file(3);
    for n in 0..good.len() {
        match Gguf::open(&tmp("trunc.gguf", &good[..n])) {
            Ok(_) | Err(Error::BadFormat { .. }) => {}
            Err(e) => panic!("prefix {n}: {e:?}"),
        }
    }
}

#[test]
fn unpermute_inverts_llama_cpp_qk_permutation() {
    // llama.cpp's converter: view rows as (heads, 2, head_dim/2) and swap the last two axes.
    let (heads, head_dim, cols) = (3, 8, 2);
    let hf: Vec<f32> = (0..heads * head_dim * cols).map(|i| i as f32).collect();
    let mut permuted = vec![0.0; hf.len()];
    for h in 0..heads {
        for half in 0..2 {
            for i in 0..head_dim / 2 {
                let src = (h * head_dim + half * head_dim / 2 + i) * cols;
                let dst = (h * head_dim + i * 2 + half) * cols;
                permuted[dst..dst + cols].copy_from_slice(&hf[src..src + cols]);
            }
        }
    }
    assert_ne!(permuted, hf);
    assert_eq!(unpermute_qk(&permuted, heads, cols), hf);
}

/// A v3 writer holding a one-block llama's metadata (vocab 8, context 64).
fn one_layer_llama(hidden: u32, heads: u32, kv_heads: u32, ff: u32) -> Writer {
    let u32v = |v: u32| v.to_le_bytes().to_vec();
    let mut w = Writer::new(3);
    w.kv("general.architecture", 8, s("llama"))
        .kv("llama.embedding_length", 4, u32v(hidden))
        .kv("llama.attention.head_count", 4, u32v(heads))
        .kv("llama.attention.head_count_kv", 4, u32v(kv_heads))
        .kv("llama.block_count", 4, u32v(1))
        .kv("llama.feed_forward_length", 4, u32v(ff))
        .kv("llama.context_length", 4, u32v(64))
        .kv("llama.vocab_size", 4, u32v(8));
    w
}

/// Sizes read from the file never size a buffer the file cannot back: each gives its error,
/// never an abort (an abort would kill this test binary).
#[test]
fn hostile_sizes_give_errors_not_aborts() {
    // an unknown tensor type has no byte size to check against the file: its 2^62 elements
    // must be refused before a buffer of that many f32 is asked for
    let huge_unknown = Writer::new(3).tensor("t", &[1 << 31, 1 << 31], 77, vec![]).bytes();
    let g = Gguf::open(&tmp("huge_unknown.gguf", &huge_unknown)).unwrap();
    assert!(matches!(g.dequantize("t"), Err(Error::UnsupportedDtype { .. })));
    // the same tensor under a llama name: made lazily, refused the same way
    let mut w = one_layer_llama(16, 2, 1, 32);
    w.tensor("blk.0.ffn_up.weight", &[1 << 31, 1 << 31], 77, vec![]);
    let g = Gguf::open(&tmp("huge_unknown_llama.gguf", &w.bytes())).unwrap();
    let ck = g.to_checkpoint(&g.llama_config().unwrap()).unwrap();
    assert!(matches!(ck.get("model.layers.0.mlp.up_proj.weight"), Err(Error::UnsupportedDtype { .. })));

    // a u8 array as long as the file allows: 32 bytes of memory per byte of file, reserved
    // fallibly; an array count past the file is BadFormat before anything is reserved
    let mut arr = 0u32.to_le_bytes().to_vec();
    arr.extend((1u64 << 20).to_le_bytes());
    arr.extend(vec![7u8; 1 << 20]);
    let g = Gguf::open(&tmp("long_array.gguf", &Writer::new(3).kv("a", 9, arr.clone()).bytes())).unwrap();
    assert_eq!(g.get_array("a").map(|a| a.len()), Some(1 << 20));
    arr[4..12].copy_from_slice(&(1u64 << 50).to_le_bytes());
    assert_bad(&Writer::new(3).kv("a", 9, arr).bytes(), "array_past_file");

    // q/k rows that are not whole heads of an even head_dim (the row regrouping would index
    // past the tensor): BadFormat, not a panic
    let mut w = one_layer_llama(16, 3, 1, 32);
    w.kv("llama.attention.key_length", 4, 16u32.to_le_bytes().to_vec());
    w.tensor("blk.0.attn_q.weight", &[16, 16], 0, f32s(&[0.5; 256]));
    let g = Gguf::open(&tmp("qk_heads.gguf", &w.bytes())).unwrap();
    let cfg = g.llama_config().unwrap();
    match g.to_checkpoint(&cfg) {
        Err(Error::BadFormat { detail, .. }) => assert!(detail.contains("heads"), "{detail}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("16 q rows are not 3 heads"),
    }

    // metadata dimensions the tensors do not back: model_checkpoint names the first tensor
    // that is missing or misshapen, so the model builder never sees them
    let full = |w: &mut Writer, hidden: u64, q: u64, kv: u64, ff: u64, vocab: u64| {
        let z = |n: u64| vec![0u8; 4 * n as usize];
        w.tensor("token_embd.weight", &[hidden, vocab], 0, z(hidden * vocab)).tensor("output_norm.weight", &[hidden], 0, z(hidden));
        for (n, d) in [("attn_norm", vec![hidden]), ("attn_q", vec![hidden, q]), ("attn_k", vec![hidden, kv]), ("attn_v", vec![hidden, kv]),
                       ("attn_output", vec![q, hidden]), ("ffn_norm", vec![hidden]), ("ffn_gate", vec![hidden, ff]),
                       ("ffn_up", vec![hidden, ff]), ("ffn_down", vec![ff, hidden])] {
            let numel = d.iter().product();
            w.tensor(&format!("blk.0.{n}.weight"), &d, 0, z(numel));
        }
    };
    let mut w = one_layer_llama(16, 2, 1, 32);
    full(&mut w, 16, 16, 8, 32, 8);
    let g = Gguf::open(&tmp("full.gguf", &w.bytes())).unwrap();
    let cfg = g.llama_config().unwrap();
    assert_eq!(g.model_checkpoint(&cfg).unwrap().len(), 11);
    let lie = |key: &str, v: u64| {
        let mut w = one_layer_llama(16, 2, 1, 32);
        w.kv.retain(|(k, _, _)| k != key);
        w.kv(key, 10, v.to_le_bytes().to_vec());
        full(&mut w, 16, 16, 8, 32, 8);
        let g = Gguf::open(&tmp("lie.gguf", &w.bytes())).unwrap();
        g.llama_config().and_then(|cfg| g.model_checkpoint(&cfg).map(|_| ()))
    };
    assert_eq!(lie("llama.block_count", 1 << 50), Err(Error::MissingTensor("model.layers.1.input_layernorm.weight".into())));
    let embed = |expected: Vec<usize>| Err(Error::ShapeMismatch { name: "model.embed_tokens.weight".into(), expected, got: vec![8, 16] });
    assert_eq!(lie("llama.vocab_size", 1 << 50), embed(vec![1 << 50, 16]));
    assert_eq!(lie("llama.embedding_length", 1 << 40), embed(vec![8, 1 << 40]));
    assert!(matches!(lie("llama.feed_forward_length", 1 << 50), Err(Error::ShapeMismatch { name, .. }) if name.ends_with("gate_proj.weight")));
    assert!(matches!(lie("llama.attention.key_length", 1 << 40), Err(Error::ShapeMismatch { name, .. }) if name.ends_with("q_proj.weight")));
    assert!(matches!(lie("llama.context_length", 1 << 50), Err(Error::BadFormat { detail, .. }) if detail.contains("max_position_embeddings")));
}

/// `to_checkpoint` keeps F32/F16/BF16 tensors in their dtype (views of the mapped file; q/k a
/// reordered copy) and dequantizes block formats to f32; every value equals the f32 route
/// (dequantize, then unpermute q/k).
#[test]
fn checkpoint_keeps_16_bit_tensors_and_matches_the_f32_route() {
    let vals = |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| (((i * 31 + seed * 17) % 61) as f32 - 30.0) / 16.0).collect() };
    let bf = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect() };
    let hf16 = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect() };
    let mut w = one_layer_llama(16, 2, 1, 32);
    let qi: [i8; 32] = std::array::from_fn(|i| (i as i8 - 16) * 5);
    let mut down = vec![];
    (0..16).for_each(|_| down.extend(q8_0(&qi, 0.01).0));
    w.tensor("token_embd.weight", &[16, 8], 0, f32s(&vals(128, 1)))
        .tensor("blk.0.attn_q.weight", &[16, 16], 30, bf(&vals(256, 2)))
        .tensor("blk.0.attn_k.weight", &[16, 8], 1, hf16(&vals(128, 3)))
        .tensor("blk.0.attn_v.weight", &[16, 8], 30, bf(&vals(128, 4)))
        .tensor("blk.0.ffn_down.weight", &[32, 16], 8, down);
    let g = Gguf::open(&tmp("ckpt.gguf", &w.bytes())).unwrap();
    let cfg = g.llama_config().unwrap();
    let ck = g.to_checkpoint(&cfg).unwrap();
    let cases = [
        ("token_embd.weight", "model.embed_tokens.weight", DType::F32, None),
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", DType::BF16, Some(2)),
        ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", DType::F16, Some(1)),
        ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", DType::BF16, None),
        ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", DType::F32, None),
    ];
    for (name, hf, dtype, heads) in cases {
        let t = ck.get(hf).unwrap();
        let (shape, mut want) = g.dequantize(name).unwrap();
        if let Some(h) = heads {
            want = unpermute_qk(&want, h, shape[1]);
        }
        assert_eq!((t.dtype, &t.shape), (dtype, &shape), "{name}");
        assert_eq!((0..t.numel()).map(|i| t.get_f32(i)).collect::<Vec<_>>(), want, "{name}");
        if heads.is_none() && dtype != DType::F32 || name == "token_embd.weight" {
            // a view of the file: its bytes are the file's, at the tensor's offset
            assert_eq!(t.file_offset(), g.tensor_info(name).unwrap().start, "{name} is not a view");
        }
    }
}

/// Block-quantized q/k weights are dequantized row by row into HF order, in buffers the load
/// reuses: every value equals the f32 route (dequantize, then unpermute), also when a tensor is
/// made again in a buffer another tensor gave back.
#[test]
fn quantized_qk_rows_come_back_in_hf_order_in_reused_buffers() {
    let mut w = one_layer_llama(32, 4, 2, 64);
    // every row different, so a misplaced row shows
    let rows = |n: usize, salt: i32| -> Vec<u8> {
        (0..n).flat_map(|r| q8_0(&std::array::from_fn(|i| ((i as i32 * 7 + r as i32 * 13 + salt) % 200 - 100) as i8), 0.01 + r as f32 * 0.001).0).collect()
    };
    w.tensor("blk.0.attn_q.weight", &[32, 32], 8, rows(32, 1)).tensor("blk.0.attn_k.weight", &[32, 16], 8, rows(16, 2));
    let g = Gguf::open(&tmp("qk_q8.gguf", &w.bytes())).unwrap();
    let ck = g.to_checkpoint(&g.llama_config().unwrap()).unwrap();
    for _ in 0..2 {
        for (name, hf, heads) in [("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", 4), ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", 2)] {
            let t = ck.get(hf).unwrap();
            let (shape, v) = g.dequantize(name).unwrap();
            let want = unpermute_qk(&v, heads, shape[1]);
            assert_ne!(want, v, "{name}: the test needs rows that move");
            assert_eq!((t.dtype, &t.shape), (DType::F32, &shape), "{name}");
            assert_eq!((0..t.numel()).map(|i| t.get_f32(i)).collect::<Vec<_>>(), want, "{name}");
        }
    }
}

/// The real SmolLM2-135M-Instruct Q4_1 file against test/fixtures/gguf/smollm2_probe.json
/// (llama.cpp's gguf package). `VIVA_SMOLLM2_GGUF=path cargo test -p viva_core --test gguf -- --ignored`
#[test]
#[ignore]
fn real_smollm2_matches_the_gguf_package() {
    let path = PathBuf::from(std::env::var("VIVA_SMOLLM2_GGUF").expect("set VIVA_SMOLLM2_GGUF"));
    let g = Gguf::open(&path).unwrap();
    let c = g.llama_config().unwrap();
    assert_eq!((c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads), (30, 576, 9, 3));
    assert_eq!((c.vocab_size, c.intermediate_size, c.head_dim), (49152, 1536, 64));
    assert!(c.tie_word_embeddings);
    let probe: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/gguf/smollm2_probe.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(g.tensor_names().len() as u64, probe["tensor_count"].as_u64().unwrap());
    for (name, p) in probe["tensors"].as_object().unwrap() {
        let (shape, v) = g.dequantize(name).unwrap();
        let want_shape: Vec<usize> = p["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        assert_eq!(shape, want_shape, "{name}");
        for (a, b) in v.iter().zip(p["first"].as_array().unwrap()) {
            // same f32 values; 1e-12 only absorbs serde_json's decimal parsing
            let b = b.as_f64().unwrap();
            assert!((*a as f64 - b).abs() <= 1e-12 * b.abs(), "{name}: {a} vs {b}");
        }
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let want = p["sum"].as_f64().unwrap();
        assert!((sum - want).abs() <= 1e-6 * p["abs_sum"].as_f64().unwrap(), "{name}: {sum} vs {want}");
    }
    let t = std::time::Instant::now();
    for name in g.tensor_names() {
        let (_, v) = g.dequantize(name).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
    eprintln!("dequantized all {} tensors in {:?}", g.tensor_names().len(), t.elapsed());
}

/// A SentencePiece ("llama") GGUF tokenizer (TinyLlama's, written by llama.cpp's gguf package)
/// against transformers' own conversion of the same file (test/fixtures/gguf/make_llama_tokenizer_gguf.py).
#[test]
fn llama_type_tokenizer_matches_transformers_conversion() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/gguf");
    let g = Gguf::open(&dir.join("tinyllama_tokenizer.gguf")).unwrap();
    let json = viva_core::gguf::tokenizer::tokenizer_json(&g).unwrap();
    if let Ok(out) = std::env::var("VIVA_DUMP_TOKENIZER_JSON") {
        std::fs::write(out, &json).unwrap();
    }
    let tok = viva_core::tokenizer::Tokenizer::from_bytes(json.as_bytes(), &g.path).unwrap();
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tinyllama_tokenizer_expected.json")).unwrap()).unwrap();
    for case in exp["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids, want, "{text:?}");
        assert_eq!(tok.decode(&ids, true).unwrap(), case["decoded"].as_str().unwrap(), "{text:?}");
    }
}
