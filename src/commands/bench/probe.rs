//! Watching child processes: wall time, peak resident memory (VmHWM from /proc, sampled
//! while the child runs), readiness through a systemd-style notify socket, and stopping
//! with SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// CPU seconds (user + system) this process has used so far, all threads, from
/// `/proc/self/stat` (clock ticks of 1/100 s).
pub fn own_cpu_seconds() -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// CPU seconds (user + system) each thread of this process has used so far, by thread
/// id, from `/proc/self/task/*/stat`: the busiest thread's share of a run is the least
/// wall time the run can take however many cores are free.
pub fn thread_cpu_seconds() -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        if let Some(secs) = stat_cpu_seconds(&stat) {
            out.insert(task.file_name().to_string_lossy().into_owned(), secs);
        }
    }
    out
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name is in parentheses and may hold spaces: count fields after it.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Peak resident memory of `pid` so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What a finished command came to.
#[derive(Debug, Clone)]
pub struct Measured {
    pub status: ExitStatus,
    pub seconds: f64,
    pub peak_rss_mib: f64,
    /// The last lines of its standard output and error.
    pub output_tail: String,
}

/// Runs `cmd` to the end, sampling its peak RSS every 20 ms; output goes to `log`.
pub async fn run_measured(mut cmd: Command, log: &Path) -> std::io::Result<Measured> {
    let out = std::fs::File::create(log)?;
    cmd.stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok(Measured {
        status,
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_mib: peak as f64 / 1024.0,
        output_tail: tail(log, 12),
    })
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A daemon started by the benchmark, with its own notify socket.
pub struct Daemon {
    pub child: Child,
    pub started: Instant,
    socket: UnixDatagram,
    socket_path: PathBuf,
    /// The process whose memory is watched and which is stopped: the daemon itself, or
    /// the child of the counter (perf or strace) it runs under.
    pub pid: u32,
    pub traced: bool,
}

impl Daemon {
    /// Starts `cmd` with `NOTIFY_SOCKET` pointing at a fresh socket `socket_path`.
    pub fn spawn(mut cmd: Command, socket_path: &Path, log: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(socket_path);
        let socket = UnixDatagram::bind(socket_path)?;
        let out = std::fs::File::create(log)?;
        cmd.env("NOTIFY_SOCKET", socket_path)
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null());
        let started = Instant::now();
        let child = cmd.spawn()?;
        let pid = child.id();
        Ok(Self {
            child,
            started,
            socket,
            socket_path: socket_path.to_path_buf(),
            pid,
            traced: false,
        })
    }

    /// Waits for `READY=1`; the seconds from spawn to it, or `None` after `limit` (or if
    /// the process exits first).
    pub async fn ready(&mut self, limit: Duration) -> Option<f64> {
        let socket = self.socket.try_clone().ok()?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .ok()?;
        let deadline = self.started + limit;
        loop {
            let sock = socket.try_clone().ok()?;
            let got = tokio::task::spawn_blocking(move || {
                let mut buf = [0u8; 512];
                sock.recv(&mut buf)
                    .ok()
                    .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
            })
            .await
            .ok()?;
            if let Some(text) = got
                && text.lines().any(|l| l.trim() == "READY=1")
            {
                return Some(self.started.elapsed().as_secs_f64());
            }
            if Instant::now() > deadline || self.child.try_wait().ok()?.is_some() {
                return None;
            }
            if self.traced && self.pid == self.child.id() {
                self.pid = traced_child(self.child.id()).unwrap_or(self.pid);
            }
        }
    }

    pub fn peak_rss_mib(&self) -> f64 {
        peak_rss_kib(self.pid).unwrap_or(0) as f64 / 1024.0
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL.
    pub async fn stop(mut self, grace: Duration) {
        if self.traced && self.pid == self.child.id() {
            self.pid = traced_child(self.child.id()).unwrap_or(self.pid);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.socket_path);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Reads a growing log file from where it last stopped: whether a line written since
/// holds `needle`.
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    /// The end of the last read that was not a whole line yet (bytes: a read may end
    /// inside a character).
    partial: Vec<u8>,
}

impl LogFollower {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Whether a line written since the last call contains `needle`.
    pub fn saw(&mut self, needle: &str) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return false;
        };
        let before = self.partial.len();
        if file.seek(SeekFrom::Start(self.offset)).is_err()
            || file.read_to_end(&mut self.partial).is_err()
        {
            self.partial.truncate(before);
            return false;
        }
        self.offset += (self.partial.len() - before) as u64;
        let complete = self
            .partial
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let found = String::from_utf8_lossy(&self.partial[..complete]).contains(needle);
        self.partial.drain(..complete);
        found
    }
}

/// The first child of `pid` (the daemon under perf or strace).
pub fn traced_child(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Whether `program` can be run (found on PATH and answers `--version`).
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command to the end and returns its standard output, or an error naming it.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::LogFollower;
    use std::io::Write;

    #[test]
    fn the_follower_sees_each_whole_line_once_and_waits_for_the_end_of_a_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.log");
        let mut follower = LogFollower::new(&path);
        assert!(!follower.saw("planned work"), "no file yet");
        let mut log = std::fs::File::create(&path).unwrap();
        writeln!(log, r#"{{"fields":{{"message":"starting"}}}}"#).unwrap();
        assert!(!follower.saw("planned work"));
        write!(log, r#"{{"fields":{{"message":"planned "#).unwrap();
        assert!(!follower.saw("planned work"), "half a line");
        writeln!(log, r#"work","debit_attempts":3}}}}"#).unwrap();
        assert!(follower.saw("planned work"), "the line once whole");
        assert!(!follower.saw("planned work"), "read once");
        writeln!(log, "another planned work line").unwrap();
        assert!(follower.saw("planned work"));
    }
}
