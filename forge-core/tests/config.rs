//! forge.toml validation: every bad key or value is an error that names the file
//! and the key; the default file `forge init` writes resolves; paths resolve
//! against the file's folder.

use std::path::Path;

use forge_core::config::{DEFAULT_FORGE_TOML, ForgeFile};
use forge_core::{Error, Forge};

fn resolve(text: &str) -> Result<forge_core::config::ForgeConfig, Error> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    ForgeFile::from_toml_str(text, dir.join("forge.toml"))?.resolve(dir, dir.join("forge.toml"))
}

fn key_of(text: &str) -> (String, String) {
    match resolve(text) {
        Err(e @ Error::Config { .. }) => {
            let Error::Config { ref key, .. } = e else {
                unreachable!()
            };
            (key.clone(), e.to_string())
        }
        Err(other) => panic!("expected a config error for {text:?}, got {other}"),
        Ok(_) => panic!("{text:?} was accepted"),
    }
}

#[test]
fn bad_keys_and_values_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("[train]\nstep = 3\n", "step"),
        ("[trian]\nsteps = 3\n", "trian"),
        ("[repo]\npaht = \".\"\n", "paht"),
        ("[train]\nsteps = 0\n", "train.steps"),
        ("[train]\nbatch_size = 0\n", "train.batch_size"),
        ("[train]\nlr = -1.0\n", "train.lr"),
        ("[train]\noutput_dir = \"x\"\n", "train.output_dir"),
        ("[repo]\npath = \"does/not/exist\"\n", "repo.path"),
        ("[repo]\ninclude = [\"[\"]\n", "repo.include"),
        ("[model]\nsource = \"missing.gguf\"\n", "model.source"),
        ("[dataset]\ntasks = \"completion,dance\"\n", "dataset.tasks"),
        ("[dataset]\nformat = \"yaml\"\n", "dataset.format"),
        ("[dataset]\ntest_fraction = 1.5\n", "dataset.test_fraction"),
        (
            "[dataset]\nvalid_fraction = 0.5\ntest_fraction = 0.5\n",
            "dataset.test_fraction",
        ),
        ("[dataset]\nbudget = 0\n", "dataset.budget"),
        ("[data]\nmax_seq_len = 0\n", "data.max_seq_len"),
        ("[adapter]\nmethod = \"magic\"\n", "adapter.method"),
        ("[judge]\nmax_examples = 0\n", "judge.max_examples"),
        (
            "[judge]\nperplexity = false\nreconstruct_units = 0\n",
            "judge",
        ),
        ("[[judge.rule]]\nmetric = \"codebleu\"\n", "judge.rule"),
        (
            "[[judge.rule]]\nmetric = \"codebleu\"\nmax_regression = -1.0\n",
            "judge.rule",
        ),
        ("[export]\ntypes = [\"q9_z\"]\n", "export.types"),
        ("[export]\ntypes = []\n", "export.types"),
        ("[export]\ntypes = [\"f16\", \"f16\"]\n", "export.types"),
        ("[deploy]\nollama = \"maybe\"\n", "deploy.ollama"),
        ("[deploy]\nname = \"bad name!\"\n", "deploy.name"),
        (
            "[watch]\nmin_changed_files = 0\n",
            "watch.min_changed_files",
        ),
        ("[watch]\ntag_pattern = \"v[\"\n", "watch.tag_pattern"),
        ("[watch]\ninterval_s = 0\n", "watch.interval_s"),
    ];
    for (text, key) in cases {
        let (found, message) = key_of(text);
        assert_eq!(&found, key, "{text:?}: {message}");
        assert!(message.contains("forge.toml"), "{message}");
        assert!(message.contains(key), "{message}");
    }
}

#[test]
fn syntax_errors_give_the_line() {
    let (_, message) = key_of("[train]\nsteps = 3\n\n[data]\nmax_seq_len = \"long\"\n");
    assert!(message.contains("line 5"), "{message}");
}

#[test]
fn default_file_resolves_and_init_refuses_to_overwrite() {
    let c = resolve(DEFAULT_FORGE_TOML).expect("default");
    assert_eq!(c.repo, Path::new(env!("CARGO_MANIFEST_DIR")).join("."));
    assert_eq!(
        c.state_dir,
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".forge")
    );
    assert_eq!(c.judge.gate.rules.len(), 2, "forge-judge's default rules");
    assert!(c.selects("src/lib.rs"));
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("forge-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let p = Forge::init(&dir, false).expect("init");
    assert_eq!(
        std::fs::read_to_string(&p).expect("read"),
        DEFAULT_FORGE_TOML
    );
    assert!(Forge::init(&dir, false).is_err());
    Forge::init(&dir, true).expect("force");
    Forge::open(&dir).expect("the written file opens");
    let missing = Forge::open(dir.join("nowhere")).expect_err("no forge.toml");
    assert!(missing.to_string().contains("forge init"), "{missing}");
}

#[test]
fn include_and_exclude_globs_select_files() {
    let c = resolve("[repo]\ninclude = [\"src/**/*.rs\", \"*.py\"]\nexclude = [\"src/gen/**\"]\n")
        .expect("globs");
    assert!(c.selects("src/a/b.rs") && c.selects("x.py"));
    assert!(!c.selects("src/gen/x.rs") && !c.selects("tests/t.rs"));
}
