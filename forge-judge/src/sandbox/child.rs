//! What runs between `fork` and `execve`.
//!
//! The parent is multi-threaded (rayon), so after `fork` only async-signal-safe calls are
//! allowed: raw system calls on buffers prepared before the fork. Nothing here allocates,
//! locks or formats with `std`. Every failure is written to the status pipe as a fixed-size
//! [`Record`] naming the [`Stage`] and the errno, then the process exits with 127.
//!
//! Process layout (when user namespaces are available):
//!
//! ```text
//! parent ──fork──► middle: setpgid, join cgroup, unshare(USER|NET|PID|NS|IPC|UTS), uid/gid map
//!                    └──fork──► init (PID 1 of the new PID namespace): private mounts, fresh /proc
//!                                 └──fork──► sample (PID 2): chdir, no_new_privs, Landlock,
//!                                            seccomp, rlimits, execve
//! ```
//!
//! Init reaps orphans, waits for the sample with `wait4`, sends its wait status and resource
//! usage to the parent and exits; the kernel then kills every other process of the PID
//! namespace, so nothing the sample forked can outlive it. Without namespaces the middle
//! process starts the sample itself and reports it.

use std::ffi::{CString, c_char, c_int, c_long};

/// Setup step that failed, sent to the parent with the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub(crate) enum Stage {
    Cgroup = 1,
    Stdio = 2,
    Unshare = 3,
    IdMap = 4,
    Fork = 5,
    Mounts = 6,
    Rlimit = 7,
    Chdir = 8,
    NoNewPrivs = 9,
    Landlock = 10,
    Seccomp = 11,
    Exec = 12,
    ReadOnly = 13,
}

impl Stage {
    pub(crate) fn from_i64(v: i64) -> Option<Self> {
        use Stage::*;
        Some(match v {
            1 => Cgroup,
            2 => Stdio,
            3 => Unshare,
            4 => IdMap,
            5 => Fork,
            6 => Mounts,
            7 => Rlimit,
            8 => Chdir,
            9 => NoNewPrivs,
            10 => Landlock,
            11 => Seccomp,
            12 => Exec,
            13 => ReadOnly,
            _ => return None,
        })
    }

    pub(crate) fn label(self) -> &'static str {
        use Stage::*;
        match self {
            Cgroup => "joining the pids cgroup",
            Stdio => "redirecting stdio",
            Unshare => "unshare(user, net, pid, mount, ipc, uts namespaces)",
            IdMap => "writing the uid/gid map",
            Fork => "fork",
            Mounts => "mounting a private /proc",
            Rlimit => "setrlimit",
            Chdir => "chdir to the sandbox directory",
            NoNewPrivs => "prctl(PR_SET_NO_NEW_PRIVS)",
            Landlock => "Landlock ruleset",
            Seccomp => "seccomp filter",
            Exec => "execve",
            ReadOnly => "remounting / read-only (all but the sandbox directory)",
        }
    }
}

/// One message on the status pipe.
pub(crate) const KIND_PID: i64 = 1;
pub(crate) const KIND_ERROR: i64 = 2;
pub(crate) const KIND_EXIT: i64 = 3;

/// `[kind, a, b, user µs, system µs, max RSS KiB]`.
pub(crate) type Record = [i64; 6];
pub(crate) const RECORD_BYTES: usize = 48;

/// The Landlock part of a plan: access rights and the directories that get them.
pub(crate) struct LandlockPlan {
    pub(crate) attr: [u64; 3],
    pub(crate) attr_size: usize,
    pub(crate) rules: Vec<(CString, u64)>,
}

/// Everything the child needs, prepared before `fork`.
pub(crate) struct Plan {
    pub(crate) program: CString,
    pub(crate) argv: Vec<CString>,
    pub(crate) envp: Vec<CString>,
    pub(crate) workdir: CString,
    pub(crate) unshare_flags: c_int,
    pub(crate) uid_map: Vec<u8>,
    pub(crate) gid_map: Vec<u8>,
    pub(crate) mount_proc: bool,
    pub(crate) read_only_root: bool,
    pub(crate) rlimits: Vec<(c_int, u64)>,
    pub(crate) landlock: Option<LandlockPlan>,
    pub(crate) seccomp: Option<Vec<libc::sock_filter>>,
    pub(crate) cgroup_procs_fd: c_int,
    pub(crate) stdin_fd: c_int,
    pub(crate) stdout_fd: c_int,
    pub(crate) stderr_fd: c_int,
    pub(crate) status_fd: c_int,
}

/// Null-terminated pointer arrays for `execve`, built before `fork`.
pub(crate) struct ExecPtrs {
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

impl ExecPtrs {
    pub(crate) fn new(plan: &Plan) -> Self {
        let argv = plan
            .argv
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp = plan
            .envp
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        Self { argv, envp }
    }
}

fn errno() -> i64 {
    // SAFETY: reads the thread-local errno; async-signal-safe.
    i64::from(unsafe { *libc::__errno_location() })
}

/// Writes one record; errors are ignored (the parent then sees a bare exit).
fn send(fd: c_int, rec: &Record) {
    let mut buf = [0u8; RECORD_BYTES];
    for (i, v) in rec.iter().enumerate() {
        buf[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    // SAFETY: `buf` is a valid buffer of RECORD_BYTES bytes; pipe writes of this size are atomic.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), RECORD_BYTES);
    }
}

fn fail(fd: c_int, stage: Stage) -> ! {
    let e = errno();
    send(fd, &[KIND_ERROR, stage as i64, e, 0, 0, 0]);
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(127) }
}

/// Writes `data` to `path` (a NUL-terminated byte string); returns false on failure.
///
/// # Safety
/// `path` must end with a NUL byte.
unsafe fn write_file(path: &[u8], data: &[u8]) -> bool {
    // SAFETY: `path` is NUL-terminated per the contract.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `data` is a valid buffer; `fd` is open.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fd) };
    n == data.len() as isize
}

/// Formats `v` as decimal into `buf`, returning the used tail.
fn itoa(mut v: u64, buf: &mut [u8; 24]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// The middle process: never returns.
///
/// # Safety
/// Must be called in a freshly forked child; `plan` and `ptrs` must have been built before
/// the fork.
pub(crate) unsafe fn middle(plan: &Plan, ptrs: &ExecPtrs) -> ! {
    let st = plan.status_fd;
    // SAFETY: plain system calls on prepared data; see the module documentation.
    unsafe {
        // Rust ignores SIGPIPE; restore the default and an empty signal mask.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::setpgid(0, 0);
        if plan.cgroup_procs_fd >= 0 {
            let mut buf = [0u8; 24];
            let pid = itoa(libc::getpid() as u64, &mut buf);
            if libc::write(plan.cgroup_procs_fd, pid.as_ptr().cast(), pid.len()) < 0 {
                fail(st, Stage::Cgroup);
            }
            libc::close(plan.cgroup_procs_fd);
        }
        if libc::dup2(plan.stdin_fd, 0) < 0
            || libc::dup2(plan.stdout_fd, 1) < 0
            || libc::dup2(plan.stderr_fd, 2) < 0
        {
            fail(st, Stage::Stdio);
        }
        if plan.unshare_flags != 0 {
            if libc::unshare(plan.unshare_flags) != 0 {
                fail(st, Stage::Unshare);
            }
            if plan.unshare_flags & libc::CLONE_NEWUSER != 0
                && !(write_file(b"/proc/self/setgroups\0", b"deny")
                    && write_file(b"/proc/self/uid_map\0", &plan.uid_map)
                    && write_file(b"/proc/self/gid_map\0", &plan.gid_map))
            {
                fail(st, Stage::IdMap);
            }
        }
        let pid = libc::fork();
        if pid < 0 {
            fail(st, Stage::Fork);
        }
        if pid == 0 {
            if plan.unshare_flags & libc::CLONE_NEWPID != 0 {
                init(plan, ptrs);
            }
            sample(plan, ptrs);
        }
        send(st, &[KIND_PID, i64::from(pid), 0, 0, 0, 0]);
        // Without a PID namespace the sample is our child: report its end ourselves.
        let report = plan.unshare_flags & libc::CLONE_NEWPID == 0;
        wait_and_report(pid, st, report);
        libc::_exit(0)
    }
}

/// Waits for `pid` (reaping any other child meanwhile) and, when `report`, sends its wait
/// status and resource usage.
///
/// # Safety
/// Async-signal-safe system calls only.
unsafe fn wait_and_report(pid: libc::pid_t, st: c_int, report: bool) {
    // SAFETY: wait4 into local buffers.
    unsafe {
        let mut status: c_int = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        loop {
            let r = libc::wait4(-1, &mut status, 0, &mut usage);
            if r == pid {
                break;
            }
            if r < 0 && errno() != i64::from(libc::EINTR) {
                libc::_exit(126);
            }
        }
        if report {
            let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
            send(
                st,
                &[
                    KIND_EXIT,
                    i64::from(status),
                    0,
                    us(usage.ru_utime),
                    us(usage.ru_stime),
                    usage.ru_maxrss,
                ],
            );
        }
    }
}

/// PID 1 of the new namespace: mounts its `/proc`, starts the sample as PID 2, reaps
/// orphans until the sample ends, reports it and exits, which makes the kernel kill
/// whatever else is left in the namespace. (The sample is not PID 1 itself because PID 1
/// ignores signals it has no handler for, `abort()` included.)
///
/// # Safety
/// As for [`middle`].
unsafe fn init(plan: &Plan, ptrs: &ExecPtrs) -> ! {
    let st = plan.status_fd;
    // SAFETY: plain system calls on prepared data; see the module documentation.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        let none: *const c_char = std::ptr::null();
        if (plan.mount_proc || plan.read_only_root)
            && libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
        {
            fail(st, Stage::Mounts);
        }
        if plan.mount_proc
            && libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ) != 0
        {
            fail(st, Stage::Mounts);
        }
        if plan.read_only_root && !read_only_root(&plan.workdir) {
            fail(st, Stage::ReadOnly);
        }
        let pid = libc::fork();
        if pid < 0 {
            fail(st, Stage::Fork);
        }
        if pid == 0 {
            sample(plan, ptrs);
        }
        wait_and_report(pid, st, true);
        libc::_exit(0)
    }
}

/// The sample process: sets its limits and confinement, then `execve`.
///
/// # Safety
/// As for [`middle`].
unsafe fn sample(plan: &Plan, ptrs: &ExecPtrs) -> ! {
    let st = plan.status_fd;
    // SAFETY: plain system calls on prepared data; see the module documentation.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        libc::setpgid(0, 0);
        if libc::chdir(plan.workdir.as_ptr()) != 0 {
            fail(st, Stage::Chdir);
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(st, Stage::NoNewPrivs);
        }
        if let Some(ll) = &plan.landlock
            && !apply_landlock(ll)
        {
            fail(st, Stage::Landlock);
        }
        if let Some(filter) = &plan.seccomp {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &prog as *const libc::sock_fprog as libc::c_ulong,
                0,
                0,
            ) != 0
            {
                fail(st, Stage::Seccomp);
            }
        }
        // The limits come last: descriptors inherited from the (multi-threaded) parent stay
        // open until exec, so with `RLIMIT_NOFILE` already lowered the Landlock ruleset's
        // descriptor could find no free number below the limit (EMFILE).
        for &(resource, value) in &plan.rlimits {
            // CPU: the soft limit sends SIGXCPU, the hard limit one second later SIGKILL.
            let hard = if resource == libc::RLIMIT_CPU as c_int {
                value.saturating_add(1)
            } else {
                value
            };
            let lim = libc::rlimit {
                rlim_cur: value,
                rlim_max: hard,
            };
            if libc::setrlimit(resource as _, &lim) != 0 {
                fail(st, Stage::Rlimit);
            }
        }
        // Every inherited descriptor above stderr closes at exec (the status pipe included,
        // which tells the parent the exec succeeded).
        libc::syscall(
            SYS_CLOSE_RANGE,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
        libc::execve(
            plan.program.as_ptr(),
            ptrs.argv.as_ptr(),
            ptrs.envp.as_ptr(),
        );
        fail(st, Stage::Exec)
    }
}

const SYS_CLOSE_RANGE: c_long = 436;
const SYS_MOUNT_SETATTR: c_long = 442;
const MOUNT_ATTR_RDONLY: u64 = 1;
const AT_RECURSIVE: c_int = 0x8000;

/// In the sandbox's private mount namespace: bind the directory onto itself, make every
/// mount read-only (`mount_setattr(2)`, AT_RECURSIVE), then make the directory's own mount
/// writable again.
///
/// # Safety
/// Async-signal-safe system calls only; must run in a private mount namespace.
unsafe fn read_only_root(workdir: &CString) -> bool {
    // `struct mount_attr { attr_set, attr_clr, propagation, userns_fd }`
    let ro: [u64; 4] = [MOUNT_ATTR_RDONLY, 0, 0, 0];
    let rw: [u64; 4] = [0, MOUNT_ATTR_RDONLY, 0, 0];
    // SAFETY: NUL-terminated paths and 32-byte attribute buffers.
    unsafe {
        libc::mount(
            workdir.as_ptr(),
            workdir.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ) == 0
            && libc::syscall(
                SYS_MOUNT_SETATTR,
                libc::AT_FDCWD,
                c"/".as_ptr(),
                AT_RECURSIVE,
                ro.as_ptr(),
                32usize,
            ) == 0
            && libc::syscall(
                SYS_MOUNT_SETATTR,
                libc::AT_FDCWD,
                workdir.as_ptr(),
                0,
                rw.as_ptr(),
                32usize,
            ) == 0
    }
}
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
pub(crate) const SYS_LANDLOCK_CREATE_RULESET: c_long = 444;
const SYS_LANDLOCK_ADD_RULE: c_long = 445;
const SYS_LANDLOCK_RESTRICT_SELF: c_long = 446;
const LANDLOCK_RULE_PATH_BENEATH: c_int = 1;

/// `struct landlock_path_beneath_attr` (packed: u64 then s32).
#[repr(C, packed)]
struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// # Safety
/// Async-signal-safe system calls only.
unsafe fn apply_landlock(ll: &LandlockPlan) -> bool {
    // SAFETY: the attribute buffer is at least `attr_size` bytes; the kernel reads only that.
    unsafe {
        let ruleset = libc::syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            ll.attr.as_ptr(),
            ll.attr_size,
            0u32,
        );
        if ruleset < 0 {
            return false;
        }
        let ruleset = ruleset as c_int;
        for (path, access) in &ll.rules {
            let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if fd < 0 {
                // A missing optional path (e.g. /dev/null in a chroot) is not fatal.
                continue;
            }
            let attr = PathBeneath {
                allowed_access: *access,
                parent_fd: fd,
            };
            let r = libc::syscall(
                SYS_LANDLOCK_ADD_RULE,
                ruleset,
                LANDLOCK_RULE_PATH_BENEATH,
                &attr as *const PathBeneath,
                0u32,
            );
            libc::close(fd);
            if r != 0 {
                return false;
            }
        }
        let r = libc::syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0u32);
        libc::close(ruleset);
        r == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itoa_formats_decimal() {
        let mut b = [0u8; 24];
        assert_eq!(itoa(0, &mut b), b"0");
        assert_eq!(itoa(4_194_304, &mut b), b"4194304");
        assert_eq!(itoa(u64::MAX, &mut b), b"18446744073709551615");
    }

    #[test]
    fn stages_round_trip() {
        for v in 1..=13 {
            let s = Stage::from_i64(v).expect("stage");
            assert_eq!(s as i64, v);
            assert!(!s.label().is_empty());
        }
        assert_eq!(Stage::from_i64(0), None);
    }
}
