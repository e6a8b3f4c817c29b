//! Shared fixtures: a seeded tiny random model, a tiny repository of Python
//! files (a git repository when asked), and a forge.toml for them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use forge_core::model::{Architecture, random_model, tiny_config, write_hf_dir};

/// A fresh folder under the target's temporary directory.
pub(crate) fn temp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("forge-core-pipeline")
        .join(format!("{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The tiny random Llama (vocab 272, width 64, 2 layers) as a Hugging Face folder.
pub(crate) fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-model");
    let model = random_model(tiny_config(Architecture::Llama), 7).expect("random model");
    write_hf_dir(&model, &path).expect("write model");
    path
}

/// The source of module `i` of the tiny repository (`variant` changes a body).
pub(crate) fn module_source(i: usize, variant: usize) -> String {
    format!(
        r#""""Module {i}: small helpers."""


def add_{i}(a, b):
    """Return the sum of a and b plus {i}."""
    total = a + b
    return total + {i} + {variant}


def scale_{i}(values, factor):
    """Multiply every value by factor."""
    out = []
    for v in values:
        out.append(v * factor * {i})
    return out


class Counter{i}:
    """Counts things."""

    def bump(self, n):
        """Add n to the count and return it."""
        self.count = getattr(self, "count", 0) + n
        return self.count
"#
    )
}

/// Writes `n` Python modules into `repo` (created).
pub(crate) fn write_repo(repo: &Path, n: usize) {
    std::fs::create_dir_all(repo).expect("repo dir");
    for i in 0..n {
        std::fs::write(repo.join(format!("mod_{i}.py")), module_source(i, 0))
            .expect("write module");
    }
}

/// Runs git in `repo`, panicking with its output on failure.
pub(crate) fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=forge",
            "-c",
            "user.email=forge@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A git repository with the tiny modules committed.
pub(crate) fn git_repo(repo: &Path, n: usize) {
    write_repo(repo, n);
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "initial"]);
}

/// A gate that every model passes (perplexity is finite) or none does.
pub(crate) fn gate(pass: bool) -> &'static str {
    if pass {
        "[[judge.rule]]\nmetric = \"perplexity\"\nmax = 1e12\n"
    } else {
        "[[judge.rule]]\nmetric = \"perplexity\"\nmax = 1.0\n"
    }
}

/// A forge.toml for the tiny model and repository: a few training steps, a small
/// judge, an F16 export, no Ollama.
pub(crate) fn forge_toml(
    repo: &Path,
    model: &Path,
    steps: usize,
    pass: bool,
    extra: &str,
) -> String {
    format!(
        r#"state_dir = "state"

[repo]
path = "{repo}"
include = ["**/*.py"]

[model]
source = "{model}"

[dataset]
tasks = "completion,explain"
format = "messages"
budget = 600

[data]
max_seq_len = 320

[adapter]
method = "lora"
rank = 4
targets = ["q_proj", "v_proj"]

[train]
steps = {steps}
batch_size = 2
lr = 1e-3

[judge]
max_examples = 6
reconstruct_units = 2
max_tokens = 6

[export]
types = ["f16"]

[deploy]
ollama = "never"
name = "tiny"

[watch]
min_changed_files = 2
tag_pattern = "v*"
interval_s = 1

{gate}
{extra}"#,
        repo = repo.display(),
        model = model.display(),
        gate = gate(pass),
    )
}
