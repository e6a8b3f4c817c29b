//! Building the Landlock ruleset, the seccomp filter and the pids cgroup for one run.
//!
//! Landlock (Linux ≥ 5.13, <https://docs.kernel.org/userspace-api/landlock.html>): we handle
//! every *write* right of the running ABI and grant them only beneath the sample's directory
//! (and `/dev/null`); reads and execution stay allowed. ABI ≥ 4 also handles TCP bind and
//! connect (granted nowhere); ABI ≥ 6 scopes abstract Unix sockets and signals to the
//! sandbox. A Landlock domain also forbids ptrace-style access (e.g. `/proc/PID/environ`)
//! to every process outside it.
//!
//! seccomp (used only where no network namespace is available): `socket(2)` with domain
//! `AF_INET`, `AF_INET6`, `AF_PACKET` or `AF_NETLINK` fails with `EACCES`; a system call made
//! through a foreign ABI (e.g. 32-bit `int 0x80` on x86_64) fails with `ENOSYS`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use super::child::{LandlockPlan, SYS_LANDLOCK_CREATE_RULESET};

const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
const FS_READ_DIR: u64 = 1 << 3;
const FS_REMOVE_DIR: u64 = 1 << 4;
const FS_REMOVE_FILE: u64 = 1 << 5;
const FS_MAKE_CHAR: u64 = 1 << 6;
const FS_MAKE_DIR: u64 = 1 << 7;
const FS_MAKE_REG: u64 = 1 << 8;
const FS_MAKE_SOCK: u64 = 1 << 9;
const FS_MAKE_FIFO: u64 = 1 << 10;
const FS_MAKE_BLOCK: u64 = 1 << 11;
const FS_MAKE_SYM: u64 = 1 << 12;
const FS_REFER: u64 = 1 << 13;
const FS_TRUNCATE: u64 = 1 << 14;
const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

/// The Landlock ABI version of the running kernel (0: not available).
pub(crate) fn landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: the version query takes no attribute buffer.
    let v = unsafe {
        libc::syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).unwrap_or(0)
}

/// Write rights handled at `abi`.
fn fs_write_rights(abi: u32) -> u64 {
    let mut r = FS_WRITE_FILE
        | FS_REMOVE_DIR
        | FS_REMOVE_FILE
        | FS_MAKE_CHAR
        | FS_MAKE_DIR
        | FS_MAKE_REG
        | FS_MAKE_SOCK
        | FS_MAKE_FIFO
        | FS_MAKE_BLOCK
        | FS_MAKE_SYM;
    if abi >= 2 {
        r |= FS_REFER;
    }
    if abi >= 3 {
        r |= FS_TRUNCATE;
    }
    r
}

/// The ruleset for a sample whose only writable place is `workdir`; with `read_roots`, reads
/// and execution are also confined to them (plus `workdir` and a few devices).
pub(crate) fn landlock_plan(
    abi: u32,
    workdir: &Path,
    read_roots: Option<&[PathBuf]>,
) -> Option<LandlockPlan> {
    let write = fs_write_rights(abi);
    let read = if read_roots.is_some() {
        FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    } else {
        0
    };
    let fs = write | read;
    let (net, scoped) = (
        if abi >= 4 {
            NET_BIND_TCP | NET_CONNECT_TCP
        } else {
            0
        },
        if abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    );
    let attr_size = match abi {
        0 => return None,
        1..=3 => 8,
        4 | 5 => 16,
        _ => 24,
    };
    let cpath = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).ok();
    let trunc = if abi >= 3 { FS_TRUNCATE } else { 0 };
    let file_read = read & (FS_READ_FILE | FS_EXECUTE);
    let mut rules = vec![
        (cpath(workdir)?, fs),
        (
            c"/dev/null".to_owned(),
            FS_WRITE_FILE | trunc | (read & FS_READ_FILE),
        ),
    ];
    if let Some(roots) = read_roots {
        for dev in ["/dev/zero", "/dev/urandom", "/dev/random"] {
            rules.push((CString::new(dev).ok()?, FS_READ_FILE));
        }
        for root in roots {
            // Directory rights on a file are refused by the kernel: decide here.
            let Ok(meta) = std::fs::metadata(root) else {
                continue;
            };
            let rights = if meta.is_dir() { read } else { file_read };
            rules.push((cpath(root)?, rights));
        }
    }
    Some(LandlockPlan {
        attr: [fs, net, scoped],
        attr_size,
        rules,
    })
}

/// The socket-refusing seccomp filter for the running architecture.
pub(crate) fn socket_filter() -> Option<Vec<libc::sock_filter>> {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return None;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        const ALLOW: u32 = 0x7fff_0000;
        const ERRNO: u32 = 0x0005_0000;
        let st = |code, k| libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let jeq = |k, jt, jf| libc::sock_filter {
            code: JEQ_K,
            jt,
            jf,
            k,
        };
        // struct seccomp_data { int nr; __u32 arch; __u64 ip; __u64 args[6]; }
        const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
        let jge = |k, jt, jf| libc::sock_filter {
            code: JGE_K,
            jt,
            jf,
            k,
        };
        // struct seccomp_data { int nr; __u32 arch; __u64 ip; __u64 args[6]; }
        Some(vec![
            st(LD_W_ABS, 4),                        // 0: arch
            jeq(AUDIT_ARCH, 0, 10),                 // 1: foreign ABI -> 12
            st(LD_W_ABS, 0),                        // 2: nr
            jge(0x4000_0000, 8, 0),                 // 3: x32 system call -> 12
            jeq(libc::SYS_socket as u32, 0, 5),     // 4: not socket() -> 10
            st(LD_W_ABS, 16),                       // 5: args[0] (low half): domain
            jeq(libc::AF_INET as u32, 4, 0),        // 6: -> 11
            jeq(libc::AF_INET6 as u32, 3, 0),       // 7: -> 11
            jeq(libc::AF_PACKET as u32, 2, 0),      // 8: -> 11
            jeq(libc::AF_NETLINK as u32, 1, 0),     // 9: -> 11
            st(RET_K, ALLOW),                       // 10
            st(RET_K, ERRNO | libc::EACCES as u32), // 11
            st(RET_K, ERRNO | libc::ENOSYS as u32), // 12
        ])
    }
}

/// A pids cgroup for one run (root only): caps the number of processes and threads, and
/// lets the parent kill whatever is left.
pub(crate) struct PidsCgroup {
    dir: PathBuf,
}

impl PidsCgroup {
    /// Where new pids cgroups go: a v1 `pids` hierarchy, or this process's own v2 cgroup
    /// when it offers the `pids` controller. `None` when neither is writable.
    pub(crate) fn parent_dir() -> Option<PathBuf> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).unwrap_or("");
            let mut r = right.split(' ');
            let fstype = r.next().unwrap_or("");
            let super_opts = r.nth(1).unwrap_or("");
            let own = |controllers: &str| {
                cgroups.lines().find_map(|l| {
                    let mut p = l.splitn(3, ':');
                    let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                    (c == controllers).then(|| path.trim_start_matches('/').to_owned())
                })
            };
            let candidate = if fstype == "cgroup" && super_opts.split(',').any(|o| o == "pids") {
                Path::new(mount_point).join(own("pids").unwrap_or_default())
            } else if fstype == "cgroup2" {
                Path::new(mount_point).join(own("").unwrap_or_default())
            } else {
                continue;
            };
            let dir = candidate.join("forge-judge");
            if std::fs::create_dir_all(&dir).is_ok() && probe_pids(&dir) {
                return Some(dir);
            }
        }
        None
    }

    /// A fresh cgroup under `parent` limited to `max` tasks.
    pub(crate) fn create(parent: &Path, max: u64) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = parent.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)?;
        let cg = Self { dir };
        std::fs::write(cg.dir.join("pids.max"), max.to_string())?;
        Ok(cg)
    }

    /// An open `cgroup.procs` to write the middle process's pid into.
    pub(crate) fn procs_file(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
    }

    /// Kills every task left in the cgroup and removes it.
    pub(crate) fn kill_and_remove(&self) {
        for _ in 0..200 {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() && std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            for pid in pids {
                // SAFETY: signalling a pid read from our own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        if self.dir.exists() {
            self.kill_and_remove();
        }
    }
}

fn probe_pids(dir: &Path) -> bool {
    let probe = dir.join(format!("probe-{}", std::process::id()));
    let ok = std::fs::create_dir(&probe).is_ok()
        && probe.join("pids.max").exists()
        && std::fs::write(probe.join("pids.max"), "8").is_ok();
    let _ = std::fs::remove_dir(&probe);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_jumps_stay_in_range() {
        let f = socket_filter().expect("supported arch");
        for (i, ins) in f.iter().enumerate() {
            if ins.code == 0x15 || ins.code == 0x35 {
                assert!(i + 1 + (ins.jt as usize) < f.len());
                assert!(i + 1 + (ins.jf as usize) < f.len());
            }
        }
        assert_eq!(f.iter().filter(|i| i.k == 0x7fff_0000).count(), 1);
    }

    #[test]
    fn landlock_attr_size_follows_abi() {
        let dir = Path::new("/tmp");
        assert!(landlock_plan(0, dir, None).is_none());
        assert_eq!(landlock_plan(1, dir, None).map(|p| p.attr_size), Some(8));
        assert_eq!(landlock_plan(4, dir, None).map(|p| p.attr_size), Some(16));
        let roots = [PathBuf::from("/usr"), PathBuf::from("/bin/sh")];
        let r = landlock_plan(7, dir, Some(&roots)).expect("abi 7");
        assert_eq!(r.attr[0] & FS_READ_DIR, FS_READ_DIR);
        for (path, rights) in &r.rules {
            if path.as_bytes() == b"/bin/sh" {
                assert_eq!(*rights & FS_READ_DIR, 0, "directory right on a file");
            }
        }
        let p = landlock_plan(7, dir, None).expect("abi 7");
        assert_eq!(p.attr_size, 24);
        assert_eq!(p.attr[1], NET_BIND_TCP | NET_CONNECT_TCP);
        assert_eq!(p.rules[0].1, p.attr[0]);
    }
}
