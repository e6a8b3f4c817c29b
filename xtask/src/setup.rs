//! `cargo xtask setup`: make MLX usable from Rust on this machine.
//!
//! macOS: nothing to do, plain mlx-rs builds MLX with Metal.
//! Linux: MLX from PyPI in a project-local venv, mlx-c built from the mlx-sys
//! sources against it, bindings generated with bindgen, and a generated cargo
//! config with the build-script override, the rpath and the OpenBLAS link.
//! See docs/mlx-on-linux.md for the why of each step.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::cargo_config::{self, MlxLinkConfig};
use crate::{prereq, util};

/// The MLX release pinned by mlx-c inside mlx-sys 0.7.0 (`GIT_TAG v0.32.2`).
pub(crate) const MLX_VERSION: &str = "0.32.2";
/// The mlx-sys release whose mlx-c sources are built.
const MLX_SYS_VERSION: &str = "0.7.0";
/// Bumped whenever the steps below change in a way that must redo the setup.
const SETUP_REVISION: &str = "3";
/// The header force-included into mlx-c's C++ build and bindgen's parse.
const COMPAT_HEADER: &str = include_str!("../assets/mlx-c-compat.h");
/// cmake from PyPI (the machine may have none, or one too old).
const CMAKE_REQUIREMENT: &str = "cmake>=3.24,<5";

#[derive(Args, Debug, Default, Clone)]
pub(crate) struct SetupArgs {
    /// Also install MLX's CUDA build (mlx-cuda-13) and prefer it at run time
    /// (sticky: later runs keep it until `.forge/` is deleted)
    #[arg(long)]
    pub(crate) cuda: bool,
    /// Install missing system packages with apt-get (needs root)
    #[arg(long)]
    pub(crate) install_deps: bool,
    /// Redo every step even when the cache says it is up to date
    #[arg(long)]
    pub(crate) force: bool,
    /// Python interpreter used to create the venv
    #[arg(long, default_value = "python3")]
    pub(crate) python: String,
}

/// What a finished setup produced (all absolute).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) cache: PathBuf,
    pub(crate) venv: PathBuf,
    pub(crate) venv_cuda: PathBuf,
    pub(crate) mlxc_build: PathBuf,
    pub(crate) mlxc_lib_dir: PathBuf,
    pub(crate) bindings_dir: PathBuf,
    pub(crate) compat_header: PathBuf,
    pub(crate) cargo_config: PathBuf,
    pub(crate) stamp: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Self {
        let cache = root.join(".forge");
        Self {
            venv: cache.join("venv"),
            venv_cuda: cache.join("venv-cuda"),
            mlxc_build: cache.join("build").join("mlx-c"),
            mlxc_lib_dir: cache.join("mlx-c").join("lib"),
            bindings_dir: cache.join("mlx-c").join("out"),
            compat_header: cache.join("mlx-c").join("forge-mlx-c-compat.h"),
            cargo_config: cache.join("cargo-mlx.toml"),
            stamp: cache.join("setup.stamp"),
            cache,
        }
    }
}

/// Runs the setup for this platform. Returns whether anything was done.
pub(crate) fn run(args: &SetupArgs) -> Result<bool> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("macos", _) => {
            eprintln!(
                "forge setup: macOS needs no setup: mlx-rs builds MLX with Metal itself; plain `cargo build/test` works"
            );
            Ok(false)
        }
        ("linux", "x86_64" | "aarch64") => linux(args),
        (os, arch) => bail!(
            "no MLX setup for {os}/{arch}: Forge supports macOS (Apple Silicon) and Linux x86_64/aarch64"
        ),
    }
}

/// The inputs that decide whether a cached setup is still valid.
fn fingerprint(args: &SetupArgs, mlx_sys_dir: &Path, found: &prereq::Found) -> String {
    let parts: Vec<String> = vec![
        SETUP_REVISION.into(),
        MLX_VERSION.into(),
        COMPAT_HEADER.into(),
        args.cuda.to_string(),
        mlx_sys_dir.display().to_string(),
        format!("{:?}", found.openblas_dir),
        util::workspace_root().display().to_string(),
    ];
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    format!("{:016x}", util::fnv1a(&bytes))
}

/// The stamp records the fingerprint and the paths it was computed from, so the
/// fast path needs no subprocess at all.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    fingerprint: String,
    mlx_sys_dir: PathBuf,
    cuda: bool,
    outputs: Vec<PathBuf>,
}

impl Stamp {
    fn to_json(&self) -> String {
        serde_json::json!({
            "fingerprint": self.fingerprint,
            "mlx_sys_dir": self.mlx_sys_dir,
            "cuda": self.cuda,
            "outputs": self.outputs,
        })
        .to_string()
    }

    fn read(path: &Path) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
        Some(Self {
            fingerprint: v["fingerprint"].as_str()?.into(),
            mlx_sys_dir: v["mlx_sys_dir"].as_str()?.into(),
            cuda: v["cuda"].as_bool()?,
            outputs: v["outputs"]
                .as_array()?
                .iter()
                .filter_map(|p| p.as_str().map(PathBuf::from))
                .collect(),
        })
    }

    /// Valid when the fingerprint of today's inputs matches and every output exists.
    fn is_current(&self, args: &SetupArgs, found: &prereq::Found) -> bool {
        self.cuda == args.cuda
            && self.mlx_sys_dir.join("src/mlx-c/CMakeLists.txt").is_file()
            && self.fingerprint == fingerprint(args, &self.mlx_sys_dir, found)
            && self.outputs.iter().all(|p| p.exists())
    }
}

fn linux(args: &SetupArgs) -> Result<bool> {
    let started = Instant::now();
    let root = util::workspace_root();
    let layout = Layout::new(&root);

    // Prerequisites are cheap to check and must hold for the cache to be usable
    // (an uninstalled OpenBLAS would break the link), so check them first.
    let found = prereq::ensure(&args.python, args.install_deps)?;

    // `--cuda` is sticky: a later plain `cargo xtask test` keeps the CUDA build.
    let previous = Stamp::read(&layout.stamp);
    let args = &SetupArgs {
        cuda: args.cuda || previous.as_ref().is_some_and(|s| s.cuda),
        ..args.clone()
    };
    if !args.force
        && let Some(stamp) = previous
        && stamp.is_current(args, &found)
    {
        eprintln!(
            "forge setup: MLX {MLX_VERSION} setup is up to date ({:.2} s; `cargo xtask setup --force` redoes it)",
            started.elapsed().as_secs_f64()
        );
        return Ok(false);
    }

    eprintln!(
        "forge setup: preparing MLX {MLX_VERSION} for Rust in {}",
        layout.cache.display()
    );
    let steps = 6;
    let step = |n: usize, what: &str| eprintln!("[{n}/{steps}] {what}");

    step(1, "python venv with mlx-cpu and cmake from PyPI");
    let mut reqs = vec![
        format!("mlx-cpu=={MLX_VERSION}"),
        CMAKE_REQUIREMENT.to_string(),
    ];
    ensure_venv(&args.python, &layout.venv, &reqs)?;
    let mlx_dir = mlx_package_dir(&layout.venv)?;
    let mut extra_runtime_dirs = Vec::new();
    if args.cuda {
        reqs = vec![format!("mlx-cuda-13=={MLX_VERSION}")];
        ensure_venv(&args.python, &layout.venv_cuda, &reqs)?;
        extra_runtime_dirs.push(mlx_package_dir(&layout.venv_cuda)?.join("lib"));
    }

    step(2, "cargo fetch (mlx-sys sources)");
    let mlx_sys_dir = locate_mlx_sys()?;

    step(3, "build mlx-c (static) against the PyPI MLX");
    util::write_if_changed(&layout.compat_header, COMPAT_HEADER)?;
    build_mlx_c(&layout, &mlx_sys_dir, &mlx_dir)?;

    step(4, "generate mlx-c bindings with bindgen");
    generate_bindings(&layout, &mlx_sys_dir, &found)?;

    step(5, "write the cargo build-script override");
    let openblas_dir = found
        .openblas_dir
        .clone()
        .context("OpenBLAS directory not found after the prerequisite check")?;
    let config = MlxLinkConfig {
        target: cargo_config::linux_target(),
        mlxc_lib_dir: layout.mlxc_lib_dir.clone(),
        mlx_lib_dir: mlx_dir.join("lib"),
        extra_runtime_dirs,
        bindings_dir: layout.bindings_dir.clone(),
        openblas_dir,
    };
    util::write_atomic(&layout.cargo_config, config.render())?;

    step(6, "record the setup stamp");
    let stamp = Stamp {
        fingerprint: fingerprint(args, &mlx_sys_dir, &found),
        mlx_sys_dir,
        cuda: args.cuda,
        outputs: vec![
            layout.mlxc_lib_dir.join("libmlxc.a"),
            layout.bindings_dir.join("bindings.rs"),
            mlx_dir.join("lib").join("libmlx.so"),
            layout.cargo_config.clone(),
        ],
    };
    util::write_atomic(&layout.stamp, stamp.to_json())?;
    eprintln!(
        "forge setup: done in {:.1} s; plain `cargo build/test/run` now link MLX ({})",
        started.elapsed().as_secs_f64(),
        layout.cargo_config.display()
    );
    Ok(true)
}

/// Creates `venv` if needed (in a temporary sibling, renamed when complete) and
/// installs `reqs` into it unless its marker says they are already there.
pub(crate) fn ensure_venv(python: &str, venv: &Path, reqs: &[String]) -> Result<()> {
    let marker = venv.join("forge-requirements.txt");
    let wanted = reqs.join("\n");
    if fs::read_to_string(&marker).is_ok_and(|have| have == wanted) {
        eprintln!("  venv {} already has {}", venv.display(), reqs.join(", "));
        return Ok(());
    }
    let fresh = !venv.join("pyvenv.cfg").exists();
    let target = if fresh {
        util::partial_path(venv)
    } else {
        venv.to_path_buf()
    };
    if fresh {
        let _ = fs::remove_dir_all(&target);
        fs::create_dir_all(target.parent().unwrap_or(Path::new("."))).ok();
        util::run(Command::new(python).args(["-m", "venv"]).arg(&target))?;
    }
    let result = {
        let py = target.join("bin").join("python");
        util::run(
            Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-q",
                ])
                .args(reqs),
        )
    };
    if let Err(err) = result {
        if fresh {
            let _ = fs::remove_dir_all(&target);
        }
        return Err(err.context(format!(
            "installing {} into {} from PyPI (is PyPI reachable?)",
            reqs.join(" "),
            venv.display()
        )));
    }
    if fresh {
        // A venv's python finds its prefix from pyvenv.cfg next to it, so the
        // rename is safe as long as we always call `bin/python -m pip`.
        fs::rename(&target, venv)
            .with_context(|| format!("renaming {} to {}", target.display(), venv.display()))?;
    }
    util::write_atomic(&marker, wanted)
}

/// `<venv>/lib/pythonX.Y/site-packages/mlx` (the wheel's `mlx/` folder).
fn mlx_package_dir(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    let entries = fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries.filter_map(|e| e.ok()) {
        let candidate = entry.path().join("site-packages").join("mlx");
        if candidate.join("lib").join("libmlx.so").is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no mlx/lib/libmlx.so under {}/python*/site-packages: the mlx-cpu wheel did not install as expected",
        lib.display()
    )
}

/// Finds the mlx-sys sources in the cargo registry, fetching them if needed.
fn locate_mlx_sys() -> Result<PathBuf> {
    util::run(util::cargo().args(["fetch"]))?;
    let meta = util::output(util::cargo().args(["metadata", "--format-version", "1"]))?;
    let meta: serde_json::Value = serde_json::from_str(&meta).context("parsing cargo metadata")?;
    let pkgs = meta["packages"]
        .as_array()
        .context("cargo metadata has no packages")?;
    for pkg in pkgs {
        if pkg["name"] == "mlx-sys" {
            if pkg["version"] != MLX_SYS_VERSION {
                bail!(
                    "the lock file resolves mlx-sys {} but this setup builds mlx-sys {MLX_SYS_VERSION}'s mlx-c",
                    pkg["version"]
                );
            }
            let manifest = PathBuf::from(pkg["manifest_path"].as_str().unwrap_or_default());
            let dir = manifest
                .parent()
                .context("mlx-sys manifest has no parent")?
                .to_path_buf();
            if !dir.join("src/mlx-c/CMakeLists.txt").is_file() {
                bail!("{} has no src/mlx-c/CMakeLists.txt", dir.display());
            }
            return Ok(dir);
        }
    }
    bail!("mlx-sys is not in the workspace's dependency graph")
}

/// The cmake executable of the PyPI `cmake` package in `venv`. (Not the
/// `bin/cmake` launcher script: its shebang names the venv's temporary path.)
fn cmake_binary(venv: &Path) -> Result<PathBuf> {
    let py = venv.join("bin").join("python");
    let dir =
        util::output(Command::new(&py).args(["-c", "import cmake; print(cmake.CMAKE_BIN_DIR)"]))?;
    let bin = PathBuf::from(dir.trim()).join("cmake");
    if !bin.is_file() {
        bail!(
            "the PyPI cmake package in {} has no {}",
            venv.display(),
            bin.display()
        );
    }
    Ok(bin)
}

fn build_mlx_c(layout: &Layout, mlx_sys_dir: &Path, mlx_dir: &Path) -> Result<()> {
    let cmake = cmake_binary(&layout.venv)?;
    let src = mlx_sys_dir.join("src").join("mlx-c");
    let build = &layout.mlxc_build;
    // A build tree configured for other sources (another mlx-sys) is stale.
    let cache_file = build.join("CMakeCache.txt");
    if cache_file.exists() {
        let cache = fs::read_to_string(&cache_file).unwrap_or_default();
        if !cache.contains(&src.to_string_lossy().into_owned()) {
            fs::remove_dir_all(build)
                .with_context(|| format!("removing stale {}", build.display()))?;
        }
    }
    let configured = (|| {
        util::run(
            Command::new(&cmake)
                .arg("-S")
                .arg(&src)
                .arg("-B")
                .arg(build)
                .arg("-DCMAKE_BUILD_TYPE=Release")
                .arg("-DBUILD_SHARED_LIBS=OFF")
                .arg("-DCMAKE_POSITION_INDEPENDENT_CODE=ON")
                .arg("-DMLX_C_USE_SYSTEM_MLX=ON")
                .arg("-DMLX_C_BUILD_EXAMPLES=OFF")
                .arg(format!(
                    "-DMLX_DIR={}",
                    mlx_dir.join("share/cmake/MLX").display()
                ))
                .arg(format!(
                    "-DCMAKE_CXX_FLAGS=-include {}",
                    layout.compat_header.display()
                ))
                .arg("-Wno-dev"),
        )?;
        util::run(
            Command::new(&cmake)
                .arg("--build")
                .arg(build)
                .args(["--target", "mlxc", "--parallel"])
                .arg(util::jobs().to_string()),
        )
    })();
    configured
        .context("building mlx-c (the build tree is kept in .forge/build for the next try)")?;
    let lib = build.join("libmlxc.a");
    if !lib.is_file() {
        bail!("the mlx-c build produced no {}", lib.display());
    }
    util::copy_atomic(&lib, &layout.mlxc_lib_dir.join("libmlxc.a"))
}

fn generate_bindings(layout: &Layout, mlx_sys_dir: &Path, found: &prereq::Found) -> Result<()> {
    let mlx_c_root = mlx_sys_dir.join("src").join("mlx-c");
    let header_dir = mlx_c_root.join("mlx").join("c");
    let mut headers: Vec<PathBuf> = fs::read_dir(&header_dir)
        .with_context(|| format!("reading {}", header_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "h"))
        .collect();
    headers.sort();
    if headers.is_empty() {
        bail!("no headers in {}", header_dir.display());
    }
    if let Some(dir) = &found.libclang_dir {
        // SAFETY: xtask is single-threaded at this point; nothing reads the
        // environment concurrently. clang-sys reads LIBCLANG_PATH when it loads.
        unsafe { std::env::set_var("LIBCLANG_PATH", dir) };
    }
    // Same options as mlx-sys's src/bindgen_config.rs, plus the x86_64 float16
    // carriers that mlx-rs expects (it reads `float16_t.0`, uses bfloat16_t as u16).
    let builder = headers.iter().fold(
        bindgen::Builder::default()
            .rust_target("1.73.0".parse().context("bindgen rust target")?)
            .clang_arg(format!("-I{}", mlx_c_root.display()))
            .clang_arg("-include")
            .clang_arg(layout.compat_header.display().to_string())
            .blocklist_function("malloc")
            .blocklist_function("realloc")
            .blocklist_type("float16_t")
            .blocklist_type("bfloat16_t")
            .raw_line("#[repr(transparent)]")
            .raw_line("#[derive(Debug, Default, Copy, Clone, Hash, PartialEq, Eq)]")
            .raw_line("pub struct __BindgenFloat16(pub u16);")
            .raw_line("pub type float16_t = __BindgenFloat16;")
            .raw_line("pub type bfloat16_t = u16;"),
        |b, h| b.header(h.display().to_string()),
    );
    let bindings = builder
        .generate()
        .map_err(|e| anyhow::anyhow!("bindgen failed on {}: {e}", header_dir.display()))?;
    let out = layout.bindings_dir.join("bindings.rs");
    util::write_atomic(&out, bindings.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_detects_changes() {
        let dir = std::env::temp_dir().join(format!("xtask-stamp-{}", std::process::id()));
        let mlx_sys = dir.join("mlx-sys");
        fs::create_dir_all(mlx_sys.join("src/mlx-c")).unwrap();
        fs::write(mlx_sys.join("src/mlx-c/CMakeLists.txt"), "").unwrap();
        let out = dir.join("out.a");
        fs::write(&out, "x").unwrap();
        let args = SetupArgs::default();
        let found = prereq::Found::default();
        let stamp = Stamp {
            fingerprint: fingerprint(&args, &mlx_sys, &found),
            mlx_sys_dir: mlx_sys.clone(),
            cuda: false,
            outputs: vec![out.clone()],
        };
        let path = dir.join("stamp");
        util::write_atomic(&path, stamp.to_json()).unwrap();
        let read = Stamp::read(&path).unwrap();
        assert_eq!(read, stamp);
        assert!(read.is_current(&args, &found));
        // Asking for CUDA, or losing an output, invalidates it.
        let cuda = SetupArgs {
            cuda: true,
            ..SetupArgs::default()
        };
        assert!(!read.is_current(&cuda, &found));
        fs::remove_file(&out).unwrap();
        assert!(!read.is_current(&args, &found));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compat_header_defines_the_float16_carriers() {
        assert!(COMPAT_HEADER.contains("typedef uint16_t float16_t;"));
        assert!(COMPAT_HEADER.contains("#define HAS_BFLOAT16"));
        assert!(COMPAT_HEADER.contains("!__has_include(<format>)"));
    }
}
