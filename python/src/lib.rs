//! `qformer._native`: the Python module's Rust half. Every call goes to the `qformer-std`
//! functions the command lines use (`quantize::quantize`, `verify::{load_reference, compare}`,
//! `runtime::{check_images, resolve_instructions, run_batch_text}`), so the Python module and
//! the CLI share one implementation, their messages and their output bytes.
//!
//! Errors become the exceptions of `qformer._errors` (defined in Python, so that `FileError`
//! can also be an `OSError`), with the CLI's `{:#}` message. A panic (a bug) is caught and
//! raised as `qformer.Error`, never unwinding into the interpreter. The forward, quantize and
//! verify run with the GIL released.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use numpy::ndarray::Array3;
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use qformer_core::Precision;
use qformer_std::io::{images_from, instructions_from, read_images, read_instructions, Images};
use qformer_std::runtime::{
    check_images, detect_kernels, resolve_instructions, run_batch_text, BlobBytes, Instructions, Threads, Wording,
};

/// Which exception of `qformer._errors` an error becomes (an OS error anywhere in the chain
/// makes it a `FileError`).
#[derive(Clone, Copy)]
enum Kind {
    /// `BlobError`: not a loadable blob.
    Blob,
    /// `CheckpointError`: a checkpoint that cannot be read or does not fit.
    Checkpoint,
    /// `InputError` (also a `ValueError`): a bad argument or input.
    Input,
}

/// The Python exception for `e`, with the message the CLI prints after `error: `.
fn to_py(py: Python<'_>, kind: Kind, e: anyhow::Error) -> PyErr {
    let io = e.chain().any(|c| c.is::<std::io::Error>() || c.is::<qformer_std::files::OsError>());
    let name = match kind {
        _ if io => "FileError",
        Kind::Blob => "BlobError",
        Kind::Checkpoint => "CheckpointError",
        Kind::Input => "InputError",
    };
    raise(py, name, format!("{e:#}"))
}

/// An instance of `qformer._errors.<name>` carrying `message`.
fn raise(py: Python<'_>, name: &str, message: String) -> PyErr {
    let class = py.import("qformer._errors").and_then(|m| m.getattr(name));
    match class {
        Ok(class) => PyErr::from_type(class.cast_into().expect("qformer._errors holds exception classes"), message),
        Err(e) => e,
    }
}

/// Runs `f` with the GIL released, a panic turned into an error.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    py.detach(|| catch(f))
}

/// `f()`, a panic turned into an error.
fn catch<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            Err(anyhow!("internal error (a bug in qformer, please report it): {what}"))
        }
    }
}

/// A panic outside [`detached`] (while converting arguments) as `qformer.Error`.
fn guard<T>(py: Python<'_>, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => Err(raise(py, "Error", "internal error (a bug in qformer, please report it): a panic".into())),
    }
}

fn precision(dtype: &str) -> Result<Precision> {
    Ok(match dtype {
        "f32" | "float32" => Precision::F32,
        "fp16" | "f16" | "float16" => Precision::F16,
        "int8" => Precision::Int8,
        other => anyhow::bail!("dtype {other:?} is not one of \"f32\", \"fp16\", \"int8\""),
    })
}

/// `quantize(src, dst, dtype, config, group, max_image_tokens, tokenizer, max_text_tokens,
/// progress) -> dict`: `qformer_std::quantize::quantize`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (src, dst, dtype, config, group, max_image_tokens, tokenizer, max_text_tokens, progress))]
fn quantize<'py>(
    py: Python<'py>,
    src: PathBuf,
    dst: PathBuf,
    dtype: &str,
    config: Option<PathBuf>,
    group: u32,
    max_image_tokens: Option<u32>,
    tokenizer: Option<PathBuf>,
    max_text_tokens: Option<u32>,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let precision = precision(dtype).map_err(|e| to_py(py, Kind::Input, e))?;
    qformer_std::quantize::check_group(group).map_err(|e| to_py(py, Kind::Input, anyhow!("group: {e}")))?;
    let opts = qformer_std::quantize::Options {
        precision,
        config,
        group,
        max_image_tokens,
        tokenizer,
        max_text_tokens,
        progress,
    };
    let s = detached(py, || qformer_std::quantize::quantize(&src, &dst, &opts))
        .map_err(|e| to_py(py, Kind::Checkpoint, e))?;
    let d = PyDict::new(py);
    d.set_item("path", dst.display().to_string())?;
    d.set_item("dtype", precision.name())?;
    d.set_item("parameters", s.parameters)?;
    d.set_item("blob_bytes", s.blob_bytes)?;
    d.set_item("arena_bytes", s.arena_bytes)?;
    d.set_item("report", s.report)?;
    Ok(d)
}

/// A loaded blob: the bytes (read, or mapped) and the validated model over them.
#[pyclass(frozen, module = "qformer._native", name = "Model")]
struct PyModel {
    /// Borrows `blob`'s bytes; declared first, so dropped before them.
    model: qformer_core::Model<'static>,
    /// Never moved out of nor changed while `model` lives (a heap buffer or a mapping: its
    /// bytes stay where they are however the `Box` moves).
    blob: Box<BlobBytes>,
    path: PathBuf,
    mmap: bool,
}

impl PyModel {
    fn load(path: &Path, mmap: bool) -> Result<PyModel> {
        let blob = Box::new(if mmap { BlobBytes::map(path)? } else { BlobBytes::open(path)? });
        let bytes = blob.bytes();
        // SAFETY: `bytes` points into the heap buffer or mapping that `blob` owns, which
        // stays at its address and unchanged until `blob` is dropped (nothing takes it out of
        // the struct or mutates it), and `model` (the only holder of this reference) is
        // declared before `blob`, so it is dropped first: the 'static never outlives them.
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        let model = qformer_core::Model::from_blob(bytes)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?
            .with_kernels(detect_kernels());
        Ok(PyModel { model, blob, path: path.to_path_buf(), mmap })
    }
}

/// Image features from a numpy array: f32 or f16, `[M, d_v]` or `[B, M, d_v]`, C-contiguous;
/// copied (f16 converted) into f32, so that nothing another Python thread does to the array
/// while the GIL is released can reach the forward.
fn images_of(array: &Bound<'_, PyAny>) -> Result<Images> {
    let Ok(untyped) = array.cast::<PyUntypedArray>() else {
        anyhow::bail!(
            "image_embeds is a {}, not a numpy array (give a numpy array, or a tensor with __array__ or __dlpack__)",
            type_name(array)
        );
    };
    let shape = untyped.shape().to_vec();
    // `as_slice` also takes Fortran order, which would be read transposed.
    if !untyped.is_c_contiguous() {
        return Err(not_contiguous("image_embeds"));
    }
    if let Ok(a) = array.cast::<PyArrayDyn<f32>>() {
        let r = a.readonly();
        let data = r.as_slice().map_err(|_| not_contiguous("image_embeds"))?.to_vec();
        return images_from(&shape, data, "image_embeds");
    }
    if let Ok(a) = array.cast::<PyArrayDyn<half::f16>>() {
        let r = a.readonly();
        let data = r.as_slice().map_err(|_| not_contiguous("image_embeds"))?.iter().map(|v| v.to_f32()).collect();
        return images_from(&shape, data, "image_embeds");
    }
    anyhow::bail!(
        "image_embeds has dtype {}, not float32 or float16 (convert it, e.g. .astype(numpy.float32))",
        untyped.dtype()
    )
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map_or_else(|_| "object".to_string(), |n| n.to_string())
}

fn not_contiguous(name: &str) -> anyhow::Error {
    anyhow!("{name} is not C-contiguous (a transposed or strided view): pass numpy.ascontiguousarray({name})")
}

/// An integer array (`input_ids`: int64 or int32; `attention_mask`: also uint8 or bool) as
/// its shape and values.
fn ints_of(array: &Bound<'_, PyAny>, name: &str, mask: bool) -> Result<(Vec<usize>, Vec<i64>)> {
    let Ok(untyped) = array.cast::<PyUntypedArray>() else {
        anyhow::bail!("{name} is a {}, not a numpy array", type_name(array));
    };
    let shape = untyped.shape().to_vec();
    if !untyped.is_c_contiguous() {
        return Err(not_contiguous(name));
    }
    macro_rules! take {
        ($t:ty) => {
            if let Ok(a) = array.cast::<PyArrayDyn<$t>>() {
                let r = a.readonly();
                let v = r.as_slice().map_err(|_| not_contiguous(name))?.iter().map(|&x| x as i64).collect();
                return Ok((shape, v));
            }
        };
    }
    take!(i64);
    take!(i32);
    if mask {
        take!(u8);
        if let Ok(a) = array.cast::<PyArrayDyn<bool>>() {
            let r = a.readonly();
            let v = r.as_slice().map_err(|_| not_contiguous(name))?.iter().map(|&x| x as i64).collect();
            return Ok((shape, v));
        }
    }
    let allowed = if mask { "int64, int32, uint8 or bool" } else { "int64 or int32" };
    anyhow::bail!("{name} has dtype {}, not {allowed}", untyped.dtype())
}

/// `input_ids` and `attention_mask` as the instructions of a run, checked as a file's
/// `qformer_input_ids` and `qformer_attention_mask` are.
fn instructions_of(ids: Option<&Bound<'_, PyAny>>, mask: Option<&Bound<'_, PyAny>>) -> Result<Option<Instructions>> {
    let Some(ids) = ids else {
        if mask.is_some() {
            anyhow::bail!("attention_mask given without input_ids");
        }
        return Ok(None);
    };
    let (ids_shape, ids) = ints_of(ids, "input_ids", false)?;
    let mask = mask.map(|m| ints_of(m, "attention_mask", true)).transpose()?;
    let what = |name: &str| match name {
        "qformer_input_ids" => "input_ids".to_string(),
        "qformer_attention_mask" => "attention_mask".to_string(),
        other => other.to_string(),
    };
    instructions_from(&ids_shape, &ids, mask.as_ref().map(|(s, v)| (s.as_slice(), v.as_slice())), &what).map(Some)
}

/// The Python arguments' names in `resolve_instructions`'s messages.
const PY_WORDING: Wording<'static> = Wording { prompt: "prompt", sources: "prompt= or input_ids=" };

/// The worker threads of `threads=` (`None` or 0: one per core).
fn threads(n: Option<i64>) -> Result<Threads> {
    let n = match n {
        None => 0,
        Some(n) if n < 0 => anyhow::bail!("threads={n}: give 0 or None (one per core) or a positive count"),
        Some(n) => usize::try_from(n).map_err(|_| anyhow!("threads={n} is too large"))?,
    };
    Threads::new(n)
}

#[pymethods]
impl PyModel {
    #[new]
    #[pyo3(signature = (path, mmap = false))]
    fn new(py: Python<'_>, path: PathBuf, mmap: bool) -> PyResult<PyModel> {
        detached(py, || PyModel::load(&path, mmap)).map_err(|e| to_py(py, Kind::Blob, e))
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    #[getter]
    fn mmap(&self) -> bool {
        self.mmap
    }

    #[getter]
    fn blob_bytes(&self) -> usize {
        self.blob.bytes().len()
    }

    #[getter]
    fn arena_bytes(&self) -> usize {
        self.model.arena_bytes()
    }

    #[getter]
    fn precision(&self) -> &'static str {
        self.model.precision().name()
    }

    #[getter]
    fn kernels<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let k = self.model.kernels();
        let d = PyDict::new(py);
        d.set_item("q8", k.q8.name())?;
        d.set_item("float", k.f.name())?;
        d.set_item("quant", k.quant.name())?;
        Ok(d)
    }

    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.model.config();
        let d = PyDict::new(py);
        d.set_item("num_layers", c.num_layers)?;
        d.set_item("hidden", c.hidden)?;
        d.set_item("num_heads", c.num_heads)?;
        d.set_item("intermediate", c.intermediate)?;
        d.set_item("activation", c.activation.name())?;
        d.set_item("cross_attention_frequency", c.cross_attention_frequency)?;
        d.set_item("encoder_hidden", c.encoder_hidden)?;
        d.set_item("num_queries", c.num_queries)?;
        d.set_item("max_image_tokens", c.max_image_tokens)?;
        d.set_item("projection_dim", c.projection_dim)?;
        d.set_item("layer_norm_eps", c.layer_norm_eps)?;
        d.set_item("max_text_tokens", c.max_text_tokens)?;
        d.set_item("vocab_size", c.vocab_size)?;
        d.set_item("has_text", c.has_text())?;
        Ok(d)
    }

    /// `qformer inspect`'s text.
    fn report(&self) -> String {
        qformer_std::report::model(&self.model, self.blob.bytes())
    }

    /// Tokenizes `text` with the blob's own vocabulary: `(ids, truncated_from)`.
    fn tokenize(&self, py: Python<'_>, text: &str) -> PyResult<(Vec<u32>, usize)> {
        let mut ids = vec![0u32; self.model.config().max_text_tokens.max(2) as usize];
        let t = self.model.tokenize(text, &mut ids).map_err(|e| to_py(py, Kind::Input, e.into()))?;
        ids.truncate(t.len);
        Ok((ids, t.truncated_from))
    }

    /// The forward: `(outputs, notes)` with `outputs` a dict of `qformer_output` `[B, N, d]`
    /// and, with a projection, `projected` `[B, N, d_llm]` (f32 arrays owning the buffers the
    /// forward wrote), `notes` the CLI's notes.
    #[pyo3(signature = (image_embeds, prompt = None, input_ids = None, attention_mask = None, threads = None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        image_embeds: &Bound<'py, PyAny>,
        prompt: Option<String>,
        input_ids: Option<&Bound<'py, PyAny>>,
        attention_mask: Option<&Bound<'py, PyAny>>,
        threads: Option<i64>,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyList>)> {
        let input = |e| to_py(py, Kind::Input, e);
        let (images, ids) = guard(py, || {
            let images = images_of(image_embeds).map_err(input)?;
            let ids = instructions_of(input_ids, attention_mask).map_err(input)?;
            Ok((images, ids))
        })?;
        if prompt.is_some() && ids.is_some() {
            return Err(input(anyhow!("input_ids and prompt both give an instruction: give one of them")));
        }
        let model = &self.model;
        let (out, notes) = detached(py, || {
            let pool = self::threads(threads)?;
            check_images(model, &images, "image_embeds")?;
            let (text, notes) = resolve_instructions(model, prompt.as_deref(), ids, images.batch, PY_WORDING)?;
            let out = run_batch_text(model, &images.data, images.batch, images.tokens, text.as_ref(), false, &pool)?;
            Ok((out, notes))
        })
        .map_err(input)?;
        let c = model.config();
        let (b, n) = (images.batch, c.num_queries as usize);
        let d = PyDict::new(py);
        let array = |v: Vec<f32>, w: usize| -> PyResult<_> {
            let a = Array3::from_shape_vec((b, n, w), v).map_err(|e| PyException::new_err(e.to_string()))?;
            Ok(a.into_pyarray(py))
        };
        d.set_item("qformer_output", array(out.output, c.hidden as usize)?)?;
        if let Some(p) = out.projected {
            d.set_item("projected", array(p, c.projection_dim as usize)?)?;
        }
        Ok((d, PyList::new(py, notes)?))
    }

    fn __repr__(&self) -> String {
        let c = self.model.config();
        format!(
            "qformer.Model({:?}, {}, {} layers, d {}, {} queries{})",
            self.path.display().to_string(),
            self.model.precision().name(),
            c.num_layers,
            c.hidden,
            c.num_queries,
            if c.has_text() { ", InstructBLIP text parts" } else { "" }
        )
    }
}

/// `verify(model, reference, image_embeds | input_path, prompt, input_ids, attention_mask,
/// config, tokenizer, min_cosine, progress) -> (precision, batch, tokens, rows, notes, failure)`,
/// `failure` the CLI's message when an output's cosine is below `min_cosine`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (model, reference, image_embeds, input_path, prompt, input_ids, attention_mask, config, tokenizer, min_cosine, progress))]
fn verify<'py>(
    py: Python<'py>,
    model: PathBuf,
    reference: PathBuf,
    image_embeds: Option<&Bound<'py, PyAny>>,
    input_path: Option<PathBuf>,
    prompt: Option<String>,
    input_ids: Option<&Bound<'py, PyAny>>,
    attention_mask: Option<&Bound<'py, PyAny>>,
    config: Option<PathBuf>,
    tokenizer: Option<PathBuf>,
    min_cosine: Option<f64>,
    progress: bool,
) -> VerifyResult<'py> {
    let input = |e| to_py(py, Kind::Input, e);
    if let Some(v) = min_cosine {
        qformer_std::verify::check_min_cosine(v, &v.to_string()).map_err(|e| input(anyhow!("min_cosine: {e}")))?;
    }
    // Arrays are read here, under the GIL; a file after the blob and the checkpoint, as the
    // CLI does.
    let arrays = guard(py, || match image_embeds {
        Some(a) => {
            let images = images_of(a).map_err(input)?;
            let ids = instructions_of(input_ids, attention_mask).map_err(input)?;
            Ok(Some((images, ids)))
        }
        None => Ok(None),
    })?;
    let loaded = detached(py, || PyModel::load(&model, false)).map_err(|e| to_py(py, Kind::Blob, e))?;
    let m = &loaded.model;
    let weights =
        detached(py, || qformer_std::verify::load_reference(m, &model, &reference, config, tokenizer, progress))
            .map_err(|e| to_py(py, Kind::Checkpoint, e))?;
    let (rows, notes, batch, tokens) = detached(py, || {
        let (images, ids, conflict) = match (arrays, &input_path) {
            (Some((images, ids)), _) => {
                check_images(m, &images, "image_embeds")?;
                let conflict = "input_ids and prompt both give an instruction: give one of them".to_string();
                (images, ids, conflict)
            }
            (None, Some(p)) => {
                // The CLI's order: the features, their check, then the instructions.
                let images = read_images(p)?;
                check_images(m, &images, &p.display().to_string())?;
                let ids = read_instructions(p)?;
                let conflict = format!(
                    "{} carries qformer_input_ids and prompt gives an instruction too: give one of them",
                    p.display()
                );
                (images, ids, conflict)
            }
            (None, None) => anyhow::bail!("give image_embeds (an array or an input file)"),
        };
        if prompt.is_some() && ids.is_some() {
            anyhow::bail!("{conflict}");
        }
        let (text, notes) = resolve_instructions(m, prompt.as_deref(), ids, images.batch, PY_WORDING)?;
        let rows = qformer_std::verify::compare(m, &weights, &images, text.as_ref())?;
        Ok((rows, notes, images.batch, images.tokens))
    })
    .map_err(input)?;
    let failure = min_cosine.and_then(|v| qformer_std::verify::check(&rows, v).err()).map(|e| format!("{e:#}"));
    let table = PyList::empty(py);
    for r in rows {
        let d = PyDict::new(py);
        d.set_item("name", r.name)?;
        d.set_item("cosine", r.agreement.cosine)?;
        d.set_item("max_abs", r.agreement.max_abs)?;
        d.set_item("rms", r.agreement.rms)?;
        table.append(d)?;
    }
    Ok((m.precision().name().to_string(), batch, tokens, table, PyList::new(py, notes)?, failure))
}

/// What [`verify`] returns to Python.
type VerifyResult<'py> = PyResult<(String, usize, usize, Bound<'py, PyList>, Bound<'py, PyList>, Option<String>)>;

/// The version of the crate (the workspace's).
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", VERSION)?;
    m.add("MAX_THREADS", Threads::max())?;
    m.add_class::<PyModel>()?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    Ok(())
}
