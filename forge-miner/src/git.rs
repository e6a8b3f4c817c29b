//! Incremental mining: files whose content differs from a git revision (gix).
//!
//! A listed file is *changed* when the blob id of its work-tree bytes differs
//! from the blob at the same path in `REV`'s tree, or when `REV` has no blob at
//! that path (a new file). Hashing the work-tree bytes directly (no index, no
//! status machinery) keeps gix to its `revision` feature; the comparison
//! therefore sees uncommitted edits as well as commits after `REV`. Line-ending
//! and smudge filters are not applied: with `core.autocrlf` a file may show as
//! changed although `git diff` shows nothing.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The repo-relative paths (relative to `root`) among `listed` that changed since `rev`.
pub(crate) fn changed_since(
    root: &Path,
    rev: &str,
    listed: &[(String, PathBuf)],
) -> Result<BTreeSet<String>> {
    let git = |message: String| Error::Git {
        path: root.to_path_buf(),
        message,
    };
    let repo = gix::discover(root).map_err(|e| git(e.to_string()))?;
    let workdir = repo
        .workdir()
        .ok_or_else(|| git("bare repository: no work tree".into()))?;
    let workdir = workdir.canonicalize().map_err(|e| Error::io(workdir, e))?;
    let root_abs = root.canonicalize().map_err(|e| Error::io(root, e))?;
    let prefix: Vec<String> = root_abs
        .strip_prefix(&workdir)
        .map_err(|_| git(format!("{} is outside the work tree", root_abs.display())))?
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let id = repo
        .rev_parse_single(rev)
        .map_err(|e| git(format!("revision {rev:?}: {e}")))?;
    let tree = id
        .object()
        .map_err(|e| git(format!("revision {rev:?}: {e}")))?
        .peel_to_tree()
        .map_err(|e| git(format!("revision {rev:?} has no tree: {e}")))?;
    let mut recorder = gix::traverse::tree::Recorder::default();
    tree.traverse()
        .breadthfirst(&mut recorder)
        .map_err(|e| git(format!("reading the tree of {rev:?}: {e}")))?;
    let blobs: HashMap<String, gix::ObjectId> = recorder
        .records
        .into_iter()
        .filter(|e| e.mode.is_blob())
        .map(|e| (e.filepath.to_string(), e.oid))
        .collect();
    let kind = repo.object_hash();
    let mut changed = BTreeSet::new();
    for (rel, abs) in listed {
        let full = if prefix.is_empty() {
            rel.clone()
        } else {
            format!("{}/{rel}", prefix.join("/"))
        };
        let Ok(bytes) = std::fs::read(abs) else {
            // Unreadable: let the walk record the reason.
            changed.insert(rel.clone());
            continue;
        };
        let oid = gix::objs::compute_hash(kind, gix::objs::Kind::Blob, &bytes)
            .map_err(|e| git(format!("hashing {rel}: {e}")))?;
        if blobs.get(&full) != Some(&oid) {
            changed.insert(rel.clone());
        }
    }
    Ok(changed)
}
