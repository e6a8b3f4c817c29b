//! Where a sandboxed run's time goes: `/bin/true` and `python3 -I -c pass` run plainly
//! (`std::process::Command`), with and without `-S`, and through the sandbox with each isolation level, mean of
//! N runs each. `cargo run --release -p forge-judge --example sandbox_overhead [-- N]`.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Instant;

use forge_judge::{Sandbox, isolation};

fn main() -> forge_judge::Result<()> {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let python = String::from_utf8_lossy(
        &std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .map_err(|e| forge_judge::Error::Sandbox(e.to_string()))?
            .stdout,
    )
    .trim()
    .to_owned();
    let best = isolation().clone();
    println!("isolation: {best}");
    let programs: [(&str, &str, Vec<&OsStr>); 3] = [
        ("/bin/true", "/bin/true", vec![]),
        (
            "python3 -I -c pass",
            python.as_str(),
            vec!["-I".as_ref(), "-c".as_ref(), "pass".as_ref()],
        ),
        (
            "python3 -I -S -c pass",
            python.as_str(),
            vec!["-I".as_ref(), "-S".as_ref(), "-c".as_ref(), "pass".as_ref()],
        ),
    ];
    for (label, program, args) in &programs {
        let t = Instant::now();
        for _ in 0..n {
            let st = std::process::Command::new(program)
                .args(args)
                .status()
                .map_err(|e| forge_judge::Error::Sandbox(e.to_string()))?;
            assert!(st.success());
        }
        let plain = t.elapsed().as_secs_f64() * 1e3 / f64::from(n);
        println!("{label:>20}  plain {plain:8.2} ms");
        for (name, iso) in [
            ("best", best.clone()),
            ("no namespaces", best.without_namespaces()),
            (
                "no namespaces, no Landlock",
                best.without_namespaces().without_landlock(),
            ),
        ] {
            let sb = Sandbox::new().with_isolation(iso);
            let t = Instant::now();
            for _ in 0..n {
                let dir = sb.workdir()?;
                let r = sb.run(dir.path(), Path::new(program), args)?;
                assert!(r.outcome.passed(), "{r:?}");
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(n);
            println!(
                "{label:>20}  {name:<28} {ms:8.2} ms  (+{:.2} ms)",
                ms - plain
            );
        }
    }
    Ok(())
}
