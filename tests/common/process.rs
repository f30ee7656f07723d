//! The real `napster` binary driven from tests: a script piped to its stdin, run to
//! completion or kept running with its stdout read line by line; every child is killed
//! when its handle is dropped. Each can run inside a network namespace (`ip netns exec`,
//! which execs napster itself, so the handle's process is napster's).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The napster binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_napster");

pub use napster::home::HOME_ENV;

/// How a test file runs napster: the log level it sets (`RUST_LOG`), and how long a
/// [`Running`] process may take to print each awaited line (`None`: no limit).
#[derive(Debug, Clone, Copy)]
pub struct Napster {
    /// The value of `RUST_LOG`.
    pub log: &'static str,
    /// The longest wait for one line of stdout, if any.
    pub patience: Option<Duration>,
}

impl Napster {
    /// A command that runs napster in `cwd` with `RUST_LOG` set, stdin and stdout
    /// piped, and `cwd` as its home (`NAPSTER_HOME`: its keys and pinned index keys are
    /// there, and no test touches the user's data directory; `--home` overrides it).
    pub fn command(&self, cwd: &Path) -> Command {
        self.command_in(None, cwd)
    }

    /// [`Napster::command`], inside network namespace `netns` when one is given.
    pub fn command_in(&self, netns: Option<&str>, cwd: &Path) -> Command {
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, BIN]);
                command
            }
            None => Command::new(BIN),
        };
        command
            .current_dir(cwd)
            .env(HOME_ENV, std::path::absolute(cwd).unwrap())
            .env("RUST_LOG", self.log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        command
    }

    /// Run `script` in `cwd` to completion; its exit status, stdout and stderr.
    pub fn run(&self, cwd: &Path, script: &str) -> Output {
        self.run_in(None, cwd, script)
    }

    /// [`Napster::run`], inside network namespace `netns` when one is given.
    pub fn run_in(&self, netns: Option<&str>, cwd: &Path, script: &str) -> Output {
        let mut child = self
            .command_in(netns, cwd)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A process that refuses to start may close its input before reading it.
        let _ = child.stdin.take().unwrap().write_all(script.as_bytes());
        child.wait_with_output().unwrap()
    }

    /// Start napster in `cwd` and feed it `script`, leaving stdin open (see
    /// [`Running::end_input`]); stderr goes to the test's.
    pub fn start(&self, cwd: &Path, script: &str) -> Running {
        self.start_with(cwd, &[], script)
    }

    /// Run `napster ARGS` in `cwd` to completion with nothing on stdin; its exit
    /// status, stdout and stderr.
    pub fn run_args(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command(cwd)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    }

    /// [`Napster::start`] with command-line arguments.
    pub fn start_with(&self, cwd: &Path, args: &[&str], script: &str) -> Running {
        self.start_in(None, cwd, args, script)
    }

    /// An index server started in `netns` from `cwd` (`serve 0`; its napster.toml says
    /// where it listens): the running process and the port it got.
    pub fn serve_in(&self, netns: &str, cwd: &Path) -> (Running, u16) {
        let mut index = self.start_in(Some(netns), cwd, &[], "serve 0\n");
        let bound = last_word(&index.wait_for("index server listening on"));
        let port = bound.rsplit(':').next().unwrap().parse().unwrap();
        (index, port)
    }

    /// [`Napster::start_with`], inside network namespace `netns` when one is given.
    pub fn start_in(
        &self,
        netns: Option<&str>,
        cwd: &Path,
        args: &[&str],
        script: &str,
    ) -> Running {
        let mut command = self.command_in(netns, cwd);
        command.args(args);
        self.start_command(command, script)
    }

    /// [`Napster::start`] under `wrapper`, a command that execs napster (such as
    /// `prlimit --nofile=1024:1024`), so that the handle's process is napster's.
    pub fn start_under(&self, wrapper: &[&str], cwd: &Path, script: &str) -> Running {
        let mut command = Command::new(wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(BIN)
            .current_dir(cwd)
            .env(HOME_ENV, std::path::absolute(cwd).unwrap())
            .env("RUST_LOG", self.log);
        self.start_command(command, script)
    }

    /// Start `command` (a napster) with stdin and stdout piped and feed it `script`, as
    /// [`Napster::start`] does.
    pub fn start_command(&self, mut command: Command, script: &str) -> Running {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("napster starts");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(script.as_bytes()).unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child: Killed(child),
            stdin: Some(stdin),
            lines,
            seen: Vec::new(),
            patience: self.patience,
        }
    }
}

/// A child process, killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A napster process kept running with its stdout read line by line; killed when
/// dropped.
pub struct Running {
    child: Killed,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    patience: Option<Duration>,
}

impl Running {
    /// The next line of stdout, or `None` once stdout closed or the patience ran out.
    fn recv(&mut self) -> Option<String> {
        let line = match self.patience {
            Some(patience) => self.lines.recv_timeout(patience).ok(),
            None => self.lines.recv().ok(),
        }?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// The next stdout line.
    pub fn next_line(&mut self) -> String {
        self.recv()
            .unwrap_or_else(|| panic!("no more lines; saw {:#?}", self.seen))
    }

    /// The first stdout line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.recv() {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!("no line with {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// The process ID.
    pub fn id(&self) -> u32 {
        self.child.0.id()
    }

    /// Type `line` (a newline is added) into the process's still open stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Close stdin: a serving process keeps serving.
    pub fn end_input(&mut self) {
        self.stdin.take();
    }

    /// With `--json`: run `command` and return the lines it printed (up to the
    /// `format` line sent after it as a marker).
    pub fn ask(&mut self, command: &str) -> Vec<String> {
        self.send(&format!("{command}\nformat"));
        let mut lines = Vec::new();
        loop {
            let line = self.next_line();
            if line.contains(r#""type":"format""#) {
                return lines;
            }
            lines.push(line);
        }
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        assert!(signal(self.id(), "TERM"), "kill -TERM failed");
        self.child.0.wait().unwrap()
    }

    /// Close stdin and wait for the process to exit by itself (after `quit`, or the end
    /// of its input), for at most the patience (then it is killed and this panics); its
    /// exit status.
    pub fn wait(&mut self) -> ExitStatus {
        self.stdin.take();
        let deadline = self.patience.map(|p| std::time::Instant::now() + p);
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                return status;
            }
            if deadline.is_some_and(|d| std::time::Instant::now() > d) {
                self.kill();
                panic!("napster did not exit; saw {:#?}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the process and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

/// Send the signal `name` (`"TERM"`, `"KILL"`, ...) to process `pid` with kill(1);
/// whether kill succeeded.
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|status| status.success())
}

/// Kill process `pid` with SIGKILL, asserting that kill(1) succeeded.
pub fn kill9(pid: u32) {
    assert!(signal(pid, "KILL"), "kill -KILL {pid} failed");
}

/// The last word of a line, such as the address in `... listening on 127.0.0.1:4321`.
pub fn last_word(line: &str) -> String {
    line.split_whitespace().last().unwrap().to_owned()
}

/// Bytes from a process's stdout or stderr as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// CPU time (user and system) process `pid` has used so far, from `/proc/PID/stat`
/// (Linux only): what benchmarks report next to wall-clock rates.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// User + system time from a `/proc/.../stat` file (a process's or a thread's).
pub fn stat_cpu(path: &str) -> Option<Duration> {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks))
}
