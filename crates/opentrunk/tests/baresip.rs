//! A real softphone on the registrar: baresip (Debian's package) registers to a credential
//! connection with digest, the registration status endpoint says `Registered` with its address,
//! it answers a carrier's call to the connection's number by itself (`answermode=auto`), and
//! once it has quit (it unregisters on the way out) the same call gets
//! `480 User not registered RG1`.
//!
//! baresip runs headless from a configuration directory of the test's own: no console, no
//! sound card (`aubridge` loops its loudspeaker into its microphone), G.711 only.
//!
//! Skipped with one line when baresip or SIPp is missing, except where
//! `OPENTRUNK_REQUIRE_BARESIP=1` / `OPENTRUNK_REQUIRE_SIPP=1` (CI).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod peers;
mod support;

use peers::*;

const CARRIER_IP: &str = "127.0.0.2";
/// The phone's address: one no connection names.
const PHONE_IP: &str = ROAMING_PBX_IP;
const NUMBER: &str = "+12125550123";
const USER: &str = "alice2024";
const PASSWORD: &str = "correct-horse-battery";

/// Whether baresip is installed; when it is not, one line says so and the test is skipped,
/// except where `OPENTRUNK_REQUIRE_BARESIP=1` (CI) makes it required.
fn baresip_available() -> bool {
    // `-h` prints the usage and exits (non-zero): only whether it runs at all matters.
    let ok = Command::new("baresip").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !ok {
        if std::env::var("OPENTRUNK_REQUIRE_BARESIP").is_ok_and(|v| v == "1") {
            panic!("baresip is required (scripts/install-test-deps installs it)");
        }
        println!("skipped: baresip not installed (scripts/install-test-deps installs it)");
    }
    ok
}

/// A baresip process with its configuration directory and output.
struct Phone {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Phone {
    /// Registers `USER` to the switch at `registrar` from `PHONE_IP` (a free port), auto-answering.
    fn start(dir: &Path, registrar: SocketAddr) -> Phone {
        let conf = dir.join("baresip");
        std::fs::create_dir_all(&conf).expect("baresip config dir");
        let addr: SocketAddr = format!("{PHONE_IP}:{}", free_udp_port(PHONE_IP)).parse().unwrap();
        // Headless: no stdio console (stdin is not a terminal), no sound card: `aubridge` hands
        // what it plays back to its microphone, at any sample rate (ausine only does 48 kHz).
        // `account.so` reads the accounts file; v1.0.0's core acts on `answermode=auto`.
        let config = format!(
            "poll_method\tepoll\n\
             sip_listen\t{addr}\n\
             call_local_timeout\t120\n\
             audio_player\taubridge,loop\n\
             audio_source\taubridge,loop\n\
             audio_alert\taubridge,alert\n\
             module_path\t/usr/lib/baresip/modules\n\
             module\tg711.so\n\
             module\taubridge.so\n\
             module_tmp\taccount.so\n"
        );
        std::fs::write(conf.join("config"), config).expect("baresip config");
        // Without a transport parameter baresip registers over UDP, from `sip_listen`.
        let account = format!("<sip:{USER}@{registrar}>;auth_pass={PASSWORD};answermode=auto;regint=600\n");
        std::fs::write(conf.join("accounts"), account).expect("baresip accounts");
        let log = dir.join("baresip.log");
        let out = std::fs::File::create(&log).expect("baresip log");
        let err = out.try_clone().expect("baresip log");
        // `-s`: SIP trace in the log, for the assertions and for whoever reads a failure.
        let child = Command::new("baresip")
            .args(["-s", "-f"])
            .arg(&conf)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("run baresip");
        Phone { child: Some(child), addr, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks it to quit (SIGTERM: it unregisters, then exits) and waits for the exit.
    fn quit(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("baresip did not quit within 10 s:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn registration_status(server: &support::Server, key: &str, connection: &str) -> Value {
    let path = format!("/v2/credential_connections/{connection}/actions/check_registration_status");
    let (code, status) = api(server, "POST", &path, key, None);
    assert_eq!(code, 200, "{status}");
    status["data"].clone()
}

#[test]
fn baresip_registers_answers_its_numbers_call_and_after_quitting_the_call_gets_rg1() {
    if !sipp_available() || !baresip_available() {
        return;
    }
    let server = start_switch("");
    let before = generations(&server);
    let account = account(&server, "acme", None);
    origination_carrier(&server, CARRIER_IP);
    let conn = create(
        &server,
        "/v2/credential_connections",
        &account.key,
        json!({"connection_name": "phones", "user_name": USER, "password": PASSWORD}),
    );
    let conn = id(&conn);
    phone_number(&server, &account, NUMBER, &conn);
    wait_config_applied(&server, before);
    let dir = work_dir("baresip");

    let mut phone = Phone::start(&dir, server.sip);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        let status = registration_status(&server, &account.key, &conn);
        if status["status"] == "Registered" {
            break status;
        }
        assert!(Instant::now() < deadline, "baresip did not register ({status}):\n{}", phone.output());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (&status["ip_address"], &status["port"]),
        (&json!(PHONE_IP), &json!(phone.addr.port())),
        "the registration is baresip's: {status}"
    );
    let log = phone.output();
    assert!(log.contains("401 Unauthorized"), "the REGISTER was challenged first:\n{log}");
    assert!(log.contains("Authorization: Digest"), "baresip answered the digest challenge:\n{log}");

    let carrier = Sipp::pbx(&dir, "carrier", "pbx_call.xml", &server, CARRIER_IP, NUMBER).run();
    carrier.assert_succeeded("the carrier's call, answered by baresip", 1);
    let cdr = wait_for(Duration::from_secs(10), "the inbound call's record", || {
        cdrs(&server, &format!("&filter[connection_id]={conn}")).into_iter().next()
    });
    assert_eq!(cdr["sip_response_code"], json!(200), "{cdr}");
    let attempts = cdr["route_attempts"].as_array().cloned().unwrap_or_default();
    assert_eq!(attempts.len(), 1, "{cdr}");
    assert_eq!(attempts[0]["target"], json!(phone.addr.to_string()), "the call went to baresip: {cdr}");
    let log = phone.output();
    assert!(log.contains("INVITE sip:"), "baresip got the INVITE:\n{log}");
    assert!(log.contains("Call established"), "baresip answered:\n{log}");

    // Quitting unregisters: nobody takes the number's calls.
    phone.quit();
    let status = wait_for(Duration::from_secs(10), "baresip unregistered", || {
        Some(registration_status(&server, &account.key, &conn)).filter(|s| s["status"] != "Registered")
    });
    assert_eq!(status["status"], "Not Registered", "{status}");
    let refused = Sipp::pbx(&dir, "carrier-2", "pbx_refused.xml", &server, CARRIER_IP, NUMBER).run();
    refused.assert_succeeded("the refused call", 1);
    let last = refused.last_final().unwrap_or_default();
    assert!(last.starts_with("SIP/2.0 480 User not registered RG1"), "{last}");
}
