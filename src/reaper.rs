//! Reaping orphans when cvnotify is PID 1 (a container without an init).
//!
//! Processes a hook leaves behind are re-parented to PID 1 when the hook
//! exits; as PID 1, cvnotify must wait for them or they stay zombies. It
//! must not wait for its own hook processes, though: tokio waits for those
//! to learn their exit status. So the reaper scans /proc for zombie children
//! and reaps only those not in [`HOOK_PIDS`]. Hand-written: the reaper
//! crates (and tini) reap every child, which would steal the hooks' statuses.

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// Pids of hook processes the shell handler is waiting for.
pub static HOOK_PIDS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

pub fn track(pid: i32) {
    HOOK_PIDS
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(pid);
}

pub fn untrack(pid: i32) {
    if let Some(set) = HOOK_PIDS.lock().unwrap().as_mut() {
        set.remove(&pid);
    }
}

/// Zombie children of this process that no hook handler waits for.
fn orphaned_zombies() -> Vec<i32> {
    let me = std::process::id() as i32;
    let tracked = HOOK_PIDS.lock().unwrap().clone().unwrap_or_default();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may contain spaces.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let mut fields = rest.split(' ');
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
        if state == Some("Z") && ppid == Some(me) && !tracked.contains(&pid) {
            out.push(pid);
        }
    }
    out
}

/// When running as PID 1, reaps orphaned zombies every second until the
/// process ends. Does nothing otherwise.
pub fn spawn_if_pid1() {
    if std::process::id() != 1 {
        return;
    }
    tracing::info!("Running as PID 1: reaping orphaned processes");
    tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for pid in orphaned_zombies() {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                tracing::debug!(pid, "Reaped an orphaned process");
            }
        }
    });
}
