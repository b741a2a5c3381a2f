//! Private vhosts, handed out from a pool so a test costs no `rabbitmqctl` run
//! of its own.
//!
//! `rabbitmqctl` starts an Erlang VM (about 0.7 s of CPU) per call; a vhost
//! per test made that the biggest cost of the suite. Vhosts are created eight
//! at a time with one `rabbitmqctl eval`, and a vhost whose user is done is
//! deleted in the background. Names carry the process id (`lw-<pid>-<n>`);
//! the first batch of a process also deletes the vhosts of processes that are
//! gone (a run that was killed), so nothing piles up on the broker.

use std::process::{Command, Output, Stdio};
use std::sync::{Condvar, Mutex};

/// How many vhosts one `rabbitmqctl eval` creates.
const BATCH: usize = 8;

/// How many `rabbitmqctl` runs (Erlang VMs) a process starts at once: more
/// only fight over the cores with the broker and the tests they serve.
const CTL_AT_ONCE: usize = 2;

static CTL_RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Runs `rabbitmqctl`, at most [`CTL_AT_ONCE`] at a time.
fn ctl(args: &[&str], quiet: bool) -> std::io::Result<Output> {
    let (running, freed) = &CTL_RUNNING;
    {
        let mut n = running.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= CTL_AT_ONCE {
            n = freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
    }
    let mut cmd = Command::new("rabbitmqctl");
    cmd.args(args);
    if quiet {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let out = cmd.output();
    *running.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
    freed.notify_one();
    out
}

/// Runs `rabbitmqctl` with the given arguments; panics on failure.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = ctl(args, false).expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[derive(Default)]
struct Pool {
    free: Vec<String>,
    made: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    made: 0,
});

/// A private vhost where `guest` may do anything; deleted when dropped.
#[derive(Debug)]
pub struct Vhost {
    /// Its name (no percent-encoding needed in a URL).
    pub name: String,
}

impl Vhost {
    /// Takes a fresh vhost (never used before) from the pool.
    pub async fn create() -> Vhost {
        tokio::task::spawn_blocking(take).await.expect("vhost pool")
    }

    /// Its AMQP URL on the broker at 127.0.0.1:5672.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

fn take() -> Vhost {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if pool.free.is_empty() {
        let pid = std::process::id();
        let names: Vec<String> = (pool.made..pool.made + BATCH)
            .map(|n| format!("lw-{pid}-{n}"))
            .collect();
        let stale = if pool.made == 0 {
            stale_vhosts()
        } else {
            Vec::new()
        };
        create_batch(&names, &stale);
        pool.made += BATCH;
        pool.free = names.into_iter().rev().collect();
    }
    let name = pool.free.pop().expect("a fresh vhost");
    Vhost { name }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("<<\"{n}\">>"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates `names` and deletes `stale` in one Erlang VM. Another process may
/// be deleting the same stale vhosts at the same moment, hence `catch`.
fn create_batch(names: &[String], stale: &[String]) {
    let user = "<<\"lifecycle-tests\">>";
    // `catch`: a stale vhost may be gone by now (the `delete_vhost` its own
    // process started on drop can still be running after that process exited).
    let expr = format!(
        "[catch rabbit_vhost:delete(V, {user}) || V <- [{}]], \
         [begin rabbit_vhost:add(V, {user}), \
          rabbit_auth_backend_internal:set_permissions(<<\"guest\">>, V, <<\".*\">>, <<\".*\">>, <<\".*\">>, {user}) \
          end || V <- [{}]], ok.",
        quoted(stale),
        quoted(names)
    );
    rabbitmqctl(&["-q", "eval", &expr]);
}

/// Vhosts of this pool's naming whose process is gone.
fn stale_vhosts() -> Vec<String> {
    rabbitmqctl(&["-q", "list_vhosts"])
        .lines()
        .map(str::trim)
        .filter(|v| {
            let mut parts = v.splitn(3, '-');
            let pid = match (parts.next(), parts.next()) {
                (Some("lw"), Some(pid)) => pid.parse::<u32>().ok(),
                _ => None,
            };
            pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(str::to_owned)
        .collect()
}

impl Drop for Vhost {
    fn drop(&mut self) {
        // In the background: a test's end must not wait for an Erlang VM.
        // Were the process to exit first, the next run's first batch deletes it.
        let name = std::mem::take(&mut self.name);
        std::thread::spawn(move || {
            let _ = ctl(&["-q", "delete_vhost", &name], true);
        });
    }
}
