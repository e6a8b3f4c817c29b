//! Test fixtures: a tiny seeded random llama model exported to GGUF (the CPU
//! engine serves it), and a small repository to retrieve from.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use forge_core::export::{ExportOptions, export};
use forge_core::gguf::export::FileType;
use forge_core::model::{Architecture, ModelSource, random_model, tiny_config, write_hf_dir};
use forge_serve::{ServeConfig, ServerHandle, StartReport};

pub struct Fixture {
    pub root: PathBuf,
    pub hf: PathBuf,
    pub gguf: PathBuf,
    pub repo: PathBuf,
}

/// The model id the fixture model is served under (its file stem).
pub const MODEL_ID: &str = "tiny";

pub const REPO_FILES: &[(&str, &str)] = &[
    (
        "wire/src/parser.rs",
        r#"//! Header parsing.

/// Parses the header of a packet: the magic number, then the length.
pub fn parse_header(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 8 {
        return None;
    }
    let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    Some((magic, len))
}

/// Splits a packet into its header and its payload.
pub fn split_packet(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    if bytes.len() < 8 {
        return None;
    }
    Some(bytes.split_at(8))
}
"#,
    ),
    (
        "wire/src/checksum.rs",
        r#"/// Adds `bytes` to a running CRC-32 (IEEE, reflected) checksum.
pub fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    crc = !crc;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// A checksum accumulator.
pub struct Checksum {
    state: u32,
}

impl Checksum {
    /// Feeds more bytes into the checksum.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.state = crc32_update(self.state, bytes);
    }
}
"#,
    ),
    (
        "wire/tests/packets.rs",
        r#"/// Builds a packet with a header for tests.
fn make_packet(magic: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = magic.to_le_bytes().to_vec();
    v.extend((payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}
"#,
    ),
    (
        "tools/report.py",
        r#""""Report helpers."""


def render_table(rows):
    """Renders rows of cells as a Markdown table."""
    lines = ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def mean_latency(samples):
    """Returns the mean of latency samples in milliseconds."""
    return sum(samples) / max(len(samples), 1)


def packet_checksum(packet, header, payload):
    """Checksums a packet: crc32 update over the header, then the payload."""
    return crc32_update(crc32_update(0, header), payload)
"#,
    ),
];

fn tmp_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("forge-serve-{}", std::process::id()))
}

/// Writes the fixture repository into `dir`.
pub fn write_repo(dir: &Path) {
    for (path, text) in REPO_FILES {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write repo file");
    }
}

/// Builds the fixture once per test binary.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = tmp_root();
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("tmp");
        let hf = root.join("tiny-hf");
        let model = random_model(tiny_config(Architecture::Llama), 7).expect("random model");
        write_hf_dir(&model, &hf).expect("hf dir");
        drop(model);
        let gguf = root.join(format!("{MODEL_ID}.gguf"));
        export(
            &ModelSource::HfDir(hf.clone()),
            &ExportOptions::new(FileType::F32),
            &gguf,
            &mut |_| {},
        )
        .expect("export tiny gguf");
        let repo = root.join("repo");
        write_repo(&repo);
        Fixture {
            root,
            hf,
            gguf,
            repo,
        }
    })
}

/// A fresh copy of the fixture repository (for tests that edit it).
pub fn repo_copy(name: &str) -> PathBuf {
    let dir = fixture().root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    write_repo(&dir);
    dir
}

/// A configuration serving the tiny GGUF on an ephemeral loopback port.
pub fn config() -> ServeConfig {
    ServeConfig::new(fixture().gguf.to_string_lossy())
        .with_addr("127.0.0.1:0".parse().expect("addr"))
}

pub async fn start(config: ServeConfig) -> (ServerHandle, StartReport) {
    forge_serve::start(config).await.expect("server starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

/// The `data:` payloads of a server-sent event stream.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .flat_map(|ev| ev.lines())
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim_start().to_string())
        .collect()
}

pub fn peers_dir() -> PathBuf {
    std::env::var_os("FORGE_PEERS_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.forge/peers"),
        PathBuf::from,
    )
}

/// Skips (prints why) or, with FORGE_REQUIRE_PEERS=1, fails.
pub fn skip_or_fail(what: &str) {
    if std::env::var("FORGE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{what} (FORGE_REQUIRE_PEERS=1)");
    }
    eprintln!("skipped: {what}");
}
