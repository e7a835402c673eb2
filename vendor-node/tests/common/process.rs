//! A service binary run as a child process, for the crash tests of the
//! vendor node and the broker (the broker's tests include this file too).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A service as a child process, killed when dropped so that a failing test
/// leaves nothing running.
pub struct ServiceProcess {
    name: &'static str,
    child: Child,
}

impl ServiceProcess {
    /// Starts `binary --config config` with warnings logged and the
    /// environment overrides in `cleared` removed, so that only the file
    /// configures it.
    pub fn start(
        name: &'static str,
        binary: &str,
        config: &Path,
        cleared: &[&str],
    ) -> ServiceProcess {
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for variable in cleared {
            command.env_remove(variable);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        ServiceProcess { name, child }
    }

    /// Sends SIGKILL and waits for the process to be gone.
    pub fn kill(mut self) {
        let name = self.name;
        self.child
            .kill()
            .unwrap_or_else(|error| panic!("cannot kill {name}: {error}"));
        self.child
            .wait()
            .unwrap_or_else(|error| panic!("cannot wait for {name}: {error}"));
    }

    /// Fails if the process has exited by itself.
    pub fn check_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited on its own: {status}", self.name);
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
