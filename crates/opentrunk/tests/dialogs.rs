//! The answered call's life through `opentrunk serve`, with real peers on loopback: hold and
//! resume by re-INVITE, an UPDATE, INFO and OPTIONS relayed in the carrier's own dialog with
//! their bodies unchanged; requests naming no dialog of ours answered 481; Max-Forwards and
//! loop detection (483, P93); and SIGTERM with a call up: both legs get a BYE, the server exits
//! 0 and the call's record is found by the next start on the same database.
//!
//! SIPp plays the PBX and the carrier (scenarios `tests/sipp/dlg_*.xml`); the forged requests
//! are written by hand and sent from a plain UDP socket. Skipped with one line when SIPp is
//! missing, except where `OPENTRUNK_REQUIRE_SIPP=1` (CI).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::json;

mod peers;
mod support;

use peers::*;

/// A switch with an account, its profile, a carrier and an address-only IP connection at
/// [`PBX_IP`], everything applied.
struct Platform {
    server: support::Server,
    connection: String,
    dir: std::path::PathBuf,
}

impl Platform {
    /// `gateway`: where the carrier's single gateway is.
    fn new(server: support::Server, test: &str, gateway: SocketAddr) -> Platform {
        let before = generations(&server);
        let account = account(&server, "acme", None);
        let profile = profile(&server, &account, None);
        carrier(&server, "upstream", &[gateway], None, None);
        let conn = ip_connection(&server, &account, "pbx", PBX_IP, json!({"outbound_voice_profile_id": profile}));
        wait_config_applied(&server, before);
        Platform { server, connection: id(&conn), dir: work_dir(test) }
    }
}

// ---------------------------------------------------------------------------------------------
// SIPp's message log, message by message.

/// One message of a SIPp `-trace_msg` log.
#[derive(Debug)]
struct Traced {
    received: bool,
    text: String,
}

impl Traced {
    fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    fn is_request(&self, method: &str) -> bool {
        self.start_line().starts_with(&format!("{method} ")) && self.start_line().ends_with(" SIP/2.0")
    }

    fn status(&self) -> Option<u16> {
        self.start_line().strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    /// A header's value (full or compact name), the first of its lines.
    fn header(&self, name: &str) -> Option<&str> {
        let compact = match name.to_ascii_lowercase().as_str() {
            "call-id" => Some("i"),
            "from" => Some("f"),
            "to" => Some("t"),
            "via" => Some("v"),
            "content-type" => Some("c"),
            "content-length" => Some("l"),
            _ => None,
        };
        self.head().lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            let n = n.trim();
            (n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))).then(|| v.trim())
        })
    }

    fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or_else(|| panic!("no Call-ID in {}", self.text))
    }

    /// The `tag` parameter of From or To.
    fn tag(&self, header: &str) -> Option<&str> {
        let v = self.header(header)?;
        let params = v.rsplit_once('>').map_or(v, |(_, p)| p);
        params.split(';').find_map(|p| p.trim().strip_prefix("tag="))
    }

    /// `CSeq`: number and method.
    fn cseq(&self) -> (u32, String) {
        let v = self.header("CSeq").unwrap_or_else(|| panic!("no CSeq in {}", self.text));
        let (n, m) = v.split_once(' ').unwrap_or_else(|| panic!("CSeq {v:?}"));
        (n.trim().parse().unwrap_or_else(|_| panic!("CSeq {v:?}")), m.trim().to_owned())
    }

    fn head(&self) -> &str {
        self.text.split_once("\r\n\r\n").or_else(|| self.text.split_once("\n\n")).map_or(&self.text, |(h, _)| h)
    }

    /// The body, exactly its Content-Length bytes.
    fn body(&self) -> &str {
        let len: usize = self.header("Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let rest = self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        rest.get(..len).unwrap_or_else(|| panic!("a body shorter than its Content-Length {len}: {}", self.text))
    }
}

/// Every message of a SIPp message log, in order. Each entry starts with a line of dashes and
/// a timestamp, then `UDP message sent (N bytes):` or `UDP message received [N] bytes :`, a
/// blank line and the message as it went on the wire.
fn traced(run: &SippRun) -> Vec<Traced> {
    let mut out = Vec::new();
    for entry in run.messages.split("----------------------------------------------- ").skip(1) {
        let Some((_stamp, rest)) = entry.split_once('\n') else { continue };
        let Some((what, message)) = rest.split_once('\n') else { continue };
        let received = what.contains("received");
        assert!(received || what.contains("sent"), "not a SIPp message log entry: {what:?}");
        let text = message.trim_start_matches(['\r', '\n']).to_owned();
        out.push(Traced { received, text });
    }
    out
}

fn received<'a>(msgs: &'a [Traced], method: &str) -> Vec<&'a Traced> {
    msgs.iter().filter(|m| m.received && m.is_request(method)).collect()
}

fn sent<'a>(msgs: &'a [Traced], method: &str) -> Vec<&'a Traced> {
    msgs.iter().filter(|m| !m.received && m.is_request(method)).collect()
}

/// The first response with `status` to the request whose CSeq is `cseq`, sent or received.
fn response(msgs: &[Traced], received: bool, status: u16, cseq: u32) -> &Traced {
    msgs.iter().find(|m| m.received == received && m.status() == Some(status) && m.cseq().0 == cseq).unwrap_or_else(
        || {
            let lines: Vec<&str> = msgs.iter().map(Traced::start_line).collect();
            panic!("no {status} to CSeq {cseq} (received: {received}) among {lines:#?}")
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Hand-written requests over a plain UDP socket.

/// A UDP socket of our own on `ip`, to forge requests with.
struct Forger {
    socket: UdpSocket,
    local: SocketAddr,
    switch: SocketAddr,
}

impl Forger {
    fn new(ip: &str, switch: SocketAddr) -> Forger {
        let socket = UdpSocket::bind((ip, 0)).expect("bind a UDP socket");
        let local = socket.local_addr().expect("local address");
        Forger { socket, local, switch }
    }

    /// A request with the usual headers; `extra` lines and `body` (SDP when not empty) as given.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        method: &str,
        uri: &str,
        branch: &str,
        call_id: &str,
        from_tag: &str,
        to_tag: Option<&str>,
        cseq: u32,
        max_forwards: u32,
        body: &str,
    ) -> String {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let content_type = if body.is_empty() { String::new() } else { "Content-Type: application/sdp\r\n".to_owned() };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: {max_forwards}\r\nFrom: <sip:{CALLER}@{local}>;tag={from_tag}\r\n\
             To: <sip:{DESTINATION}@{switch}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:pbx@{local}>\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
            body.len(),
            local = self.local,
            switch = self.switch,
        )
    }

    /// Sends `msg` and returns the first final response carrying `call_id` (provisional ones
    /// are skipped), or `None` after 3 s.
    fn send_for_final(&self, msg: &str, call_id: &str) -> Option<String> {
        self.socket.send_to(msg.as_bytes(), self.switch).expect("send");
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 65_536];
        while Instant::now() < deadline {
            self.socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            let Ok(n) = self.socket.recv(&mut buf) else { continue };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let status: Option<u16> =
                text.strip_prefix("SIP/2.0 ").and_then(|s| s.get(..3)).and_then(|s| s.parse().ok());
            let ours = text.lines().any(|l| l.strip_prefix("Call-ID:").is_some_and(|v| v.trim() == call_id));
            if ours && status.is_some_and(|s| s >= 200) {
                return Some(text);
            }
        }
        None
    }

    /// The ACK of a non-2xx final answer to `invite` (RFC 3261 section 17.1.1.3: its branch,
    /// the To of the response), so the switch stops retransmitting.
    fn ack(&self, invite: &str, response: &str) {
        let line = |msg: &str, name: &str| {
            msg.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {msg}")).to_owned()
        };
        let uri = invite.split(' ').nth(1).expect("Request-URI");
        let cseq = line(invite, "CSeq:").replace("INVITE", "ACK");
        let ack = format!(
            "ACK {uri} SIP/2.0\r\n{}\r\nMax-Forwards: 70\r\n{}\r\n{}\r\n{}\r\n{cseq}\r\nContent-Length: 0\r\n\r\n",
            line(invite, "Via:"),
            line(invite, "From:"),
            line(response, "To:"),
            line(invite, "Call-ID:"),
        );
        self.socket.send_to(ack.as_bytes(), self.switch).expect("send ACK");
    }
}

/// The status line of a response.
fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

const SDP: &str = "v=0\r\no=- 7 7 IN IP4 127.0.0.7\r\ns=-\r\nc=IN IP4 127.0.0.7\r\nt=0 0\r\n\
                   m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

// ---------------------------------------------------------------------------------------------

#[test]
fn an_answered_call_is_held_resumed_updated_and_hung_up_in_both_dialogs() {
    if !sipp_available() {
        return;
    }
    let dir = work_dir("hold");
    let (gateway, at) = Running::gateway(&dir, "carrier", "dlg_gw_hold.xml", GATEWAY_1_IP, Some(1));
    let p = Platform::new(start_switch(""), "hold", at);

    let pbx = Sipp::pbx(&p.dir, "pbx", "dlg_pbx_hold.xml", &p.server, PBX_IP, DESTINATION).run();
    let carrier_side = gateway.wait(Duration::from_secs(15));
    pbx.assert_succeeded("the PBX: hold, resume, UPDATE, INFO, OPTIONS, BYE", 1);
    carrier_side.assert_succeeded("the carrier: held, resumed, updated, hung up", 1);

    let (a, b) = (traced(&pbx), traced(&carrier_side));
    let a_invite = sent(&a, "INVITE");
    let b_invite = received(&b, "INVITE");
    assert_eq!((a_invite.len(), b_invite.len()), (3, 3), "the INVITE, hold and resume on each leg");
    let (a_call, b_call) = (a_invite[0].call_id(), b_invite[0].call_id());
    assert_ne!(a_call, b_call, "the B-leg is a dialog of its own");
    let b_from_tag = b_invite[0].tag("From").expect("the switch's B-leg From tag").to_owned();
    assert_ne!(Some(b_from_tag.as_str()), a_invite[0].tag("From"), "the B-leg's From tag is the switch's own");
    let b_answer = response(&b, false, 200, b_invite[0].cseq().0);
    let gw_tag = b_answer.tag("To").expect("the carrier's To tag").to_owned();

    // Every request relayed to the carrier is in its dialog: its Call-ID, our From tag, its To
    // tag, CSeq rising; and what the PBX put in the body is what the carrier gets.
    let mut last_cseq = b_invite[0].cseq().0;
    for (method, count) in [("INVITE", 3), ("ACK", 3), ("UPDATE", 1), ("INFO", 1), ("OPTIONS", 1), ("BYE", 1)] {
        let from_pbx = sent(&a, method);
        let at_carrier = received(&b, method);
        assert_eq!(at_carrier.len(), count, "{method}s at the carrier: {:#?}", at_carrier);
        assert_eq!(from_pbx.len(), count, "{method}s from the PBX");
        for (i, (ours, theirs)) in from_pbx.iter().zip(&at_carrier).enumerate() {
            assert_eq!(theirs.call_id(), b_call, "{method} #{i} in the B dialog: {}", theirs.text);
            assert_eq!(theirs.tag("From"), Some(b_from_tag.as_str()), "{method} #{i}: {}", theirs.text);
            if method != "INVITE" || i > 0 {
                assert_eq!(theirs.tag("To"), Some(gw_tag.as_str()), "{method} #{i} names the carrier's tag");
                assert!(!theirs.text.contains(a_call), "nothing of the A-leg's Call-ID reaches the carrier");
                assert_eq!(
                    theirs.header("Content-Type").is_some(),
                    ours.header("Content-Type").is_some(),
                    "{method} #{i}"
                );
                assert_eq!(theirs.body(), ours.body(), "{method} #{i}: the body passes unchanged");
            }
            if method != "ACK" && (method != "INVITE" || i > 0) {
                let (n, m) = theirs.cseq();
                assert_eq!(m, method);
                assert!(n > last_cseq, "{method} #{i}: CSeq {n} after {last_cseq} in the B dialog");
                last_cseq = n;
            }
        }
    }
    let hold_body = received(&b, "INVITE")[1].body();
    assert!(hold_body.contains("a=sendonly"), "the hold offer: {hold_body}");

    // The carrier's answers reach the PBX in the A dialog, their SDP unchanged.
    let (b_reinvites, b_update) = (received(&b, "INVITE"), received(&b, "UPDATE"));
    let answers =
        [(2, b_reinvites[1], "a=recvonly"), (3, b_reinvites[2], "a=sendrecv"), (4, b_update[0], "a=sendrecv")];
    for (a_cseq, relayed, direction) in answers {
        let to_pbx = response(&a, true, 200, a_cseq);
        let from_carrier = response(&b, false, 200, relayed.cseq().0);
        assert_eq!(to_pbx.call_id(), a_call, "the answer to CSeq {a_cseq} is in the A dialog");
        assert_eq!(to_pbx.tag("From"), a_invite[0].tag("From"));
        assert_eq!(to_pbx.body(), from_carrier.body(), "the carrier's answer to CSeq {a_cseq} passes unchanged");
        assert!(to_pbx.body().contains(direction), "CSeq {a_cseq}: {}", to_pbx.body());
    }

    let cdr = wait_cdr(&p.server, &p.connection, a_call);
    assert_eq!(cdr["sip_response_code"], 200, "{cdr}");
    assert_eq!(cdr["hangup_source"], "caller", "{cdr}");
    assert_eq!(cdr["b_leg_call_id"], b_call, "{cdr}");
}

#[test]
fn requests_naming_no_dialog_of_ours_get_481() {
    let server = support::Server::start(&[]);
    let forger = Forger::new("127.0.0.7", server.sip);
    let uri = format!("sip:{DESTINATION}@{}", server.sip);

    let bye = forger.request("BYE", &uri, "bye1", "no-such-call-1@127.0.0.7", "f1", Some("t1"), 2, 70, "");
    let resp = forger.send_for_final(&bye, "no-such-call-1@127.0.0.7").expect("an answer to the BYE");
    assert_eq!(status_line(&resp), "SIP/2.0 481 Call/Transaction Does Not Exist", "{resp}");
    assert!(resp.contains("CSeq: 2 BYE"), "{resp}");

    // A re-INVITE (a To tag) of a dialog that does not exist is not a new call.
    let call_id = "no-such-call-2@127.0.0.7";
    let reinvite = forger.request("INVITE", &uri, "reinv1", call_id, "f2", Some("unknown-tag"), 2, 70, SDP);
    let resp = forger.send_for_final(&reinvite, call_id).expect("an answer to the re-INVITE");
    assert_eq!(status_line(&resp), "SIP/2.0 481 Call/Transaction Does Not Exist", "{resp}");
    forger.ack(&reinvite, &resp);
}

#[test]
fn max_forwards_0_gets_483_1_gets_p93_and_our_own_b_leg_coming_back_gets_p93() {
    let server = start_switch("");
    let forger = Forger::new("127.0.0.7", server.sip);
    let uri = format!("sip:{DESTINATION}@{}", server.sip);
    let cases = [(0, "mf0", "SIP/2.0 483 Too Many Hops"), (1, "mf1", "SIP/2.0 403 Hop count exceeded P93")];
    for (hops, name, want) in cases {
        let call_id = format!("{name}@127.0.0.7");
        let invite = forger.request("INVITE", &uri, name, &call_id, name, None, 1, hops, SDP);
        let resp =
            forger.send_for_final(&invite, &call_id).unwrap_or_else(|| panic!("no answer at Max-Forwards {hops}"));
        assert_eq!(status_line(&resp), want, "Max-Forwards {hops}: {resp}");
        forger.ack(&invite, &resp);
    }

    // A carrier whose gateway is the switch itself: the B-leg comes back as a new call.
    let before = generations(&server);
    let account = account(&server, "acme", None);
    let profile = profile(&server, &account, None);
    carrier(&server, "ourselves", &[server.sip], None, None);
    let conn = ip_connection(&server, &account, "pbx", "127.0.0.7", json!({"outbound_voice_profile_id": profile}));
    wait_config_applied(&server, before);
    let call_id = "loop@127.0.0.7";
    let invite = forger.request("INVITE", &uri, "loop", call_id, "loop", None, 1, 70, SDP);
    let resp = forger.send_for_final(&invite, call_id).expect("an answer to the looping call");
    forger.ack(&invite, &resp);
    assert_eq!(status_line(&resp), "SIP/2.0 403 Hop count exceeded P93", "the loop is refused: {resp}");
    let cdr = wait_cdr(&server, &id(&conn), call_id);
    let attempts = cdr["route_attempts"].as_array().unwrap_or_else(|| panic!("route_attempts: {cdr}"));
    assert_eq!(attempts.len(), 1, "{cdr}");
    assert_eq!(attempts[0]["sip_response_code"], 403, "the B-leg came back and was refused P93: {cdr}");
}

#[test]
fn sigterm_with_a_call_up_hangs_up_both_legs_exits_0_and_keeps_the_record() {
    if !sipp_available() {
        return;
    }
    let db = std::env::temp_dir().join(format!("ot-dlg-sigterm-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm", ".cdr-spool"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let url = format!("sqlite://{}", db.display());
    let toml = "[calls]\ntimeout_1xx_secs = 2\ntimeout_2xx_secs = 3\nmax_duration_secs = 60\n\
                [sip]\ndrain_timeout_secs = 2\n";
    let log = std::env::var("OPENTRUNK_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let env =
        [("OPENTRUNK_ADMIN_API_KEY", OPERATOR_KEY), ("OPENTRUNK_LOG", log.as_str()), ("OPENTRUNK_DATABASE_URL", &url)];

    let dir = work_dir("sigterm");
    let (gateway, at) = Running::gateway(&dir, "carrier", "dlg_gw_held.xml", GATEWAY_1_IP, Some(1));
    let mut p = Platform::new(support::Server::start_with_config(toml, &env), "sigterm", at);
    let a_call = format!("dlg-held-1@{PBX_IP}");
    let pbx = Sipp::pbx(&p.dir, "pbx", "dlg_pbx_held.xml", &p.server, PBX_IP, DESTINATION)
        .args(["-cid_str", "dlg-held-%u@%s"])
        .spawn();
    let live = wait_for(Duration::from_secs(10), "the call answered", || {
        let (_, v) =
            api(&p.server, "GET", &format!("/v2/connections/{}/active_calls", p.connection), OPERATOR_KEY, None);
        v["data"].as_array().filter(|calls| calls.len() == 1).map(|calls| calls[0].clone())
    });
    // The live call as the API reports it, by its call control id.
    let id = live["call_control_id"].as_str().unwrap_or_else(|| panic!("call_control_id: {live}")).to_owned();
    let (code, call) = api(&p.server, "GET", &format!("/v2/calls/{id}"), OPERATOR_KEY, None);
    assert_eq!(code, 200, "{call}");
    assert_eq!((&call["data"]["is_alive"], &call["data"]["call_control_id"]), (&json!(true), &json!(id)), "{call}");
    // Answered once the ACK is through: the carrier's log shows it.
    wait_for(Duration::from_secs(10), "the ACK at the carrier", || {
        let log = std::fs::read_to_string(dir.join("carrier.messages")).unwrap_or_default();
        log.lines().any(|l| l.starts_with("ACK ")).then_some(())
    });

    // Requests naming the call with a To tag that is not the switch's are outside any dialog.
    let forger = Forger::new(PBX_IP, p.server.sip);
    let uri = format!("sip:{DESTINATION}@{}", p.server.sip);
    let from_tag = "dlgpbx1";
    let reinvite = forger.request("INVITE", &uri, "wrongtag1", &a_call, from_tag, Some("not-the-switch"), 2, 70, SDP);
    let resp = forger.send_for_final(&reinvite, &a_call).expect("an answer to the re-INVITE");
    assert_eq!(status_line(&resp), "SIP/2.0 481 Call/Transaction Does Not Exist", "{resp}");
    forger.ack(&reinvite, &resp);
    let bye = forger.request("BYE", &uri, "wrongtag2", &a_call, from_tag, Some("not-the-switch"), 3, 70, "");
    let resp = forger.send_for_final(&bye, &a_call).expect("an answer to the BYE");
    assert_eq!(status_line(&resp), "SIP/2.0 481 Call/Transaction Does Not Exist", "{resp}");
    assert_eq!(metric(&p.server, "opentrunk_calls_active"), Some(1.0), "the forged BYE ended nothing");

    let sigterm = Instant::now();
    let _ = std::process::Command::new("kill").args(["-TERM", &p.server.child.id().to_string()]).status();
    std::thread::sleep(Duration::from_millis(300));
    let prober = UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert_eq!(p.server.options_ping(&prober, 1), Some(503), "draining: new requests are turned away");
    let status = p.server.terminate(Duration::from_secs(20)).expect("the server exits after its drain");
    let took = sigterm.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        took >= Duration::from_millis(1500),
        "the drain waits for the call up to its timeout: exited after {took:?}"
    );

    let pbx = pbx.wait(Duration::from_secs(10));
    pbx.assert_succeeded("the PBX, hung up by the switch", 1);
    let carrier_side = gateway.wait(Duration::from_secs(10));
    carrier_side.assert_succeeded("the carrier, hung up by the switch", 1);
    let byes = received(&traced(&pbx), "BYE").iter().map(|m| m.call_id().to_owned()).collect::<Vec<_>>();
    assert_eq!(byes, vec![a_call.clone()], "the PBX's BYE is in its dialog");
    let b = traced(&carrier_side);
    let b_call = received(&b, "INVITE").first().map(|m| m.call_id().to_owned()).expect("the carrier's INVITE");
    let byes = received(&b, "BYE").iter().map(|m| m.call_id().to_owned()).collect::<Vec<_>>();
    assert_eq!(byes, vec![b_call], "the carrier's BYE is in its dialog");

    // The next start on the same database finds the record.
    let server = support::Server::start_with_config(toml, &env);
    let cdr = wait_cdr(&server, &p.connection, &a_call);
    assert_eq!(cdr["sip_response_code"], 200, "{cdr}");
    assert_eq!(cdr["hangup_source"], "system", "{cdr}");
    assert!(cdr["answered_at"].is_string() && cdr["ended_at"].is_string(), "{cdr}");
    drop(server);
    for suffix in ["", "-wal", "-shm", ".cdr-spool"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}
