//! Prerequisites of the Linux MLX setup, each with the command that fixes it.
//!
//! Every check runs before anything is written, and all missing pieces are
//! reported together in one message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::util;

/// One missing prerequisite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Missing {
    /// What is missing, for the user.
    pub(crate) what: &'static str,
    /// The Debian/Ubuntu package that provides it.
    pub(crate) apt_package: &'static str,
}

/// What the checks found on this machine.
#[derive(Debug, Clone, Default)]
pub(crate) struct Found {
    /// Directory holding `libclang*.so` (given to bindgen as `LIBCLANG_PATH`).
    pub(crate) libclang_dir: Option<PathBuf>,
    /// Directory holding `libopenblas.so` (for the link line).
    pub(crate) openblas_dir: Option<PathBuf>,
}

fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The C++ compiler cmake will use (`CXX`, else `c++`, else `g++`, else `clang++`).
fn cxx_available() -> bool {
    if let Some(cxx) = std::env::var_os("CXX") {
        return command_works(&cxx.to_string_lossy(), &["--version"]);
    }
    ["c++", "g++", "clang++"]
        .iter()
        .any(|c| command_works(c, &["--version"]))
}

/// Library directories searched for libclang and OpenBLAS, in order.
fn lib_dirs() -> Vec<PathBuf> {
    let arch = std::env::consts::ARCH;
    let mut dirs = vec![
        PathBuf::from(format!("/usr/lib/{arch}-linux-gnu")),
        PathBuf::from("/usr/lib64"),
        PathBuf::from("/usr/lib"),
        PathBuf::from("/usr/local/lib"),
    ];
    // Debian keeps one LLVM per version under /usr/lib/llvm-N; prefer the newest.
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        let mut llvm: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let version = name.strip_prefix("llvm-")?.parse().ok()?;
                Some((version, e.path().join("lib")))
            })
            .collect();
        llvm.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        dirs.extend(llvm.into_iter().map(|(_, p)| p));
    }
    dirs
}

fn dir_has(dir: &Path, pred: impl Fn(&str) -> bool) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .any(|e| pred(&e.file_name().to_string_lossy()))
    })
}

fn is_libclang(name: &str) -> bool {
    // libclang.so, libclang.so.14, libclang-14.so, libclang-14.so.1 (not libclang-cpp).
    name.starts_with("libclang")
        && name.contains(".so")
        && !name.starts_with("libclang-cpp")
        && !name.starts_with("libclang_rt")
        && (name.starts_with("libclang.so") || name[8..].starts_with('-'))
}

fn find_libclang() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LIBCLANG_PATH") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_file() {
            dir.parent()?.to_path_buf()
        } else {
            dir
        };
        if dir_has(&dir, is_libclang) {
            return Some(dir);
        }
    }
    // An llvm-N/lib dir first: bindgen finds clang's builtin headers next to it.
    let dirs = lib_dirs();
    let (llvm, system): (Vec<_>, Vec<_>) = dirs
        .into_iter()
        .partition(|d| d.to_string_lossy().contains("/llvm-"));
    llvm.into_iter()
        .chain(system)
        .find(|d| dir_has(d, |n| n == "libclang.so" || is_libclang(n)))
}

fn find_openblas() -> Option<PathBuf> {
    lib_dirs()
        .into_iter()
        .find(|d| d.join("libopenblas.so").exists())
}

/// Checks everything; returns what was found and what is missing.
pub(crate) fn check(python: &str) -> (Found, Vec<Missing>) {
    let mut missing = Vec::new();
    if !command_works(python, &["-c", "import venv, ensurepip"]) {
        missing.push(Missing {
            what: "python3 with the venv and ensurepip modules",
            apt_package: "python3-venv",
        });
    }
    if !cxx_available() {
        missing.push(Missing {
            what: "a C++17 compiler (c++, g++ or clang++)",
            apt_package: "g++",
        });
    }
    if !command_works("make", &["--version"]) {
        missing.push(Missing {
            what: "make (cmake's build tool)",
            apt_package: "make",
        });
    }
    let libclang_dir = find_libclang();
    if libclang_dir.is_none() {
        missing.push(Missing {
            what: "libclang (bindgen generates the mlx-c bindings with it; or set LIBCLANG_PATH)",
            apt_package: "libclang-dev",
        });
    }
    let openblas_dir = find_openblas();
    if openblas_dir.is_none() {
        missing.push(Missing {
            what: "OpenBLAS with its link library libopenblas.so (MLX's CPU matmul and LAPACK)",
            apt_package: "libopenblas-dev",
        });
    }
    (
        Found {
            libclang_dir,
            openblas_dir,
        },
        missing,
    )
}

pub(crate) fn is_root() -> bool {
    util::output(Command::new("id").arg("-u")).is_ok_and(|s| s.trim() == "0")
}

fn has_apt() -> bool {
    command_works("apt-get", &["--version"])
}

/// The shell command that installs the missing packages.
pub(crate) fn fix_command(missing: &[Missing], root: bool) -> String {
    let mut pkgs: Vec<&str> = missing.iter().map(|m| m.apt_package).collect();
    pkgs.dedup();
    let sudo = if root { "" } else { "sudo " };
    format!(
        "{sudo}apt-get update && {sudo}apt-get install -y --no-install-recommends {}",
        pkgs.join(" ")
    )
}

/// The single message that lists everything missing and how to fix it.
pub(crate) fn message(missing: &[Missing], root: bool, apt: bool) -> String {
    let mut msg = String::from("the MLX setup needs prerequisites this machine lacks:\n");
    for m in missing {
        msg.push_str(&format!(
            "  - {} (Debian/Ubuntu package `{}`)\n",
            m.what, m.apt_package
        ));
    }
    if apt {
        msg.push_str(&format!("fix with:\n  {}\n", fix_command(missing, root)));
        if root {
            msg.push_str("or let setup do it: cargo xtask setup --install-deps\n");
        }
    } else {
        msg.push_str("install the equivalent packages with your system's package manager\n");
    }
    msg
}

/// Checks, optionally installs with apt-get, and fails with one clear message.
pub(crate) fn ensure(python: &str, install: bool) -> Result<Found> {
    let (found, missing) = check(python);
    if missing.is_empty() {
        return Ok(found);
    }
    let root = is_root();
    let apt = has_apt();
    if install && root && apt {
        eprintln!(
            "forge setup: installing {} missing system package(s)",
            missing.len()
        );
        let pkgs: Vec<&str> = missing.iter().map(|m| m.apt_package).collect();
        util::run(Command::new("apt-get").arg("update"))?;
        util::run(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(&pkgs)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        let (found, missing) = check(python);
        if missing.is_empty() {
            return Ok(found);
        }
        bail!("{}", message(&missing, root, apt));
    }
    if install && !root {
        bail!(
            "{}(--install-deps needs root; run the command above)",
            message(&missing, root, apt)
        );
    }
    bail!("{}", message(&missing, root, apt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libclang_names() {
        assert!(is_libclang("libclang.so"));
        assert!(is_libclang("libclang-14.so.1"));
        assert!(is_libclang("libclang.so.14"));
        assert!(!is_libclang("libclang-cpp.so.14"));
        assert!(!is_libclang("libclangBasic.a"));
    }

    #[test]
    fn message_lists_all_and_one_command() {
        let missing = [
            Missing {
                what: "libclang",
                apt_package: "libclang-dev",
            },
            Missing {
                what: "OpenBLAS",
                apt_package: "libopenblas-dev",
            },
        ];
        let msg = message(&missing, false, true);
        assert!(msg.contains("libclang") && msg.contains("OpenBLAS"));
        assert!(msg.contains(
            "sudo apt-get update && sudo apt-get install -y --no-install-recommends libclang-dev libopenblas-dev"
        ));
        assert!(!msg.contains("--install-deps"));
        let root_msg = message(&missing, true, true);
        assert!(root_msg.contains("\n  apt-get update"));
        assert!(root_msg.contains("cargo xtask setup --install-deps"));
    }
}
