//! Whatever a test starts, it stops: on success, on failure (a panic unwinds through the
//! guard's `Drop`), and when the test process itself dies (a watchdog).
//!
//! A [`ProcessTree`] starts its program in a process group of its own and marks it, and every
//! descendant, with an environment variable whose value is unique to the tree (Chromium's
//! crash handlers leave the group for a session of their own; the mark still finds them).
//! Stopping sends SIGTERM to the group and the marked processes, then SIGKILL to whatever is
//! left after a grace period, and reaps the program. A watchdog (`sh`, in a group of its own)
//! waits on a pipe the guard holds: when the test process exits however it exits, even killed,
//! the pipe closes and the watchdog does the same (that is what stops the process-wide
//! PgBouncer in a `static`, which is never dropped).

use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that marks a tree's processes (descendants inherit it).
const MARKER: &str = "TENANCY_TEST_PROCESS_TREE";

/// How long the processes get to exit after SIGTERM, then after SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// A program and everything it starts, stopped when dropped.
#[derive(Debug)]
pub(crate) struct ProcessTree {
    leader: Child,
    mark: Mark,
    /// The watchdog and the write end of its stdin; `None` once stopped.
    watchdog: Option<(Child, ChildStdin)>,
}

/// What identifies a tree's processes, also after its guard is gone: its process group, and
/// its mark.
#[derive(Debug, Clone)]
pub(crate) struct Mark {
    group: u32,
    token: String,
}

impl ProcessTree {
    /// Starts `command` in a new process group, marked, with a watchdog (its stdin is
    /// `/dev/null`).
    pub(crate) fn spawn(command: &mut Command) -> std::io::Result<ProcessTree> {
        let token = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        let leader = command
            .process_group(0)
            .env(MARKER, &token)
            .stdin(Stdio::null())
            .spawn()?;
        let mut tree = ProcessTree {
            mark: Mark {
                group: leader.id(),
                token,
            },
            leader,
            watchdog: None,
        };
        // On error `tree` is dropped here, which stops the program just started.
        tree.watchdog = Some(tree.mark.watchdog()?);
        Ok(tree)
    }

    /// The program's process id (also its process group's id).
    #[allow(dead_code)] // Shared by two test binaries; only `it` signals its program.
    pub(crate) fn id(&self) -> u32 {
        self.leader.id()
    }

    /// What identifies this tree's processes, to check after it is stopped.
    pub(crate) fn mark(&self) -> Mark {
        self.mark.clone()
    }

    /// Stops every process of the tree (SIGTERM, then SIGKILL after [`GRACE`]) and reaps the
    /// program. Idempotent; `Drop` calls it.
    pub(crate) fn stop(&mut self) {
        let Some((mut watchdog, stdin)) = self.watchdog.take() else {
            return;
        };
        'signals: for signal in ["TERM", "KILL"] {
            self.mark.signal(signal);
            let deadline = Instant::now() + GRACE;
            loop {
                // Reaps the program as soon as it exits (its zombie is still in the group).
                let _ = self.leader.try_wait();
                if self.mark.survivors().is_empty() {
                    break 'signals;
                }
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.leader.wait();
        // The watchdog has nothing left to do: end it while its pipe is still open (it would
        // otherwise signal a group id that is free for reuse).
        let _ = watchdog.kill();
        let _ = watchdog.wait();
        drop(stdin);
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Mark {
    /// The tree's processes still present, zombies included, as `pid state command` lines:
    /// those in its process group, and those carrying its mark.
    pub(crate) fn survivors(&self) -> Vec<String> {
        self.scan().into_iter().map(|p| p.shown).collect()
    }

    fn scan(&self) -> Vec<Found> {
        let marked = format!("{MARKER}={}", self.token);
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let in_group = fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(self.group);
            let carries_mark = || {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marked.as_bytes()))
            };
            if in_group || carries_mark() {
                let command = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                    .unwrap_or_default();
                let name = head.split_once('(').map_or("", |(_, n)| n);
                let shown = if command.trim().is_empty() {
                    name
                } else {
                    command.trim()
                };
                let state = fields.first().copied().unwrap_or("?");
                let shown: String = shown.chars().take(160).collect();
                found.push(Found {
                    pid,
                    in_group,
                    shown: format!("{pid} {state} {shown}"),
                });
            }
        }
        found
    }

    /// Sends `signal` to the group and to the marked processes outside it.
    fn signal(&self, signal: &str) {
        let group = format!("-{}", self.group);
        let _ = Command::new("kill")
            .args(["-s", signal, "--", &group])
            .args(
                self.scan()
                    .iter()
                    .filter(|p| !p.in_group)
                    .map(|p| p.pid.to_string()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// The watchdog: when its stdin closes (the test process is gone), it stops the tree.
    fn watchdog(&self) -> std::io::Result<(Child, ChildStdin)> {
        let script = format!(
            "marked() {{ for e in /proc/[0-9]*/environ; do \
               grep -qzxF '{MARKER}={token}' \"$e\" 2>/dev/null && {{ p=${{e#/proc/}}; echo ${{p%/environ}}; }}; \
             done; }}; \
             read _ignored; \
             kill -s TERM -- -{group} $(marked) 2>/dev/null; sleep 2; \
             kill -s KILL -- -{group} $(marked) 2>/dev/null",
            token = self.token,
            group = self.group,
        );
        let mut watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = watchdog.stdin.take().expect("piped stdin");
        Ok((watchdog, stdin))
    }
}

/// One process of a tree, as [`Mark::scan`] finds it.
struct Found {
    pid: u32,
    in_group: bool,
    shown: String,
}
