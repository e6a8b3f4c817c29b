//! Where weights come from: the [`WeightSource`] abstraction and its Hugging
//! Face safetensors implementation.
//!
//! A source yields `(checkpoint name, array)` pairs named with the Hugging
//! Face tensor names, which are the model's own parameter names. A GGUF
//! source (dequantised through forge-quant, renamed through forge-gguf's
//! mapping, Q/K rows un-permuted) implements the same trait.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use mlx_rs::{Array, Dtype};
use safetensors::{Dtype as StDtype, SafeTensors};

use crate::error::{Error, Result};

/// One tensor from a checkpoint.
#[derive(Debug)]
pub struct NamedTensor {
    /// Checkpoint name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// The values, already in the requested dtype.
    pub array: Array,
    /// The file it came from, for error messages.
    pub origin: PathBuf,
}

/// A checkpoint that yields tensors by their Hugging Face names.
pub trait WeightSource {
    /// A human-readable name of the checkpoint (folder or file).
    fn describe(&self) -> String;

    /// Calls `visit` once per tensor, in any order, with arrays converted to
    /// `dtype`. Errors from `visit` stop the walk and are returned.
    fn for_each_tensor(
        &self,
        dtype: Dtype,
        visit: &mut dyn FnMut(NamedTensor) -> Result<()>,
    ) -> Result<()>;
}

/// One or more `.safetensors` files (a single file or a sharded checkpoint).
#[derive(Debug, Clone)]
pub struct SafetensorsSource {
    name: String,
    files: Vec<PathBuf>,
}

const INDEX_FILE: &str = "model.safetensors.index.json";
const SINGLE_FILE: &str = "model.safetensors";

impl SafetensorsSource {
    /// The weights of a Hugging Face folder: `model.safetensors.index.json`
    /// (sharded) when present, else `model.safetensors`.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let index = dir.join(INDEX_FILE);
        let files = if index.is_file() {
            shard_files(&index, dir)?
        } else {
            let single = dir.join(SINGLE_FILE);
            if !single.is_file() {
                return Err(Error::io(
                    dir,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("neither {SINGLE_FILE} nor {INDEX_FILE} found"),
                    ),
                ));
            }
            vec![single]
        };
        Ok(Self {
            name: dir.display().to_string(),
            files,
        })
    }

    /// Explicit safetensors files.
    pub fn from_files(files: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        let files: Vec<PathBuf> = files.into_iter().map(Into::into).collect();
        let name = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Self { name, files }
    }

    /// The files read, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

fn shard_files(index: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: index.to_path_buf(),
        source: e,
    })?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::MissingConfigKey {
            path: index.to_path_buf(),
            key: "weight_map".into(),
        })?;
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::invalid(
                index,
                format!("weight_map.{tensor}"),
                file.to_string(),
                "a file name",
            )
        })?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(Error::invalid(
                index,
                format!("weight_map.{tensor}"),
                format!("{file:?}"),
                "a file name inside the folder",
            ));
        }
        files.insert(file.to_string());
    }
    let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
    for f in &files {
        if !f.is_file() {
            return Err(Error::io(
                f,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("shard listed in {INDEX_FILE} is missing"),
                ),
            ));
        }
    }
    Ok(files)
}

impl WeightSource for SafetensorsSource {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn for_each_tensor(
        &self,
        dtype: Dtype,
        visit: &mut dyn FnMut(NamedTensor) -> Result<()>,
    ) -> Result<()> {
        for path in &self.files {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the map is read-only and lives only for this loop
            // iteration; the data are copied into MLX arrays before it is
            // dropped. A concurrent writer truncating the file could fault,
            // as with any mmap-based checkpoint reader.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let mut names = st.names();
            names.sort();
            for name in names {
                let view = st.tensor(name).map_err(|e| Error::Safetensors {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                let array = to_array(view.dtype(), view.shape(), view.data(), path, name)?;
                let array = if array.dtype() == dtype {
                    array
                } else {
                    array.as_dtype(dtype)?
                };
                visit(NamedTensor {
                    name: name.to_string(),
                    array,
                    origin: path.clone(),
                })?;
            }
        }
        Ok(())
    }
}

fn to_array(
    dtype: StDtype,
    shape: &[usize],
    data: &[u8],
    path: &Path,
    name: &str,
) -> Result<Array> {
    let shape = shape
        .iter()
        .map(|&d| i32::try_from(d))
        .collect::<Result<Vec<i32>, _>>()
        .map_err(|_| Error::Safetensors {
            path: path.to_path_buf(),
            message: format!("tensor `{name}` has a dimension of 2^31 or more"),
        })?;
    Ok(match dtype {
        StDtype::F32 => {
            let v: Vec<f32> = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Array::from_slice(&v, &shape)
        }
        StDtype::F16 => {
            let v: Vec<half::f16> = data
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            Array::from_slice(&v, &shape)
        }
        StDtype::BF16 => {
            let v: Vec<half::bf16> = data
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            Array::from_slice(&v, &shape)
        }
        other => {
            return Err(Error::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    })
}

/// Writes arrays as one safetensors file (f32, f16 or bf16 arrays), through a
/// temporary sibling and a rename.
pub(crate) fn write_safetensors(path: &Path, tensors: &[(String, Array)]) -> Result<()> {
    let mut owned: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, array) in tensors {
        array.eval()?;
        let shape: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
        let (dtype, bytes) = match array.dtype() {
            Dtype::Float16 => (
                StDtype::F16,
                array
                    .as_slice::<half::f16>()
                    .iter()
                    .flat_map(|x| x.to_bits().to_le_bytes())
                    .collect(),
            ),
            Dtype::Bfloat16 => (
                StDtype::BF16,
                array
                    .as_slice::<half::bf16>()
                    .iter()
                    .flat_map(|x| x.to_bits().to_le_bytes())
                    .collect(),
            ),
            _ => {
                let a = array.as_dtype(Dtype::Float32)?;
                a.eval()?;
                (
                    StDtype::F32,
                    a.as_slice::<f32>()
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                )
            }
        };
        owned.push((name.clone(), dtype, shape, bytes));
    }
    let views = owned
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Safetensors {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(
        views,
        Some(std::collections::HashMap::from([(
            "format".to_string(),
            "pt".to_string(),
        )])),
    )
    .map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    crate::util::write_atomic(path, &bytes)
}
