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

/// The body of an HTTP/1.1 GET of `path` at `addr`, or why there is none:
/// enough of a client for a metrics endpoint or Prometheus's API.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read as _, Write as _};

    let timeout = std::time::Duration::from_secs(10);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|error| error.to_string())?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| error.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|error| error.to_string())?;
    let response = String::from_utf8(response).map_err(|error| error.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no end of headers")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_owned());
    }
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(body.to_owned());
    }
    let (mut rest, mut whole) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).map_err(|error| error.to_string())?;
        if size == 0 {
            break;
        }
        whole.push_str(after.get(..size).ok_or("a chunk is cut short")?);
        rest = after[size..].trim_start_matches("\r\n");
    }
    Ok(whole)
}

/// Fails unless `promtool check metrics` (Debian package `prometheus`,
/// installed by `scripts/test`) accepts `scrape` without a word.
pub fn assert_promtool_accepts(scrape: &str) {
    use std::io::Write as _;

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed: run scripts/test");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{scrape}"
    );
}
