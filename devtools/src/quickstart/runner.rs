//! The quickstart's runner: narration (steps, commands shown as a user would type them, ticks
//! with timings), running our binaries, waiting with a deadline, and the child processes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How many steps the quickstart narrates.
pub(super) const STEPS: usize = 8;
/// How long a step waits for what it expects before failing.
const WAIT: Duration = Duration::from_secs(45);

/// A failed step: which, and why.
pub struct Failure {
    /// "step 3/8 (install the agent)".
    pub step: String,
    /// Why.
    pub reason: String,
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
pub(super) struct Proc {
    pub(super) name: &'static str,
    pub(super) child: Child,
    pub(super) log: PathBuf,
}

impl Proc {
    pub(super) fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        #[cfg(unix)]
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        wait_or_kill(&mut self.child, Duration::from_secs(5));
    }

    pub(super) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(format!(
                "the {} exited ({s}); its log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 15)
            )),
            _ => None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits up to `timeout` for `child` to exit, then kills it.
pub(super) fn wait_or_kill(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("        {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) struct Run {
    pub(super) dir: PathBuf,
    pub(super) bins: PathBuf,
    pub(super) step: usize,
    pub(super) title: &'static str,
    pub(super) started: Instant,
    pub(super) step_started: Instant,
    pub(super) color: bool,
    pub(super) controller: Option<Proc>,
    pub(super) agent: Option<Proc>,
    /// More logs to show when a wait times out (the proxy's).
    pub(super) extra_logs: Vec<PathBuf>,
}

impl Run {
    pub(super) fn step(&mut self, title: &'static str) {
        self.step += 1;
        self.title = title;
        self.step_started = Instant::now();
        let head = format!("[{}/{STEPS}] {title}", self.step);
        if self.color {
            println!("\n\x1b[1m{head}\x1b[0m");
        } else {
            println!("\n{head}");
        }
    }

    pub(super) fn fail(&self, reason: impl Into<String>) -> Failure {
        Failure {
            step: format!("step {}/{STEPS} ({})", self.step, self.title),
            reason: reason.into(),
        }
    }

    pub(super) fn ok(&self, what: impl std::fmt::Display) {
        let took = self.step_started.elapsed().as_secs_f64();
        let mark = if self.color {
            "\x1b[32m✓\x1b[0m"
        } else {
            "✓"
        };
        println!("      {mark} {what} ({took:.1} s)");
    }

    pub(super) fn say(&self, what: impl std::fmt::Display) {
        println!("      {what}");
    }

    /// Shows a command as a user would type it (paths shortened to the sandbox).
    pub(super) fn show(&self, program: &str, args: &[&str]) {
        let dir = self.dir.display().to_string();
        let line = std::iter::once(program.to_owned())
            .chain(args.iter().map(|a| {
                let a = a.replace(&dir, "$QS");
                if a.contains(' ') { format!("'{a}'") } else { a }
            }))
            .collect::<Vec<_>>()
            .join(" ");
        let line = format!("$ {line}");
        if self.color {
            println!("      \x1b[2m{line}\x1b[0m");
        } else {
            println!("      {line}");
        }
        let _ = std::io::stdout().flush();
    }

    pub(super) fn bin(&self, name: &str) -> PathBuf {
        self.bins
            .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
    }

    /// Runs one of our binaries, shown; returns stdout, or the failure with stderr.
    pub(super) fn run(
        &self,
        name: &str,
        args: &[&str],
        shown: &[&str],
    ) -> Result<(i32, String), Failure> {
        self.show(name, shown);
        let out = Command::new(self.bin(name))
            .args(args)
            .output()
            .map_err(|e| self.fail(format!("cannot run {}: {e}", self.bin(name).display())))?;
        let code = out.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if code != 0 && !(name == "thoth-installer" && code == 3) {
            return Err(self.fail(format!(
                "{name} exited {code}: {}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            )));
        }
        Ok((code, stdout))
    }

    /// Starts a long-running process (shown as `shown ARGS`) with its stderr in `log`.
    pub(super) fn spawn(
        &self,
        name: &'static str,
        (program, shown): (&Path, &str),
        args: &[&str],
        log: PathBuf,
    ) -> Result<Proc, Failure> {
        self.show(shown, args);
        let logf = std::fs::File::create(&log).map_err(|e| self.fail(e.to_string()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .map_err(|e| self.fail(format!("cannot start the {name}: {e}")))?;
        Ok(Proc { name, child, log })
    }

    pub(super) fn thothctl(&self, args: &[&str]) -> Result<String, Failure> {
        let creds = self.dir.join("controller/admin");
        let creds = creds.to_str().unwrap_or_default();
        let mut all = vec!["--credentials", creds];
        all.extend_from_slice(args);
        self.run("thothctl", &all, args).map(|(_, out)| out)
    }

    /// Waits for `cond`, failing with `what` after `WAIT`, or as soon as a process died.
    pub(super) fn wait<T>(
        &mut self,
        what: &str,
        mut cond: impl FnMut() -> Option<T>,
    ) -> Result<T, Failure> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = cond() {
                return Ok(v);
            }
            let died = [&mut self.controller, &mut self.agent]
                .into_iter()
                .flatten()
                .find_map(|p| p.exited());
            if let Some(why) = died {
                return Err(self.fail(why));
            }
            if Instant::now() > deadline {
                let mut why = format!("{what}: nothing after {} s", WAIT.as_secs());
                for p in [&self.controller, &self.agent].into_iter().flatten() {
                    why.push_str(&format!(
                        "\n      the {} log ({}):\n{}",
                        p.name,
                        p.log.display(),
                        tail(&p.log, 10)
                    ));
                }
                for log in &self.extra_logs {
                    why.push_str(&format!("\n      {}:\n{}", log.display(), tail(log, 10)));
                }
                return Err(self.fail(why));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
