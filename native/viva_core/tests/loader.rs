//! Checkpoint (safetensors) loading: good inputs read back exactly, and every bad input gives
//! its exact `Error` variant. Files are written into a fresh temp folder per test (config.json: config.rs).
mod loader_common;

use std::path::PathBuf;

use half::bf16;

use loader_common::*;
use viva_core::safetensors::Checkpoint;
use viva_core::tensor::DType;
use viva_core::Error;

// ---------------------------------------------------------------- safetensors: good inputs

#[test]
fn single_file_reads_each_dtype_exactly() {
    let dir = TempDir::new("dtypes");
    // Values exactly representable in each dtype, so the read-back is exact.
    let v32 = [1.5f32, -2.25, 3.0e-3, 65504.0, -0.0, 7.0];
    let v16 = [0.5f32, -1.0, 2.0, 0.099975586, 1024.0, -3.5];
    let vb16 = [1.0f32, -0.5, 3.140625, 1.0e10_f32, -2.0, 0.0];
    let p = dir.write(
        "model.safetensors",
        &st_bytes(&[f32_t("a", vec![2, 3], &v32), f16_t("b", vec![3, 2], &v16), bf16_t("c", vec![6], &vb16)]),
    );
    let bf_exact: Vec<f32> = vb16.iter().map(|v| bf16::from_f32(*v).to_f32()).collect();
    assert_eq!(bf_exact[3], bf16::from_f32(1.0e10).to_f32()); // the stored (rounded) value

    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.dir, dir.0);
    assert_eq!(ck.files, vec![p.clone()]);
    assert_eq!(ck.names(), vec!["a", "b", "c"]); // __metadata__ is not a tensor
    assert_eq!(ck.len(), 3);
    assert!(!ck.contains("__metadata__"));

    let a = ck.get("a").unwrap();
    assert_eq!((a.dtype, a.shape.clone()), (DType::F32, vec![2, 3]));
    assert_eq!(a.to_f32_vec(), v32.to_vec());
    assert_eq!(a.get_f32(3), 65504.0);
    let b = ck.get_shaped("b", &[3, 2]).unwrap();
    assert_eq!(b.dtype, DType::F16);
    assert_eq!(b.to_f32_vec(), v16.to_vec());
    let c = ck.get("c").unwrap();
    assert_eq!(c.dtype, DType::BF16);
    assert_eq!(c.to_f32_vec(), bf_exact);
    let mut part = [0f32; 2];
    c.read_f32_into(1, &mut part);
    assert_eq!(part, [-0.5, 3.140625]);
}

#[test]
fn views_are_zero_copy_into_one_map() {
    let dir = TempDir::new("zerocopy");
    let p = dir.write("m.safetensors", &st_bytes(&[f32_t("x", vec![4], &[1.0; 4]), f32_t("y", vec![2], &[2.0; 2])]));
    let ck = Checkpoint::open(&p).unwrap();
    // The model shares a Checkpoint across threads (Llm is Send + Sync).
    fn send_sync<S: Send + Sync>(_: &S) {}
    send_sync(&ck);
    let (x, y) = (ck.get("x").unwrap(), ck.get("y").unwrap());
    // y's bytes start right after x's in the same mapping: no per-tensor copies.
    assert_eq!(y.bytes().as_ptr() as usize - x.bytes().as_ptr() as usize, 16);
    let file = std::fs::read(&p).unwrap();
    assert_eq!(x.bytes(), &file[file.len() - 24..file.len() - 8]);
}

#[test]
fn scalar_and_empty_tensors() {
    let dir = TempDir::new("scalar");
    let p = dir.write("m.safetensors", &st_bytes(&[f32_t("s", vec![], &[4.0]), f32_t("e", vec![0, 5], &[])]));
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.get("s").unwrap().to_f32_vec(), vec![4.0]);
    assert_eq!(ck.get("e").unwrap().numel(), 0);
}

fn write_sharded(dir: &TempDir) -> PathBuf {
    dir.write("model-00001-of-00002.safetensors", &st_bytes(&[f32_t("w1", vec![2], &[1.0, 2.0]), f32_t("w2", vec![1], &[3.0])]));
    dir.write("model-00002-of-00002.safetensors", &st_bytes(&[bf16_t("w3", vec![2, 1], &[4.0, 5.0])]));
    let index = serde_json::json!({
        "metadata": {"total_size": 16},
        "weight_map": {"w1": "model-00001-of-00002.safetensors", "w2": "model-00001-of-00002.safetensors",
                       "w3": "model-00002-of-00002.safetensors"}
    });
    dir.write("model.safetensors.index.json", index.to_string().as_bytes())
}

#[test]
fn sharded_index_by_file_and_by_folder() {
    let dir = TempDir::new("sharded");
    let index = write_sharded(&dir);
    // A stray file the index does not name must not be loaded.
    dir.write("stray.safetensors", &st_bytes(&[f32_t("stray", vec![1], &[0.0])]));
    for ck in [Checkpoint::open(&index).unwrap(), Checkpoint::open(&dir.0).unwrap()] {
        assert_eq!(ck.dir, dir.0);
        assert_eq!(
            ck.files,
            vec![dir.path("model-00001-of-00002.safetensors"), dir.path("model-00002-of-00002.safetensors")]
        );
        assert_eq!(ck.names(), vec!["w1", "w2", "w3"]);
        assert_eq!(ck.get("w1").unwrap().to_f32_vec(), vec![1.0, 2.0]);
        assert_eq!(ck.get("w2").unwrap().to_f32_vec(), vec![3.0]);
        assert_eq!(ck.get_shaped("w3", &[2, 1]).unwrap().to_f32_vec(), vec![4.0, 5.0]);
        assert!(!ck.contains("stray"));
    }
}

#[test]
fn folder_prefers_model_safetensors_over_other_files() {
    let dir = TempDir::new("prefer_single");
    dir.write("model.safetensors", &st_bytes(&[f32_t("main", vec![1], &[1.0])]));
    dir.write("other.safetensors", &st_bytes(&[f32_t("other", vec![1], &[2.0])]));
    let ck = Checkpoint::open(&dir.0).unwrap();
    assert_eq!(ck.files, vec![dir.path("model.safetensors")]);
    assert_eq!(ck.names(), vec!["main"]);
}

#[test]
fn folder_with_unindexed_files_loads_them_all() {
    let dir = TempDir::new("unindexed");
    dir.write("b.safetensors", &st_bytes(&[f32_t("tb", vec![1], &[2.0])]));
    dir.write("a.safetensors", &st_bytes(&[f32_t("ta", vec![1], &[1.0])]));
    dir.write("notes.txt", b"not a checkpoint");
    let ck = Checkpoint::open(&dir.0).unwrap();
    assert_eq!(ck.files, vec![dir.path("a.safetensors"), dir.path("b.safetensors")]);
    assert_eq!(ck.names(), vec!["ta", "tb"]);
    // A single oddly named file in a folder works too.
    let one = TempDir::new("one_file");
    one.write("weights.safetensors", &st_bytes(&[f32_t("w", vec![1], &[1.0])]));
    assert_eq!(Checkpoint::open(&one.0).unwrap().names(), vec!["w"]);
}

#[test]
fn duplicate_names_across_unindexed_files_are_bad_format() {
    let dir = TempDir::new("dupes");
    dir.write("a.safetensors", &st_bytes(&[f32_t("w", vec![1], &[1.0])]));
    let b = dir.write("b.safetensors", &st_bytes(&[f32_t("w", vec![1], &[2.0])]));
    assert_bad_format(open_err(&dir.0), &b, "\"w\" is also in another file");
}

// ---------------------------------------------------------------- safetensors: bad inputs

#[test]
fn missing_file_and_empty_folder_are_file_not_found() {
    let dir = TempDir::new("missing");
    let p = dir.path("nope.safetensors");
    assert_eq!(open_err(&p), Error::FileNotFound(p.display().to_string()));
    let sub = dir.path("empty");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(open_err(&sub), Error::FileNotFound(sub.join("model.safetensors").display().to_string()));
}

#[test]
fn truncated_files_are_bad_format() {
    let dir = TempDir::new("truncated");
    for n in [0usize, 1, 7] {
        let p = dir.write("short.safetensors", &vec![0u8; n]);
        assert_bad_format(open_err(&p), &p, "shorter than the 8-byte header length");
    }
    let good = st_bytes(&[f32_t("w", vec![4], &[1.0, 2.0, 3.0, 4.0])]);
    // Cut inside the header: the declared header length runs past EOF.
    let p = dir.write("cut_header.safetensors", &good[..20]);
    assert_bad_format(open_err(&p), &p, "runs past the end");
    // Cut inside the data: the tensor's offsets run past the data section.
    let p = dir.write("cut_data.safetensors", &good[..good.len() - 1]);
    assert_bad_format(open_err(&p), &p, "past the 15-byte data section");
}

#[test]
fn absurd_header_length_is_bad_format() {
    let dir = TempDir::new("absurd");
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let p = dir.write("huge.safetensors", &bytes);
    assert_bad_format(open_err(&p), &p, "exceeds");
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let p = dir.write("long.safetensors", &bytes);
    assert_bad_format(open_err(&p), &p, "runs past the end of the 10-byte file");
}

#[test]
fn corrupt_headers_are_bad_format() {
    let dir = TempDir::new("corrupt");
    let p = dir.write("nonutf8.safetensors", &raw_file(&[b'{', 0xff, 0xfe, b'}'], &[]));
    assert_bad_format(open_err(&p), &p, "not UTF-8");

    let cases: &[(&str, &[u8], &str)] = &[
        ("{\"w\": {\"dtype\": \"F32\"", &[], "not JSON"),
        ("", &[], "not JSON"),
        ("[1, 2, 3]", &[], "not a JSON object"),
        ("{\"w\": 5}", &[], "entry \"w\" is not an object"),
        ("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", &[0; 4], "missing dtype"),
        ("{\"w\": {\"dtype\": 32, \"shape\": [1], \"data_offsets\": [0, 4]}}", &[0; 4], "dtype is not a string"),
        ("{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", &[0; 4], "missing shape"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", &[0; 4], "non-negative integers"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", &[0; 4], "non-negative integers"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", &[0; 4], "missing data_offsets"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", &[0; 4], "[begin, end] pair"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", &[0; 4], "reversed"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 8]}}", &[0; 4], "past the 4-byte data section"),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", &[0; 4], "needs 8 bytes, data_offsets span 4"),
        ("{\"w\": {\"dtype\": \"BF16\", \"shape\": [1], \"data_offsets\": [0, 4]}}", &[0; 4], "needs 2 bytes"),
        // numel × size overflows usize: must be caught, not wrap to a small length.
        (
            "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 0]}}",
            &[],
            "overflows",
        ),
        ("{\"w\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904], \"data_offsets\": [0, 0]}}", &[], "overflows"),
        // A length-checked unsupported dtype is still checked.
        ("{\"w\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 4]}}", &[0; 4], "needs 8 bytes"),
    ];
    for (header, data, needle) in cases {
        let (err, p) = header_err(&dir, header, data);
        assert_bad_format(err, &p, needle);
    }
}

#[test]
fn header_padding_and_metadata_are_accepted() {
    // The format allows trailing spaces in the header (8-byte alignment).
    let dir = TempDir::new("padding");
    let header = "{\"__metadata__\": {\"k\": \"v\"}, \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}     ";
    let p = dir.write("m.safetensors", &raw_file(header.as_bytes(), &2.5f32.to_le_bytes()));
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.names(), vec!["w"]);
    assert_eq!(ck.get("w").unwrap().to_f32_vec(), vec![2.5]);
}

#[test]
fn missing_tensor_and_wrong_shape() {
    let dir = TempDir::new("lookup");
    let p = dir.write("m.safetensors", &st_bytes(&[f32_t("w", vec![2, 3], &[0.0; 6])]));
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.get("model.norm.weight").unwrap_err(), Error::MissingTensor("model.norm.weight".into()));
    assert_eq!(ck.get_shaped("absent", &[1]).unwrap_err(), Error::MissingTensor("absent".into()));
    assert!(!ck.contains("absent"));
    assert_eq!(
        ck.get_shaped("w", &[3, 2]).unwrap_err(),
        Error::ShapeMismatch { name: "w".into(), expected: vec![3, 2], got: vec![2, 3] }
    );
    assert_eq!(
        ck.get_shaped("w", &[6]).unwrap_err(),
        Error::ShapeMismatch { name: "w".into(), expected: vec![6], got: vec![2, 3] }
    );
}

#[test]
fn unknown_dtype_is_kept_but_unsupported() {
    let dir = TempDir::new("dtype");
    let p = dir.write(
        "m.safetensors",
        &st_bytes(&[
            T { name: "ids".into(), dtype: "I64", shape: vec![2], data: vec![0; 16] },
            T { name: "fp8".into(), dtype: "F8_E4M3", shape: vec![3], data: vec![0; 3] },
            T { name: "odd".into(), dtype: "Q4_WEIRD", shape: vec![5], data: vec![0; 7] },
            f32_t("ok", vec![1], &[1.0]),
        ]),
    );
    let ck = Checkpoint::open(&p).unwrap();
    assert_eq!(ck.names(), vec!["fp8", "ids", "odd", "ok"]);
    assert!(ck.contains("ids"));
    for (name, dtype) in [("ids", "I64"), ("fp8", "F8_E4M3"), ("odd", "Q4_WEIRD")] {
        let want = Error::UnsupportedDtype { name: name.into(), dtype: dtype.into() };
        assert_eq!(ck.get(name).unwrap_err(), want);
        assert_eq!(ck.get_shaped(name, &[1]).unwrap_err(), want);
    }
    assert_eq!(ck.get("ok").unwrap().to_f32_vec(), vec![1.0]);
}

#[test]
fn bad_index_json_is_bad_format() {
    let dir = TempDir::new("bad_index");
    dir.write("s1.safetensors", &st_bytes(&[f32_t("w", vec![1], &[1.0])]));
    let cases: &[(&str, &str)] = &[
        ("{\"weight_map\": {\"w\": ", "index is not JSON"),
        ("[]", "no \"weight_map\" object"),
        ("{\"metadata\": {}}", "no \"weight_map\" object"),
        ("{\"weight_map\": [\"s1.safetensors\"]}", "no \"weight_map\" object"),
        ("{\"weight_map\": {}}", "weight_map is empty"),
        ("{\"weight_map\": {\"w\": 1}}", "weight_map[\"w\"] is not a string"),
        ("{\"weight_map\": {\"w\": \"../s1.safetensors\"}}", "leaves the checkpoint folder"),
        ("{\"weight_map\": {\"w\": \"/etc/passwd\"}}", "leaves the checkpoint folder"),
        ("{\"weight_map\": {\"w\": \"s1.safetensors\", \"v\": \"s1.safetensors\"}}", "lists \"v\""),
    ];
    for (text, needle) in cases {
        let p = dir.write("model.safetensors.index.json", text.as_bytes());
        assert_bad_format(open_err(&p), &p, needle);
        // Through the folder the same error comes back.
        assert_bad_format(open_err(&dir.0), &p, needle);
    }
    // Index naming a tensor in the wrong shard.
    dir.write("s2.safetensors", &st_bytes(&[f32_t("v", vec![1], &[1.0])]));
    let p = dir.write("model.safetensors.index.json", br#"{"weight_map": {"w": "s2.safetensors", "v": "s1.safetensors"}}"#);
    assert_bad_format(open_err(&p), &p, "but it is in");
    let p = dir.write("model.safetensors.index.json", &[b'{', 0xff, b'}']);
    assert_bad_format(open_err(&p), &p, "not UTF-8");
}

#[test]
fn missing_shard_is_file_not_found() {
    let dir = TempDir::new("missing_shard");
    let index = write_sharded(&dir);
    let shard = dir.path("model-00002-of-00002.safetensors");
    std::fs::remove_file(&shard).unwrap();
    assert_eq!(open_err(&index), Error::FileNotFound(shard.display().to_string()));
    assert_eq!(open_err(&dir.0), Error::FileNotFound(shard.display().to_string()));
}

#[test]
fn corrupt_shard_is_bad_format_for_that_shard() {
    let dir = TempDir::new("corrupt_shard");
    let index = write_sharded(&dir);
    let shard = dir.write("model-00002-of-00002.safetensors", b"\x05\0\0\0\0\0\0\0{oops");
    assert_bad_format(open_err(&index), &shard, "not JSON");
}

