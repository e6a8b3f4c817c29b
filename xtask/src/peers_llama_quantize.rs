//! The `llama-quantize` and `llama-perplexity` peers: llama.cpp's quantizer
//! and its quantization-quality tool, built with cmake from the vendored
//! sources of the PyPI sdist `llama-cpp-python==0.3.36` into
//! `.forge/peers/llama-cpp/` (`src/` the sources, `build/bin/` the binaries).
//! forge-gguf's `tests/llama_quantize.rs` compares Forge's Q4_K_M/Q5_K_M/Q8_0
//! exports with `llama-quantize`'s byte for byte, and `benches/export.rs`
//! times both side by side; forge-core's `tests/export_llama_cpp.rs` measures
//! the exports' perplexity and KL divergence against the F16 export with
//! `llama-perplexity`.
//!
//! Only those two targets are built (static libraries, no curl, no
//! server, no tests; `GGML_NATIVE` on, as a user would build it for speed —
//! the quantizers it runs without an importance matrix are ggml's scalar
//! `*_ref` functions either way). Measured on the 2-core VM while other
//! builds shared it: 43 min wall, 10.6 min CPU (`user`); on an idle 2-core
//! machine expect about 5–6 minutes (`llama-perplexity` adds 13 s to an
//! existing `llama-quantize` build). The completion marker records the sdist
//! hash, flags and targets, so a second run takes milliseconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::peers::PeerLayout;
use crate::util;

const SDIST_SPEC: &str = "llama-cpp-python==0.3.36";
const SDIST_FILE: &str = "llama_cpp_python-0.3.36.tar.gz";
const SDIST_SHA256: &str = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e";
const VENDOR_PREFIX: &str = "llama_cpp_python-0.3.36/vendor/llama.cpp";
const CMAKE_FLAGS: &[&str] = &[
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DGGML_NATIVE=ON",
];

/// The cmake targets built, each a binary in `build/bin/`.
const TARGETS: &[&str] = &["llama-quantize", "llama-perplexity"];

/// `.forge/peers/llama-cpp/build/bin/llama-quantize`.
pub(crate) fn binary(layout: &PeerLayout) -> PathBuf {
    tool(layout, "llama-quantize")
}

/// `.forge/peers/llama-cpp/build/bin/<name>`.
pub(crate) fn tool(layout: &PeerLayout, name: &str) -> PathBuf {
    layout
        .dir
        .join("llama-cpp")
        .join("build")
        .join("bin")
        .join(name)
}

fn venv_python(layout: &PeerLayout) -> PathBuf {
    layout.venv.join("bin").join("python")
}

/// The cmake of the PyPI `cmake` package in the setup venv (its `bin/cmake`
/// launcher's shebang may name the venv's temporary path).
fn cmake(root: &Path) -> Result<PathBuf> {
    let py = root.join(".forge").join("venv").join("bin").join("python");
    let dir =
        util::output(Command::new(&py).args(["-c", "import cmake; print(cmake.CMAKE_BIN_DIR)"]))
            .context("cmake from the setup venv (run cargo xtask setup)")?;
    Ok(PathBuf::from(dir.trim()).join("cmake"))
}

fn sdist(layout: &PeerLayout) -> Result<PathBuf> {
    let path = layout.downloads.join(SDIST_FILE);
    if !path.is_file() {
        fs::create_dir_all(&layout.downloads)?;
        util::run(
            Command::new(venv_python(layout))
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "-q",
                    "-d",
                ])
                .arg(&layout.downloads)
                .arg(SDIST_SPEC),
        )
        .with_context(|| format!("downloading {SDIST_SPEC} from PyPI"))?;
    }
    let got = util::output(Command::new(venv_python(layout)).args([
        "-c",
        "import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())",
    ]).arg(&path))?;
    if got.trim() != SDIST_SHA256 {
        bail!(
            "{} has sha256 {}, expected {SDIST_SHA256}",
            path.display(),
            got.trim()
        );
    }
    Ok(path)
}

/// Builds `llama-quantize` and `llama-perplexity` unless the marker says they
/// are there.
pub(crate) fn ensure(layout: &PeerLayout, root: &Path) -> Result<()> {
    let dir = layout.dir.join("llama-cpp");
    let marker = dir.join("built-from");
    let recipe = format!(
        "{SDIST_SHA256}\n{}\n{}",
        CMAKE_FLAGS.join(" "),
        TARGETS.join(" ")
    );
    let built = TARGETS.iter().all(|t| tool(layout, t).is_file());
    if built && fs::read_to_string(&marker).is_ok_and(|m| m == recipe) {
        return Ok(());
    }
    let started = Instant::now();
    let src = dir.join("src");
    if !src.join("tools").join("quantize").is_dir() {
        eprintln!("forge peers: llama.cpp sources from the PyPI sdist {SDIST_SPEC}");
        let archive = sdist(layout)?;
        let tmp = util::partial_path(&src);
        let _ = fs::remove_dir_all(&tmp);
        util::run(
            Command::new(venv_python(layout))
                .args([
                    "-c",
                    "import sys,tarfile,os,shutil\nsrc,prefix,dst=sys.argv[1:4]\nwith tarfile.open(src) as t:\n  ms=[m for m in t.getmembers() if m.name==prefix or m.name.startswith(prefix+'/')]\n  t.extractall(dst+'.x', members=ms, filter='data')\nshutil.move(os.path.join(dst+'.x',prefix), dst)\nshutil.rmtree(dst+'.x')",
                ])
                .arg(&archive)
                .arg(VENDOR_PREFIX)
                .arg(&tmp),
        )?;
        let _ = fs::remove_dir_all(&src);
        fs::rename(&tmp, &src)?;
    }
    eprintln!(
        "forge peers: building {} with cmake (several minutes on 2 cores)",
        TARGETS.join(" and ")
    );
    let cmake = cmake(root)?;
    let build = dir.join("build");
    util::run(
        Command::new(&cmake)
            .arg("-S")
            .arg(&src)
            .arg("-B")
            .arg(&build)
            .args(CMAKE_FLAGS),
    )?;
    util::run(
        Command::new(&cmake)
            .arg("--build")
            .arg(&build)
            .arg("--target")
            .args(TARGETS)
            .arg("-j")
            .arg(util::jobs().to_string()),
    )?;
    for t in TARGETS {
        if !tool(layout, t).is_file() {
            bail!(
                "cmake finished but {} is missing",
                tool(layout, t).display()
            );
        }
    }
    util::write_atomic(&marker, recipe)?;
    eprintln!(
        "forge peers: llama.cpp tools built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
