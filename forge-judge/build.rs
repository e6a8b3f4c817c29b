//! Compiles the grammars codebleu 0.7.0 is installed with (tree-sitter-python 0.21.0,
//! tree-sitter-rust 0.21.2) for CodeBLEU's compatibility mode.
//!
//! They cannot be linked as crates: their C symbols (`tree_sitter_python`,
//! `tree_sitter_python_external_scanner_*`, …) are the same as those of the current grammar
//! crates this crate and forge-miner use, and the linker would silently keep one of each. So
//! both are ordinary dependencies (cargo downloads and unpacks them, `cargo fetch` included,
//! and nothing refers to them, so rustc does not link them) and this script compiles their
//! generated `parser.c` and `scanner.c` once more with every exported symbol renamed
//! (`forge_judge_` prefix, `_0_21` suffix).
//!
//! The unpacked sources lie beside the `tree-sitter` crate's, whose build script publishes its
//! include directory (`links = "tree-sitter"` → `DEP_TREE_SITTER_INCLUDE`): the parent of that
//! crate's directory is the registry's (or a `cargo vendor` directory's) source folder.
//! `FORGE_JUDGE_GRAMMAR_SRC` overrides that folder.

use std::path::{Path, PathBuf};

/// (package, version, C name of the language function).
const GRAMMARS: [(&str, &str, &str); 2] = [
    ("tree-sitter-python", "0.21.0", "tree_sitter_python"),
    ("tree-sitter-rust", "0.21.2", "tree_sitter_rust"),
];

const SCANNER_FNS: [&str; 5] = [
    "external_scanner_create",
    "external_scanner_destroy",
    "external_scanner_scan",
    "external_scanner_serialize",
    "external_scanner_deserialize",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FORGE_JUDGE_GRAMMAR_SRC");
    println!("cargo:rerun-if-env-changed=DEP_TREE_SITTER_INCLUDE");
    let roots: Vec<PathBuf> = match std::env::var_os("FORGE_JUDGE_GRAMMAR_SRC") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => std::env::var_os("DEP_TREE_SITTER_INCLUDE")
            .map(PathBuf::from)
            .and_then(|inc| inc.parent()?.parent().map(Path::to_path_buf))
            .into_iter()
            .collect(),
    };
    for (package, version, symbol) in GRAMMARS {
        let Some(dir) = roots.iter().find_map(|r| find_package(r, package, version)) else {
            panic!(
                "forge-judge: the sources of {package} {version} (a dependency, for CodeBLEU's \
                 compat mode) were not found beside the tree-sitter crate's in {roots:?}; run \
                 `cargo fetch`, or set FORGE_JUDGE_GRAMMAR_SRC to a folder holding \
                 {package}-{version}/"
            );
        };
        let src = dir.join("src");
        let renamed = format!("forge_judge_{symbol}_0_21");
        let mut build = cc::Build::new();
        build
            .include(&src)
            .file(src.join("parser.c"))
            .file(src.join("scanner.c"))
            .flag_if_supported("-std=c11")
            .flag_if_supported("-Wno-unused-parameter")
            .flag_if_supported("-Wno-unused-but-set-variable")
            .flag_if_supported("-Wno-trigraphs")
            .warnings(false)
            .define(symbol, Some(renamed.as_str()));
        for f in SCANNER_FNS {
            build.define(
                &format!("{symbol}_{f}"),
                Some(format!("{renamed}_{f}").as_str()),
            );
        }
        build.compile(&format!("forge-judge-{package}-0-21"));
        for f in ["parser.c", "scanner.c"] {
            println!("cargo:rerun-if-changed={}", src.join(f).display());
        }
    }
}

/// `root/<package>-<version>` or, in a vendor folder, `root/<package>` when its manifest has
/// that version.
fn find_package(root: &Path, package: &str, version: &str) -> Option<PathBuf> {
    let wanted = format!("version = \"{version}\"");
    [
        root.join(format!("{package}-{version}")),
        root.join(package),
    ]
    .into_iter()
    .find(|dir| {
        std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|m| {
            m.lines().any(|l| l.trim() == wanted)
                && m.lines()
                    .any(|l| l.trim() == format!("name = \"{package}\""))
                && dir.join("src/parser.c").is_file()
        })
    })
}
