//! The retrieval index: forge-miner's units of a repository, scored with
//! forge-miner's Okapi BM25 (Robertson & Zaragoza 2009, `forge_miner::Bm25`:
//! `k1 = 1.2`, `b = 0.75`, identifiers split into snake/camel parts), over the
//! same corpus and document text RAFT training retrieved from (eligible
//! units, `symbol + text`; `forge_miner::raft_layout::eligible`).
//!
//! The index persists in a folder (by default `<repo>/.forge/serve/index`):
//! `files.json` (per file: mtime, size, FNV-1a 64 of the bytes, unit count)
//! and `units.jsonl` (one `forge_miner::Unit` per line), both written to a
//! temporary name and renamed. A refresh walks the tree (forge-miner's walk:
//! `.gitignore` honoured), re-reads only files whose mtime or size changed,
//! re-mines only those whose hash changed, drops deleted files, and rebuilds
//! the BM25 postings from the cached token lists (tokenization is per changed
//! file). Searches read an immutable snapshot, so a refresh never blocks them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, UNIX_EPOCH};

use forge_miner::raft_layout::eligible;
use forge_miner::{Bm25, Miner, Unit, tokenize};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const FILES: &str = "files.json";
const UNITS: &str = "units.jsonl";
const FORMAT_VERSION: u32 = 1;

/// What the index remembers of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u128,
    /// Size in bytes.
    pub size: u64,
    /// FNV-1a 64 of the bytes, 16 hex digits.
    pub hash: String,
    /// Retrievable units the file gave (0 for skipped files).
    pub units: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct FilesJson {
    version: u32,
    root: PathBuf,
    files: BTreeMap<String, FileState>,
}

#[derive(Debug)]
struct FileEntry {
    state: FileState,
    units: Vec<Unit>,
    terms: Vec<Vec<String>>,
}

/// One immutable version of the index.
#[derive(Debug, Default)]
struct Snapshot {
    files: BTreeMap<String, Arc<FileEntry>>,
    /// Document `d` of the BM25 index is `files[docs[d].0].units[docs[d].1]`.
    docs: Vec<(Arc<FileEntry>, usize)>,
    bm25: Option<Bm25>,
}

impl Snapshot {
    fn build(files: BTreeMap<String, Arc<FileEntry>>) -> Self {
        let mut docs = Vec::new();
        let mut terms: Vec<Vec<String>> = Vec::new();
        for entry in files.values() {
            for (i, t) in entry.terms.iter().enumerate() {
                docs.push((Arc::clone(entry), i));
                terms.push(t.clone());
            }
        }
        let bm25 = Some(Bm25::new(&terms));
        Self { files, docs, bm25 }
    }

    fn unit(&self, d: usize) -> &Unit {
        let (entry, i) = &self.docs[d];
        &entry.units[*i]
    }
}

/// A retrieved unit and its BM25 score.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The unit (path, lines, text).
    pub unit: Unit,
    /// Its BM25 score for the query.
    pub score: f64,
}

/// What a refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefreshReport {
    /// Files the walk listed.
    pub files: usize,
    /// Files whose bytes were read again (mtime or size changed).
    pub rehashed: usize,
    /// Files mined again (their bytes changed, or new).
    pub mined: usize,
    /// Files gone from the tree.
    pub removed: usize,
    /// Retrievable units in the index afterwards.
    pub units: usize,
    /// Wall time, milliseconds.
    pub millis: u64,
    /// Why a persisted index was not used (it is rebuilt instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discarded: Option<String>,
}

/// A BM25 index over the units of a repository; see the module docs.
#[derive(Debug)]
pub struct RepoIndex {
    root: PathBuf,
    dir: PathBuf,
    miner: Miner,
    current: RwLock<Arc<Snapshot>>,
    refresh_lock: Mutex<()>,
}

fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn mtime_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn doc_terms(u: &Unit) -> Vec<String> {
    tokenize(&format!("{} {}", u.symbol, u.text))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

impl RepoIndex {
    /// Opens the index of the repository at `root` persisted in `dir` (created
    /// if missing) and brings it up to date with the tree. A persisted index
    /// that cannot be read (other root, other format, a malformed line) is
    /// rebuilt, and the report says why.
    pub fn open(root: impl AsRef<Path>, dir: impl Into<PathBuf>) -> Result<(Self, RefreshReport)> {
        Self::open_with(root, dir, |m| m)
    }

    /// [`RepoIndex::open`] with a configured miner (budget, filters); the
    /// function receives `Miner::new(root)`.
    pub fn open_with(
        root: impl AsRef<Path>,
        dir: impl Into<PathBuf>,
        configure: impl FnOnce(Miner) -> Miner,
    ) -> Result<(Self, RefreshReport)> {
        let root = root
            .as_ref()
            .canonicalize()
            .map_err(|e| Error::io(root.as_ref(), e))?;
        if !root.is_dir() {
            return Err(Error::config(
                "repo",
                format!("{} is not a directory", root.display()),
            ));
        }
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let (files, discarded) = match Self::load(&root, &dir) {
            Ok(files) => (files, None),
            Err(e) => (BTreeMap::new(), Some(e.to_string())),
        };
        let index = Self {
            miner: configure(Miner::new(&root)),
            root,
            dir,
            current: RwLock::new(Arc::new(Snapshot::build(files))),
            refresh_lock: Mutex::new(()),
        };
        let mut report = index.refresh()?;
        report.discarded = discarded;
        Ok((index, report))
    }

    /// The repository root (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder the index persists in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Retrievable units in the index.
    pub fn len(&self) -> usize {
        self.snapshot().docs.len()
    }

    /// Whether the index holds no unit.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Files the index knows (mined or skipped).
    pub fn files(&self) -> usize {
        self.snapshot().files.len()
    }

    /// The state of one file (repo-relative path), if indexed.
    pub fn file_state(&self, path: &str) -> Option<FileState> {
        self.snapshot().files.get(path).map(|e| e.state.clone())
    }

    fn load(root: &Path, dir: &Path) -> Result<BTreeMap<String, Arc<FileEntry>>> {
        let fpath = dir.join(FILES);
        let upath = dir.join(UNITS);
        if !fpath.exists() {
            return Ok(BTreeMap::new());
        }
        let text = std::fs::read_to_string(&fpath).map_err(|e| Error::io(&fpath, e))?;
        let files: FilesJson = serde_json::from_str(&text).map_err(|e| Error::Index {
            path: fpath.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        if files.version != FORMAT_VERSION {
            return Err(Error::Index {
                path: fpath,
                line: 1,
                message: format!(
                    "format version {}, expected {FORMAT_VERSION}",
                    files.version
                ),
            });
        }
        if files.root != root {
            return Err(Error::Index {
                path: fpath,
                line: 1,
                message: format!("indexes {}, not {}", files.root.display(), root.display()),
            });
        }
        let text = std::fs::read_to_string(&upath).map_err(|e| Error::io(&upath, e))?;
        let mut units: BTreeMap<String, Vec<Unit>> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let u: Unit = serde_json::from_str(line).map_err(|e| Error::Index {
                path: upath.clone(),
                line: i + 1,
                message: e.to_string(),
            })?;
            if !files.files.contains_key(&u.path) {
                return Err(Error::Index {
                    path: upath.clone(),
                    line: i + 1,
                    message: format!("unit of {} which {FILES} does not list", u.path),
                });
            }
            units.entry(u.path.clone()).or_default().push(u);
        }
        let mut out = BTreeMap::new();
        for (path, state) in files.files {
            let units = units.remove(&path).unwrap_or_default();
            if units.len() != state.units {
                return Err(Error::Index {
                    path: upath.clone(),
                    line: 0,
                    message: format!(
                        "{path}: {} units, {FILES} says {}",
                        units.len(),
                        state.units
                    ),
                });
            }
            let terms = units.iter().map(doc_terms).collect();
            out.insert(
                path,
                Arc::new(FileEntry {
                    state,
                    units,
                    terms,
                }),
            );
        }
        Ok(out)
    }

    fn persist(&self, snap: &Snapshot) -> Result<()> {
        let mut units = String::new();
        for entry in snap.files.values() {
            for u in &entry.units {
                let line = serde_json::to_string(u).map_err(|e| Error::Index {
                    path: self.dir.join(UNITS),
                    line: 0,
                    message: e.to_string(),
                })?;
                units.push_str(&line);
                units.push('\n');
            }
        }
        let files = FilesJson {
            version: FORMAT_VERSION,
            root: self.root.clone(),
            files: snap
                .files
                .iter()
                .map(|(k, v)| (k.clone(), v.state.clone()))
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&files).map_err(|e| Error::Index {
            path: self.dir.join(FILES),
            line: 0,
            message: e.to_string(),
        })?;
        // Units first: a crash between the two renames leaves a units file
        // that files.json does not match, which `load` detects.
        write_atomic(&self.dir.join(UNITS), units.as_bytes())?;
        write_atomic(&self.dir.join(FILES), &json)
    }

    /// Brings the index up to date with the working tree (see the module
    /// docs); persists it when something changed. One refresh runs at a time.
    pub fn refresh(&self) -> Result<RefreshReport> {
        let _guard = self
            .refresh_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let started = Instant::now();
        let old = self.snapshot();
        let listed = self.miner.list_files()?;
        let mut report = RefreshReport {
            files: listed.len(),
            ..RefreshReport::default()
        };
        let mut files: BTreeMap<String, Arc<FileEntry>> = BTreeMap::new();
        for (rel, abs) in &listed {
            let Ok(meta) = std::fs::metadata(abs) else {
                continue;
            };
            let (mtime, size) = (mtime_ns(&meta), meta.len());
            let previous = old.files.get(rel);
            if let Some(p) = previous
                && p.state.mtime_ns == mtime
                && p.state.size == size
            {
                files.insert(rel.clone(), Arc::clone(p));
                continue;
            }
            report.rehashed += 1;
            let Ok(bytes) = std::fs::read(abs) else {
                continue;
            };
            let hash = fnv1a(&bytes);
            if let Some(p) = previous
                && p.state.hash == hash
            {
                let mut state = p.state.clone();
                state.mtime_ns = mtime;
                state.size = size;
                files.insert(
                    rel.clone(),
                    Arc::new(FileEntry {
                        state,
                        units: p.units.clone(),
                        terms: p.terms.clone(),
                    }),
                );
                continue;
            }
            report.mined += 1;
            let units: Vec<Unit> = match self.miner.mine_file(rel, abs) {
                Ok(f) => f.units.into_iter().filter(eligible).collect(),
                Err(_skip) => Vec::new(),
            };
            let terms = units.iter().map(doc_terms).collect();
            files.insert(
                rel.clone(),
                Arc::new(FileEntry {
                    state: FileState {
                        mtime_ns: mtime,
                        size,
                        hash,
                        units: units.len(),
                    },
                    units,
                    terms,
                }),
            );
        }
        report.removed = old.files.keys().filter(|k| !files.contains_key(*k)).count();
        let changed = report.rehashed > 0 || report.removed > 0 || !self.dir.join(FILES).exists();
        let snap = if changed {
            let snap = Arc::new(Snapshot::build(files));
            self.persist(&snap)?;
            let mut g = self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *g = Arc::clone(&snap);
            snap
        } else {
            old
        };
        report.units = snap.docs.len();
        report.millis = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// The unit with forge-miner id `id`, if indexed.
    pub fn unit(&self, id: &str) -> Option<Unit> {
        let snap = self.snapshot();
        (0..snap.docs.len())
            .map(|d| snap.unit(d))
            .find(|u| u.id == id)
            .cloned()
    }

    /// The `k` best units for `query` (BM25 over `tokenize(query)`), best
    /// first, ties by index order; units with score 0 are not returned.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        self.search_filtered(query, k, |_| true)
    }

    /// [`RepoIndex::search`] among the units for which `keep` is true.
    pub fn search_filtered(&self, query: &str, k: usize, keep: impl Fn(&Unit) -> bool) -> Vec<Hit> {
        let snap = self.snapshot();
        let Some(bm25) = &snap.bm25 else {
            return Vec::new();
        };
        if k == 0 || bm25.is_empty() {
            return Vec::new();
        }
        let terms = tokenize(query);
        bm25.search(&terms, k, |d| !keep(snap.unit(d)))
            .into_iter()
            .map(|(d, score)| Hit {
                unit: snap.unit(d).clone(),
                score,
            })
            .collect()
    }

    /// Retrieval for fill-in-the-middle: the best units for `query` among
    /// the current file's neighbours — files in the same folder and in its
    /// sibling folders (same parent: `src/` and `tests/` of a crate) — other
    /// than the file itself.
    pub fn search_neighbours(&self, path: &str, query: &str, k: usize) -> Vec<Hit> {
        let dir = parent(path);
        let grand = parent(dir);
        self.search_filtered(query, k, |u| {
            if u.path == path {
                return false;
            }
            let ud = parent(&u.path);
            ud == dir || parent(ud) == grand
        })
    }
}

/// The folder part of a `/`-separated path (`""` at the top).
fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        // FNV-1a 64 test vectors (Fowler/Noll/Vo reference).
        assert_eq!(fnv1a(b""), "cbf29ce484222325");
        assert_eq!(fnv1a(b"a"), "af63dc4c8601ec8c");
        assert_eq!(fnv1a(b"foobar"), "85944171f73967e8");
    }

    #[test]
    fn parents() {
        assert_eq!(parent("a/b/c.rs"), "a/b");
        assert_eq!(parent("c.rs"), "");
        assert_eq!(parent(parent("a/b/c.rs")), "a");
    }
}
