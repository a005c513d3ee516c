//! Running `opentrunk serve` as a real process for tests, and keeping those tests inside a
//! loopback-only network namespace when their messages name foreign hosts.
#![allow(dead_code)]

pub mod pg;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Re-runs the calling test inside a private network namespace where only `lo` exists
/// (`unshare -n`, needs root), so nothing it sends can leave the machine. Returns `true` when
/// the caller is already inside and should run; `false` when it ran (and passed) in a child or
/// was skipped because namespaces are unavailable (one line says so; CI makes it required).
pub fn in_loopback_namespace(test_name: &str) -> bool {
    if std::env::var_os("OPENTRUNK_IN_NETNS").is_some() {
        return true;
    }
    let probe = Command::new("unshare").args(["-n", "true"]).stderr(Stdio::null()).status();
    if !probe.is_ok_and(|s| s.success()) {
        if std::env::var("OPENTRUNK_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
            panic!("{test_name}: a loopback-only network namespace (unshare -n, root) is required");
        }
        println!("skipped: {test_name} needs a network namespace (unshare -n as root)");
        return false;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let status = Command::new("unshare")
        .args(["-n", "--", "sh", "-c", "ulimit -n 16384 2>/dev/null; ip link set lo up && exec \"$0\" \"$@\""])
        .arg(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env("OPENTRUNK_IN_NETNS", "1")
        .status()
        .expect("unshare");
    assert!(status.success(), "{test_name} failed inside the network namespace");
    false
}

/// A free port on 127.0.0.1 for both UDP and TCP (checked by binding both), never the same one
/// twice in this process and taken from below the kernel's ephemeral range. Asking the kernel
/// for port 0 and letting go raced: tests run in parallel, and a port just let go came back to
/// another test's server or to any socket bound to port 0 before this test's server bound it
/// (CI saw a server fail "Address already in use" on its API port while the health check was
/// answered by the other test's server on that port).
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (low, high) = unreserved_ports();
    let span = u64::from(high - low);
    // Processes that run at once (test binaries, benches) start at different places.
    let start = u64::from(std::process::id()) * 7919;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "free_port: every port in {low}..{high} handed out");
        let port = low + ((start + n) % span) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The ports below the kernel's ephemeral range (`ip_local_port_range`), where nothing bound to
/// port 0 lands: 10000 up to its start, or 10000..32768 when it cannot be read or starts at
/// 11000 or below.
fn unreserved_ports() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&low| low > 11_000)
        .unwrap_or(32_768);
    (10_000, ephemeral_low)
}

/// A running `opentrunk serve`, stopped with SIGTERM when dropped.
pub struct Server {
    pub child: Child,
    pub sip: SocketAddr,
    pub api: SocketAddr,
}

impl Server {
    /// Starts the switch with UDP and TCP on one port (plus `extra` listeners) and waits for
    /// `/health` to answer 200.
    pub fn start(extra_env: &[(&str, &str)]) -> Server {
        Server::start_with_config("", extra_env)
    }

    /// As [`Server::start`], with a TOML configuration file holding `toml`.
    pub fn start_with_config(toml: &str, extra_env: &[(&str, &str)]) -> Server {
        Server::start_at("127.0.0.1", toml, extra_env)
    }

    /// As [`Server::start_with_config`], with SIP on `sip_ip` (a node of a cluster on its own
    /// loopback address).
    pub fn start_at(sip_ip: &str, toml: &str, extra_env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let api_port = free_port();
        let sip: SocketAddr = format!("{sip_ip}:{port}").parse().unwrap();
        let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
        // A name of this start alone: a port freed by an earlier test of this process may come
        // back, and that test's database must not be this one's.
        static STARTS: AtomicU64 = AtomicU64::new(0);
        let stem = format!("ot-test-{}-{}-{port}", std::process::id(), STARTS.fetch_add(1, Ordering::Relaxed));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_opentrunk"));
        cmd.arg("serve");
        if !toml.is_empty() {
            let file = std::env::temp_dir().join(format!("{stem}.toml"));
            std::fs::write(&file, toml).expect("write config");
            cmd.arg("--config").arg(file);
        }
        let db = std::env::temp_dir().join(format!("{stem}.db"));
        cmd.env("OPENTRUNK_DATABASE_URL", format!("sqlite://{}", db.display()))
            .env("OPENTRUNK_SIP_LISTEN", format!("udp:{sip},tcp:{sip}"))
            .env("OPENTRUNK_API_LISTEN", api.to_string())
            .env("OPENTRUNK_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn opentrunk serve");
        let mut server = Server { child, sip, api };
        server.wait_healthy(Duration::from_secs(20));
        server
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("opentrunk serve exited early: {status}");
            }
            if self.health().is_some_and(|(code, _)| code == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("opentrunk serve did not become healthy within {limit:?}");
    }

    /// `GET /health`: status code and body.
    pub fn health(&self) -> Option<(u16, String)> {
        http_get(self.api, "/health")
    }

    /// Resident memory of the server process in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Kills the process at once (SIGKILL): a node lost, nothing flushed.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status (at most `limit`).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends an OPTIONS over UDP from `client` and returns the status of the answer.
    pub fn options_ping(&self, client: &UdpSocket, n: u32) -> Option<u16> {
        let local = client.local_addr().ok()?;
        let msg = format!(
            "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKping{n};rport\r\n\
             Max-Forwards: 70\r\nTo: <sip:{sip}>\r\nFrom: <sip:probe@{local}>;tag=p{n}\r\n\
             Call-ID: ping{n}@{local}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n",
            sip = self.sip
        );
        client.send_to(msg.as_bytes(), self.sip).ok()?;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 65_536];
        while Instant::now() < deadline {
            client.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
            if let Ok(n_read) = client.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n_read]);
                if text.contains(&format!("ping{n}@")) {
                    return text.get(8..11).and_then(|c| c.parse().ok());
                }
            }
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http(addr, "GET", path, None, None)
}

/// A minimal HTTP/1.1 request with an optional Bearer key and JSON body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    json: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::Write;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let body = json.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.get(9..12)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}
