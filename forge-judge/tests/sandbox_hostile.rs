//! Hostile samples in Python and Rust: each must end as a failure of that sample, be
//! contained, and leave no process or directory behind.
//!
//! Every attack is written so that the sample *passes* only if the attack worked: `attack()`
//! returns normally on success and raises/panics when the sandbox stopped it.

mod exec_support;

use std::io::Read;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::Duration;

use exec_support::{processes_mentioning, sandbox_dirs};
use forge_judge::{
    Isolation, Lang, NetworkIsolation, Outcome, Problem, ProcessIsolation, ProcessLimit, Runner,
    SampleResult, TimeLimit, isolation,
};

/// The tests of this file run one at a time so the leftover checks see only their own runs.
static SERIAL: Mutex<()> = Mutex::new(());

const SECRET_KEY: &str = "FORGE_JUDGE_TEST_SECRET";
const SECRET_VALUE: &str = "hunter2-7f3a9c";

fn problem(lang: Lang) -> Problem {
    match lang {
        Lang::Python => Problem {
            task_id: "hostile".into(),
            prompt: String::new(),
            canonical_solution: String::new(),
            test: "def check(f):\n    f()\n".into(),
            entry_point: "attack".into(),
        },
        Lang::Rust => Problem {
            task_id: "hostile".into(),
            prompt: String::new(),
            canonical_solution: String::new(),
            test: "#[cfg(test)]\nmod tests {\n    #[test]\n    fn attack() {\n        super::attack();\n    }\n}"
                .into(),
            entry_point: "attack".into(),
        },
    }
}

struct Ctx {
    outside: tempfile::TempDir,
    /// Holds `secret.txt` (containing SECRET_VALUE), outside every read root.
    secrets: tempfile::TempDir,
    listener: TcpListener,
    port: u16,
}

fn setup() -> Ctx {
    // SAFETY: the tests of this binary hold SERIAL; nothing else reads the environment
    // concurrently with this write except the sandbox setup, which copies no variables.
    unsafe { std::env::set_var(SECRET_KEY, SECRET_VALUE) };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let secrets = tempfile::tempdir().expect("secrets dir");
    std::fs::write(secrets.path().join("secret.txt"), SECRET_VALUE).expect("secret file");
    Ctx {
        outside: tempfile::tempdir().expect("outside dir"),
        secrets,
        listener,
        port,
    }
}

/// Runs one attack and checks everything that must hold for any hostile sample.
fn attack(runner: &Runner, ctx: &Ctx, name: &str, code: &str) -> SampleResult {
    let lang = runner.lang();
    let r = runner.check(&problem(lang), code).expect("sandbox setup");
    eprintln!(
        "{lang} {name}: {} (wall {} ms) stdout {:?} stderr {:?}",
        r.result,
        r.run.wall_ms,
        r.run.stdout.chars().take(300).collect::<String>(),
        r.run.stderr.chars().take(300).collect::<String>()
    );
    assert!(!r.passed, "{lang} {name}: the attack succeeded: {r:?}");
    assert!(
        !r.run.stdout.contains(SECRET_VALUE) && !r.run.stderr.contains(SECRET_VALUE),
        "{lang} {name}: the secret leaked"
    );
    // Nothing left behind: no process from a sandbox directory, no sandbox directory.
    let needle = std::env::temp_dir()
        .join("forge-judge-")
        .display()
        .to_string();
    let mut left = processes_mentioning(&needle);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        left = processes_mentioning(&needle);
    }
    assert!(left.is_empty(), "{lang} {name}: processes left: {left:?}");
    let dirs = sandbox_dirs();
    assert!(dirs.is_empty(), "{lang} {name}: directories left: {dirs:?}");
    // No connection reached the test's listener.
    match ctx.listener.accept() {
        Ok((mut s, _)) => {
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            panic!("{lang} {name}: a sandboxed sample connected to the host ({buf:?})");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
    // Nothing written outside.
    let written: Vec<_> = std::fs::read_dir(ctx.outside.path())
        .expect("outside dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(written.is_empty(), "{lang} {name}: wrote {written:?}");
    r
}

/// A machine where the sandbox cannot cap processes (root without a writable pids cgroup,
/// where the kernel ignores `RLIMIT_NPROC`) fails here, before a fork bomb runs: uncapped,
/// it fills the process table and breaks everything else on the machine (seen on a GPU
/// machine, where every later test binary then failed to start its threads).
fn refuse_uncapped_fork_bombs(iso: &Isolation) {
    assert!(
        iso.process_limit != ProcessLimit::None,
        "this machine cannot cap a sample's processes ({iso}); the fork-bomb samples are \
         not run (they would exhaust the process table)"
    );
}

fn runner(lang: Lang) -> Runner {
    Runner::new(lang)
        .expect("toolchain")
        .with_timeout(Duration::from_secs(3))
}

fn timed_out(r: &SampleResult) -> bool {
    matches!(r.run.outcome, Outcome::TimedOut { .. })
}

/// The Python attacks under `iso` (the best available, or a fallback).
fn python_attacks(iso: Isolation) {
    let ctx = setup();
    let py = runner(Lang::Python).with_isolation(iso.clone());
    eprintln!("isolation: {iso}");
    let me = std::process::id();
    let outside = ctx.outside.path().display().to_string();
    let port = ctx.port;

    let r = attack(
        &py,
        &ctx,
        "infinite loop",
        "def attack():\n    while True:\n        pass\n",
    );
    assert_eq!(
        r.run.outcome,
        Outcome::TimedOut {
            limit: TimeLimit::Wall
        }
    );
    assert!(
        r.run.wall_ms < 3000 + 2000,
        "killed late: {} ms",
        r.run.wall_ms
    );

    refuse_uncapped_fork_bombs(&iso);
    let r = attack(
        &py,
        &ctx,
        "fork bomb",
        "def attack():\n    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n",
    );
    assert!(timed_out(&r), "{r:?}");

    // Counted fork bomb: children sleep; the sample reports how many forks succeeded.
    let r = attack(
        &py,
        &ctx,
        "counted fork bomb",
        "def attack():\n    import os, time\n    n = 0\n    for _ in range(10000):\n        try:\n            pid = os.fork()\n        except OSError:\n            break\n        if pid == 0:\n            time.sleep(60)\n            os._exit(0)\n        n += 1\n    print('forked', n, flush=True)\n    assert n >= 10000\n",
    );
    let forked: usize = r
        .run
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("the sample reports its fork count");
    assert!(forked < 64, "process limit not enforced: {forked} forks");

    let big = runner(Lang::Python)
        .with_isolation(iso.clone())
        .with_memory(512 << 20)
        .with_timeout(Duration::from_secs(20));
    let r = attack(
        &big,
        &ctx,
        "memory bomb",
        "def attack():\n    hog = []\n    while True:\n        hog.append(bytearray(1 << 26))\n",
    );
    assert_eq!(r.run.outcome, Outcome::MemoryExceeded);

    attack(
        &py,
        &ctx,
        "write outside",
        &format!(
            "def attack():\n    import os\n    for p in ['{outside}/pwned', '/tmp/forge-judge-pwned-{me}', os.path.expanduser('~/../pwned-{me}')]:\n        try:\n            open(p, 'w').write('x')\n            print('wrote', p)\n            return\n        except OSError as e:\n            print('refused', p, e)\n    raise SystemExit(1)\n"
        ),
    );
    assert!(!std::path::Path::new(&format!("/tmp/forge-judge-pwned-{me}")).exists());

    attack(
        &py,
        &ctx,
        "socket",
        &format!(
            "def attack():\n    import socket\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    s.sendall(b'leaked')\n    s.close()\n"
        ),
    );

    attack(
        &py,
        &ctx,
        "environment secrets",
        &format!(
            "def attack():\n    import os, glob\n    if '{SECRET_KEY}' in os.environ:\n        print(os.environ['{SECRET_KEY}'])\n        return\n    for p in ['/proc/{me}/environ'] + glob.glob('/proc/*/environ'):\n        try:\n            data = open(p, 'rb').read()\n        except OSError:\n            continue\n        if b'{SECRET_KEY}' in data:\n            print(data.decode(errors='replace'))\n            return\n    raise SystemExit(1)\n"
        ),
    );

    if iso.filesystem.landlock.is_some() {
        let secret = ctx.secrets.path().join("secret.txt").display().to_string();
        attack(
            &py,
            &ctx,
            "read a file outside",
            &format!("def attack():\n    print(open('{secret}').read())\n"),
        );
    }

    if matches!(iso.processes, ProcessIsolation::PidNamespace { .. }) {
        // Would kill this test process (and everything else of its user) if not contained.
        attack(
            &py,
            &ctx,
            "kill the parent",
            &format!(
                "def attack():\n    import os, signal\n    killed = 0\n    for pid in [{me}, -1]:\n        try:\n            os.kill(pid, signal.SIGKILL)\n            killed += 1\n        except OSError as e:\n            print('refused', pid, e)\n    assert killed == 2\n"
            ),
        );
    }
}

#[test]
fn python_hostile_samples_are_contained() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    python_attacks(isolation().clone());
}

/// The fallbacks this machine can also run: no namespaces (seccomp socket filter, Landlock,
/// process group + pids cgroup or RLIMIT_NPROC) and no Landlock (namespaces + read-only mounts).
#[test]
fn python_hostile_samples_are_contained_by_the_fallbacks() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let best = isolation();
    if best.filesystem.landlock.is_some() {
        python_attacks(best.without_namespaces());
    } else {
        println!("skipped without_namespaces: no Landlock here, writes would not be confined");
    }
    if best.network == NetworkIsolation::Namespace && best.filesystem.read_only_mounts {
        python_attacks(best.without_landlock());
    } else {
        println!("skipped without_landlock: no namespaces here");
    }
}

#[test]
fn rust_hostile_samples_are_contained() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = setup();
    let rs = runner(Lang::Rust);
    let me = std::process::id();
    let outside = ctx.outside.path().display().to_string();
    let port = ctx.port;

    let r = attack(
        &rs,
        &ctx,
        "infinite loop",
        "fn attack() {\n    let mut x = 0u64;\n    loop {\n        x = std::hint::black_box(x.wrapping_add(1));\n    }\n}\n",
    );
    assert!(timed_out(&r), "{r:?}");

    refuse_uncapped_fork_bombs(isolation());
    let r = attack(
        &rs,
        &ctx,
        "fork bomb",
        "fn attack() {\n    loop {\n        let _ = std::process::Command::new(\"/proc/self/exe\").spawn();\n    }\n}\n",
    );
    assert!(timed_out(&r), "{r:?}");

    let big = runner(Lang::Rust)
        .with_memory(512 << 20)
        .with_timeout(Duration::from_secs(20));
    let r = attack(
        &big,
        &ctx,
        "memory bomb",
        "fn attack() {\n    let mut hog: Vec<Vec<u8>> = Vec::new();\n    loop {\n        hog.push(vec![1u8; 1 << 26]);\n        std::hint::black_box(&hog);\n    }\n}\n",
    );
    assert_eq!(r.run.outcome, Outcome::MemoryExceeded, "{r:?}");

    attack(
        &rs,
        &ctx,
        "write outside",
        &format!(
            "fn attack() {{\n    std::fs::write(\"{outside}/pwned\", \"x\").expect(\"write outside\");\n}}\n"
        ),
    );

    attack(
        &rs,
        &ctx,
        "socket",
        &format!(
            "fn attack() {{\n    use std::io::Write;\n    let mut s = std::net::TcpStream::connect((\"127.0.0.1\", {port})).expect(\"connect\");\n    s.write_all(b\"leaked\").expect(\"send\");\n}}\n"
        ),
    );

    let secret = ctx.secrets.path().join("secret.txt").display().to_string();
    if isolation().filesystem.landlock.is_some() {
        attack(
            &rs,
            &ctx,
            "read a file outside",
            &format!(
                "fn attack() {{\n    println!(\"{{}}\", std::fs::read_to_string(\"{secret}\").expect(\"read\"));\n}}\n"
            ),
        );
    }

    attack(
        &rs,
        &ctx,
        "environment secrets",
        &format!(
            "fn attack() {{\n    if let Ok(v) = std::env::var(\"{SECRET_KEY}\") {{ println!(\"{{v}}\"); return; }}\n    let data = std::fs::read(\"/proc/{me}/environ\").expect(\"read the parent's environment\");\n    assert!(String::from_utf8_lossy(&data).contains(\"{SECRET_KEY}\"));\n}}\n"
        ),
    );
}
