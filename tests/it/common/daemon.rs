//! A `learner-sync daemon` of a test: the real binary on an `Env`'s config, its log in
//! the `Env`'s folder, killed when the test ends; and `wait_for`, the one way a test waits.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{bin, Env};

pub const PATIENCE: Duration = Duration::from_secs(90);

/// A running daemon; killed if a test ends without stopping it.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(env: &Env) -> Daemon {
        Daemon::start_with(env, &[])
    }

    pub fn start_with(env: &Env, envs: &[(&str, &str)]) -> Daemon {
        let log = env.path("daemon.log");
        let child = Command::new(bin())
            .arg("daemon")
            .arg("--config")
            .arg(env.config())
            .env_remove("LEARNER_SYNC_CONFIG")
            .env_remove("LEARNER_SYNC_FAULT")
            .env_remove("LEARNER_SYNC_PAUSE")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .current_dir(env.dir.path())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .envs(envs.iter().copied())
            .spawn()
            .expect("start daemon");
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// The port of `/healthz` and `/metrics`, from the startup log line.
    pub fn port(&self) -> u16 {
        let log = wait_for("the listen address in the log", || {
            let log = self.log();
            log.contains("serving /healthz").then_some(log)
        });
        let at = log.find("address=127.0.0.1:").expect("address") + "address=127.0.0.1:".len();
        log[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .expect("port")
    }

    /// SIGTERM, then wait for the exit; returns the exit code and how long it took.
    pub fn terminate(&mut self) -> (Option<i32>, Duration) {
        self.signal(libc::SIGTERM);
        self.terminate_wait()
    }

    /// Wait for the exit after a SIGTERM was sent.
    pub fn terminate_wait(&mut self) -> (Option<i32>, Duration) {
        let asked = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status.code(), asked.elapsed());
            }
            assert!(
                asked.elapsed() < PATIENCE,
                "daemon still running {PATIENCE:?} after SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `probe` until it returns Some, or fail naming what was awaited.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
