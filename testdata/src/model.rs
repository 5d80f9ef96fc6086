//! A generated model checkout, shaped like a sharded Hugging Face safetensors model: `N`
//! weight files `model-0000i-of-0000N.safetensors` with a real safetensors header, plus the
//! small files that travel with them (`config.json`, `tokenizer.json`,
//! `tokenizer_config.json`, `model.safetensors.index.json`). For the model-artifact
//! benchmark (`strata-bench model`, issue #18) and tests of lazy artifact volumes.
//!
//! A safetensors file is an 8-byte little-endian header length `n`, `n` bytes of JSON (a
//! map from tensor name to `{dtype, shape, data_offsets: [begin, end]}`, offsets relative
//! to the end of the header, plus an optional `__metadata__` map of strings; padded with
//! spaces), then the tensors' bytes. The tensors here have the shapes of a TinyLlama-1.1B
//! decoder layer in BF16 (2048 hidden, 5632 intermediate, 4 key/value heads): 1–22 MiB
//! each, the last one of a file cut to fill it. Their bytes are [`RandomReader`]'s stream
//! (seeded per file, incompressible, several GB/s), so the files are exactly `file_size`
//! bytes and the same spec always gives the same bytes.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::random::copy_random;

/// Hidden size, intermediate size, key/value projection rows (TinyLlama-1.1B).
const HIDDEN: u64 = 2048;
const INTERMEDIATE: u64 = 5632;
const KV_ROWS: u64 = 256;
/// Bytes per BF16 element.
const BF16: u64 = 2;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// Number of weight files.
    pub files: usize,
    /// Size of each weight file in bytes (at least 64 KiB).
    pub file_size: u64,
    /// Seed of the tensors' bytes (file `i` uses `seed + i`).
    pub seed: u64,
}

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name in the header.
    pub name: String,
    /// `BF16`, `U8`, …
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Byte range within the data section (after the header).
    pub begin: u64,
    /// End of that range (exclusive).
    pub end: u64,
}

/// One generated weight file.
#[derive(Debug, Clone)]
pub struct WeightFile {
    /// File name in the model directory.
    pub name: String,
    /// Total size in bytes.
    pub size: u64,
    /// Length of the JSON header (the 8-byte length prefix not included).
    pub header_len: u64,
    /// Its tensors, by offset.
    pub tensors: Vec<TensorInfo>,
}

/// What [`write_model_dir`] wrote.
#[derive(Debug, Clone)]
pub struct GeneratedModel {
    /// The weight files, in order.
    pub weights: Vec<WeightFile>,
    /// The small files (names).
    pub small_files: Vec<String>,
}

impl GeneratedModel {
    /// Bytes of all weight files.
    pub fn weight_bytes(&self) -> u64 {
        self.weights.iter().map(|w| w.size).sum()
    }
}

/// Writes the model described by `spec` into `dir` (created if missing).
///
/// # Errors
///
/// `file_size` too small for a header and one tensor, or an I/O error (naming the file).
pub fn write_model_dir(dir: &Path, spec: &ModelSpec) -> io::Result<GeneratedModel> {
    if spec.files == 0 || spec.file_size < 64 << 10 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "model spec: need at least one file of at least 64 KiB (got {} × {} bytes)",
                spec.files, spec.file_size
            ),
        ));
    }
    fs::create_dir_all(dir)?;
    let n = spec.files;
    let mut weights = Vec::with_capacity(n);
    let mut layer = 0u64;
    for i in 0..n {
        let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
        let (header, tensors) = layout(spec.file_size, &mut layer);
        let path = dir.join(&name);
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("write {}: {e}", path.display()));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&path).map_err(ctx)?);
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(ctx)?;
        out.write_all(&header).map_err(ctx)?;
        let data = spec.file_size - 8 - header.len() as u64;
        copy_random(&mut out, data, spec.seed.wrapping_add(i as u64), |_| {}).map_err(ctx)?;
        out.into_inner()
            .map_err(|e| ctx(e.into_error()))?
            .sync_all()
            .map_err(ctx)?;
        weights.push(WeightFile {
            name,
            size: spec.file_size,
            header_len: header.len() as u64,
            tensors,
        });
    }
    let small = small_files(&weights);
    let mut small_files = Vec::new();
    for (name, body) in small {
        let path = dir.join(&name);
        fs::write(&path, body)
            .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", path.display())))?;
        small_files.push(name);
    }
    Ok(GeneratedModel {
        weights,
        small_files,
    })
}

/// The header (padded JSON) and tensors of one file of `file_size` bytes, continuing the
/// decoder layers at `*layer`.
fn layout(file_size: u64, layer: &mut u64) -> (Vec<u8>, Vec<TensorInfo>) {
    let start_layer = *layer;
    let mut reserve = 4096u64;
    loop {
        *layer = start_layer;
        let data = file_size - 8 - reserve;
        let tensors = fill(data, layer);
        let mut header = Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        for t in &tensors {
            header.insert(
                t.name.clone(),
                json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [t.begin, t.end]}),
            );
        }
        let mut bytes = serde_json::to_vec(&Value::Object(header)).expect("JSON of strings");
        if bytes.len() as u64 <= reserve {
            bytes.resize(reserve as usize, b' ');
            return (bytes, tensors);
        }
        reserve = (bytes.len() as u64).div_ceil(4096) * 4096;
    }
}

/// Tensors filling exactly `data` bytes: decoder layers from `*layer` on, the last tensor
/// cut (fewer rows) to fit, and a `U8` tensor for what is left under one row.
fn fill(data: u64, layer: &mut u64) -> Vec<TensorInfo> {
    let shapes: [(&str, &[u64]); 9] = [
        ("input_layernorm", &[HIDDEN]),
        ("self_attn.q_proj", &[HIDDEN, HIDDEN]),
        ("self_attn.k_proj", &[KV_ROWS, HIDDEN]),
        ("self_attn.v_proj", &[KV_ROWS, HIDDEN]),
        ("self_attn.o_proj", &[HIDDEN, HIDDEN]),
        ("mlp.gate_proj", &[INTERMEDIATE, HIDDEN]),
        ("mlp.up_proj", &[INTERMEDIATE, HIDDEN]),
        ("mlp.down_proj", &[HIDDEN, INTERMEDIATE]),
        ("post_attention_layernorm", &[HIDDEN]),
    ];
    let mut tensors = Vec::new();
    let mut at = 0u64;
    'layers: loop {
        for (part, shape) in shapes {
            let row: u64 = shape[1..].iter().product::<u64>() * BF16;
            let full = shape[0] * row;
            let left = data - at;
            let name = format!("model.layers.{layer}.{part}.weight");
            if full <= left {
                tensors.push(tensor(name, "BF16", shape.to_vec(), at, full));
                at += full;
                continue;
            }
            let rows = left / row;
            if rows > 0 {
                let mut cut = shape.to_vec();
                cut[0] = rows;
                tensors.push(tensor(name, "BF16", cut, at, rows * row));
                at += rows * row;
            }
            if at < data {
                let name = format!("model.layers.{layer}.padding");
                tensors.push(tensor(name, "U8", vec![data - at], at, data - at));
            }
            *layer += 1;
            break 'layers;
        }
        *layer += 1;
    }
    tensors
}

fn tensor(name: String, dtype: &str, shape: Vec<u64>, begin: u64, len: u64) -> TensorInfo {
    TensorInfo {
        name,
        dtype: dtype.to_owned(),
        shape,
        begin,
        end: begin + len,
    }
}

/// Parses a safetensors JSON header (the `n` bytes after the length prefix): its tensors
/// sorted by offset. Checks that each is a whole number of elements of its dtype.
///
/// # Errors
///
/// Not JSON, not an object, or a tensor entry without a valid dtype, shape and offsets.
pub fn parse_safetensors_header(header: &[u8]) -> Result<Vec<TensorInfo>, String> {
    let value: Value =
        serde_json::from_slice(header).map_err(|e| format!("safetensors header: {e}"))?;
    let map = value
        .as_object()
        .ok_or("safetensors header: not a JSON object")?;
    let mut tensors = Vec::new();
    for (name, entry) in map {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format!("safetensors header: tensor {name:?}: {what}");
        let dtype = entry["dtype"].as_str().ok_or_else(|| bad("no dtype"))?;
        let shape = entry["shape"]
            .as_array()
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().ok_or_else(|| bad("shape not integers")))
            .collect::<Result<Vec<u64>, _>>()?;
        let offsets = entry["data_offsets"]
            .as_array()
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad("no data_offsets pair"))?;
        let (begin, end) = match (offsets[0].as_u64(), offsets[1].as_u64()) {
            (Some(b), Some(e)) if b <= e => (b, e),
            _ => return Err(bad("data_offsets not an ascending pair")),
        };
        let elem = match dtype {
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
            "BF16" | "F16" | "I16" | "U16" => 2,
            "F32" | "I32" | "U32" => 4,
            "F64" | "I64" | "U64" => 8,
            other => return Err(bad(&format!("unknown dtype {other}"))),
        };
        if shape.iter().product::<u64>() * elem != end - begin {
            return Err(bad("shape does not match data_offsets"));
        }
        tensors.push(TensorInfo {
            name: name.clone(),
            dtype: dtype.to_owned(),
            shape,
            begin,
            end,
        });
    }
    tensors.sort_by_key(|t| t.begin);
    Ok(tensors)
}

/// `config.json`, the tokenizer files and the shard index, as a Llama checkpoint has them.
fn small_files(weights: &[WeightFile]) -> Vec<(String, Vec<u8>)> {
    let layers = weights
        .iter()
        .flat_map(|w| &w.tensors)
        .filter(|t| t.name.ends_with("post_attention_layernorm.weight"))
        .count();
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "num_hidden_layers": layers,
        "torch_dtype": "bfloat16",
        "vocab_size": 32000,
    });
    // A byte-level vocabulary of a few thousand entries: tens of KiB, like a small real one.
    let vocab: Map<String, Value> = (0..4000u32)
        .map(|i| (format!("▁tok{i:04x}"), json!(i)))
        .collect();
    let tokenizer = json!({
        "version": "1.0",
        "added_tokens": [{"id": 0, "content": "<unk>", "special": true}],
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
    });
    let tokenizer_config = json!({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "model_max_length": 2048, "tokenizer_class": "LlamaTokenizer",
    });
    let weight_map: Map<String, Value> = weights
        .iter()
        .flat_map(|w| w.tensors.iter().map(|t| (t.name.clone(), json!(w.name))))
        .collect();
    let index = json!({
        "metadata": {"total_size": weights.iter().map(|w| w.size).sum::<u64>()},
        "weight_map": weight_map,
    });
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON");
    vec![
        ("config.json".into(), pretty(&config)),
        ("tokenizer.json".into(), pretty(&tokenizer)),
        ("tokenizer_config.json".into(), pretty(&tokenizer_config)),
        ("model.safetensors.index.json".into(), pretty(&index)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn files_have_a_real_header_covering_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ModelSpec {
            files: 2,
            file_size: 40 << 20,
            seed: 7,
        };
        let model = write_model_dir(dir.path(), &spec).unwrap();
        assert_eq!(model.weights.len(), 2);
        for w in &model.weights {
            let mut f = File::open(dir.path().join(&w.name)).unwrap();
            assert_eq!(f.metadata().unwrap().len(), 40 << 20);
            let mut len = [0u8; 8];
            f.read_exact(&mut len).unwrap();
            let n = u64::from_le_bytes(len);
            assert_eq!(n, w.header_len);
            assert_eq!(n % 8, 0, "data starts 8-byte aligned");
            let mut header = vec![0u8; n as usize];
            f.read_exact(&mut header).unwrap();
            let tensors = parse_safetensors_header(&header).unwrap();
            assert_eq!(tensors, w.tensors);
            // Contiguous, from 0 to the end of the file.
            let mut at = 0;
            for t in &tensors {
                assert_eq!(t.begin, at);
                at = t.end;
            }
            assert_eq!(8 + n + at, 40 << 20);
        }
        // The layers continue across files, and the tensors are TinyLlama's.
        assert!(model.weights[0].tensors[1].name == "model.layers.0.self_attn.q_proj.weight");
        assert_eq!(model.weights[0].tensors[1].shape, vec![2048, 2048]);
        assert_ne!(
            model.weights[1].tensors[0].name, model.weights[0].tensors[0].name,
            "the second file continues the layers"
        );
        for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
            let v: Value = serde_json::from_slice(&fs::read(dir.path().join(name)).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(v.is_object());
        }
        // Deterministic.
        let again = tempfile::tempdir().unwrap();
        write_model_dir(again.path(), &spec).unwrap();
        let a = fs::read(dir.path().join(&model.weights[1].name)).unwrap();
        let b = fs::read(again.path().join(&model.weights[1].name)).unwrap();
        assert!(a == b);
    }

    #[test]
    fn bad_headers_are_refused() {
        assert!(parse_safetensors_header(b"[]").is_err());
        assert!(
            parse_safetensors_header(
                b"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}"
            )
            .is_err()
        );
        assert!(
            parse_safetensors_header(
                b"{\"a\":{\"dtype\":\"X\",\"shape\":[1],\"data_offsets\":[0,1]}}"
            )
            .is_err()
        );
        let ok = parse_safetensors_header(
            b"{\"__metadata__\":{},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}  ",
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
    }
}
