//! The registrar with a device on loopback: a SIP user agent (a UDP socket here, speaking plain
//! RFC 3261, answering the digest challenge with `trunking::digest::authorization` as a phone
//! does) registers to a credential connection, the API reports it registered, a carrier's call
//! to the connection's number rings it (SIPp as the carrier), and after it unregisters the same
//! call gets `480 User not registered RG1`.
//!
//! Skipped with one line when SIPp is missing, except where `OPENTRUNK_REQUIRE_SIPP=1` (CI).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use sip::headers::HeaderName;
use sip::{Framing, Message, Method};

mod peers;
mod support;

use peers::*;

const CARRIER_IP: &str = "127.0.0.2";
const DEVICE_IP: &str = "127.0.0.3";
const NUMBER: &str = "+12125550123";
const USER: &str = "alice2024";
const PASSWORD: &str = "correct-horse-battery";

/// The account's credential connection for its phones (user [`USER`], password [`PASSWORD`])
/// with `inbound` settings.
fn phones(server: &support::Server, account: &Account, inbound: serde_json::Value) -> serde_json::Value {
    let body = json!({"connection_name": "phones", "user_name": USER, "password": PASSWORD, "inbound": inbound});
    create(server, "/v2/credential_connections", &account.key, body)
}

/// A phone: one UDP socket, registering and taking calls.
struct Device {
    sock: UdpSocket,
    server: SocketAddr,
    cseq: u32,
}

impl Device {
    fn new(server: SocketAddr) -> Device {
        let sock = UdpSocket::bind((DEVICE_IP, 0)).expect("bind the device");
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Device { sock, server, cseq: 0 }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn recv(&self) -> Message {
        let mut buf = [0u8; 65_535];
        let (n, _) = self.sock.recv_from(&mut buf).expect("a message for the device");
        Message::parse(Bytes::copy_from_slice(&buf[..n]), Framing::Datagram).expect("the switch sends valid SIP")
    }

    fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.server).unwrap();
    }

    fn register_once(&mut self, expires: u32, authorization: Option<&str>) -> Message {
        self.cseq += 1;
        let me = self.addr();
        let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        self.send(&format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{USER}@{server}>;tag=dev1\r\nTo: <sip:{USER}@{server}>\r\n\
             Call-ID: registration-1@{me}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{USER}@{me}>\r\n\
             Expires: {expires}\r\nUser-Agent: loopback-phone\r\n{auth}Content-Length: 0\r\n\r\n",
            server = self.server,
            cseq = self.cseq,
        ));
        loop {
            let m = self.recv();
            if m.status().is_some_and(|s| s >= 200) {
                return m;
            }
        }
    }

    /// REGISTER, answer the challenge, return the final answer.
    fn register(&mut self, expires: u32) -> Message {
        let challenge = self.register_once(expires, None);
        assert_eq!(challenge.status(), Some(401), "a registration is challenged first");
        let header = challenge.header(HeaderName::WwwAuthenticate).expect("WWW-Authenticate").to_owned();
        let parsed = sip::Auth::parse(&header).expect("a digest challenge");
        let uri = format!("sip:{}", self.server);
        let answer = trunking::digest::authorization(&parsed, "REGISTER", &uri, USER, PASSWORD, "0a4f113b", 1)
            .expect("an answerable challenge");
        self.register_once(expires, Some(&answer))
    }

    /// Takes one call: 180, 200 with SDP, the ACK, then the caller's BYE with its 200.
    fn answer_a_call(&self) -> Message {
        let invite = self.recv();
        assert_eq!(invite.method(), Some(Method::Invite), "{invite:?}");
        self.answer(invite)
    }

    /// The next INVITE, answered `180 Ringing` (which also stops its retransmissions, and
    /// lets the switch CANCEL it).
    fn ringing(&self) -> Message {
        let invite = self.recv();
        assert_eq!(invite.method(), Some(Method::Invite), "{invite:?}");
        let ringing = invite.response_to(180, "Ringing", Some("device-tag"));
        self.sock.send_to(&ringing.to_bytes(), self.server).unwrap();
        invite
    }

    /// Its CANCEL comes: 200 for it, 487 for the INVITE, then the ACK of the 487.
    fn cancelled(&self, invite: &Message) {
        let cancel = loop {
            let m = self.recv();
            if m.method() != Some(Method::Invite) {
                break m; // past retransmissions of the INVITE
            }
        };
        assert_eq!(cancel.method(), Some(Method::Cancel), "{cancel:?}");
        assert_eq!(cancel.call_id().ok(), invite.call_id().ok());
        self.sock.send_to(&cancel.response_to(200, "OK", Some("device-tag")).to_bytes(), self.server).unwrap();
        let terminated = invite.response_to(487, "Request Terminated", Some("device-tag"));
        self.sock.send_to(&terminated.to_bytes(), self.server).unwrap();
        // Retransmissions of the CANCEL (it waited in the socket while the other phone took
        // the call) are answered again; the ACK of the 487 ends it.
        loop {
            let m = self.recv();
            match m.method() {
                Some(Method::Ack) => return,
                Some(Method::Cancel) => {
                    self.sock.send_to(&m.response_to(200, "OK", Some("device-tag")).to_bytes(), self.server).unwrap();
                }
                Some(Method::Invite) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Answers `invite` and sees the call through to the caller's BYE.
    fn answer(&self, invite: Message) -> Message {
        let reply = |status: u16, reason: &str, body: &str| {
            let mut r = invite.response_to(status, reason, Some("device-tag"));
            r.push_header(HeaderName::Contact, &format!("<sip:{USER}@{}>", self.addr()));
            if !body.is_empty() {
                r.set_body(Bytes::from(body.to_owned()), Some("application/sdp"));
            }
            self.sock.send_to(&r.to_bytes(), self.server).unwrap();
        };
        reply(180, "Ringing", "");
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 {DEVICE_IP}\r\ns=-\r\nc=IN IP4 {DEVICE_IP}\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
        );
        reply(200, "OK", &sdp);
        let mut saw_ack = false;
        loop {
            let m = self.recv();
            match m.method() {
                Some(Method::Ack) => saw_ack = true,
                Some(Method::Bye) => {
                    assert!(saw_ack, "the ACK came before the BYE");
                    let ok = m.response_to(200, "OK", None);
                    self.sock.send_to(&ok.to_bytes(), self.server).unwrap();
                    return invite;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn a_registered_device_takes_its_numbers_calls_and_an_unregistered_one_gets_rg1() {
    if !sipp_available() {
        return;
    }
    let server = start_switch("");
    let before = generations(&server);
    let account = account(&server, "acme", None);
    origination_carrier(&server, CARRIER_IP);
    let conn = phones(&server, &account, json!({}));
    phone_number(&server, &account, NUMBER, &id(&conn));
    wait_config_applied(&server, before);

    let mut device = Device::new(server.sip);
    let ok = device.register(600);
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    let contact = ok.header(HeaderName::Contact).expect("the bound contact");
    assert!(contact.contains(&device.addr().to_string()) && contact.contains("expires="), "{contact}");

    // The binding is answered from memory and stored just after: the API sees it within moments.
    let path = format!("/v2/credential_connections/{}/actions/check_registration_status", id(&conn));
    wait_for(Duration::from_secs(5), "the stored registration", || {
        let (code, status) = api(&server, "POST", &path, &account.key, None);
        assert_eq!(code, 200, "{status}");
        (status["data"]["status"] == "Registered").then_some(())
    });

    let dir = work_dir("registrar");
    let carrier = Sipp::pbx(&dir, "carrier", "pbx_call.xml", &server, CARRIER_IP, NUMBER).spawn();
    let invite = device.answer_a_call();
    assert!(
        invite.request_uri_str().is_some_and(|u| u.starts_with(&format!("sip:{USER}@{}", device.addr()))),
        "the call is sent to the registered contact: {:?}",
        invite.request_uri_str()
    );
    carrier.wait(Duration::from_secs(30)).assert_succeeded("the carrier's call to the registered device", 1);

    // Unregistered: nobody takes the number's calls.
    let gone = device.register(0);
    assert_eq!(gone.status(), Some(200), "{gone:?}");
    assert!(gone.header(HeaderName::Contact).is_none(), "no contact left: {gone:?}");
    let refused = Sipp::pbx(&dir, "carrier-2", "pbx_refused.xml", &server, CARRIER_IP, NUMBER).run();
    refused.assert_succeeded("the refused call", 1);
    let last = refused.last_final().unwrap_or_default();
    assert!(last.starts_with("SIP/2.0 480 User not registered RG1"), "{last}");
}

/// The caller of a SIP URI call: an address, and whether it is the same account's PBX, another
/// account's, or nobody's.
const SAME_ACCOUNT_PBX: &str = "127.0.0.4";
const OTHER_ACCOUNT_PBX: &str = "127.0.0.5";
const OUTSIDER: &str = "127.0.0.8";

/// A caller's address, and the status line it gets (`None`: the device rings).
type Expect = (&'static str, Option<&'static str>);

#[test]
fn sip_uri_calls_reach_the_device_as_its_preference_allows() {
    if !sipp_available() {
        return;
    }
    let server = start_switch("");
    let mut before = generations(&server);
    let other = account(&server, "globex", None);
    let account = account(&server, "acme", None);
    let conn = phones(&server, &account, json!({}));
    for (a, ip, name) in [(&account, SAME_ACCOUNT_PBX, "acme-pbx"), (&other, OTHER_ACCOUNT_PBX, "globex-pbx")] {
        let c = create(&server, "/v2/ip_connections", &a.key, json!({"connection_name": name}));
        create(&server, "/v2/ips", &a.key, json!({"connection_id": id(&c), "ip_address": ip}));
    }
    wait_config_applied(&server, before);
    let mut device = Device::new(server.sip);
    assert_eq!(device.register(600).status(), Some(200));
    let dir = work_dir("uri-calling");

    // Every caller in every mode: whether the device rings, else the final status line.
    let rows: [(&str, [Expect; 3]); 3] = [
        (
            "disabled",
            [
                (SAME_ACCOUNT_PBX, Some("403 Invalid SIP URI D30")),
                (OTHER_ACCOUNT_PBX, Some("403 Invalid SIP URI D30")),
                (OUTSIDER, Some("403 Invalid SIP URI D30")),
            ],
        ),
        // `internal` asks a caller nothing identifies for credentials (a device of the same
        // account may prove itself that way); the outsider has none to give.
        (
            "internal",
            [(SAME_ACCOUNT_PBX, None), (OTHER_ACCOUNT_PBX, Some("403 Invalid SIP URI D30")), (OUTSIDER, Some("407"))],
        ),
        ("unrestricted", [(SAME_ACCOUNT_PBX, None), (OTHER_ACCOUNT_PBX, None), (OUTSIDER, None)]),
    ];
    for (mode, callers) in rows {
        before = generations(&server);
        let path = format!("/v2/credential_connections/{}", id(&conn));
        let (code, body) =
            api(&server, "PATCH", &path, &account.key, Some(&json!({"sip_uri_calling_preference": mode})));
        assert_eq!(code, 200, "{body}");
        wait_config_applied(&server, before);
        for (ip, refused) in callers {
            let name = format!("{mode}-{ip}");
            match refused {
                Some(status) => {
                    let run = Sipp::pbx(&dir, &name, "pbx_refused.xml", &server, ip, USER).run();
                    run.assert_succeeded(&name, 1);
                    let last = run.last_final().unwrap_or_default();
                    assert!(last.starts_with(&format!("SIP/2.0 {status}")), "{mode} from {ip}: {last}");
                }
                None => {
                    let caller = Sipp::pbx(&dir, &name, "pbx_call.xml", &server, ip, USER).spawn();
                    let invite = device.answer_a_call();
                    assert!(invite.request_uri_str().is_some_and(|u| u.contains(&device.addr().to_string())));
                    caller.wait(Duration::from_secs(30)).assert_succeeded(&name, 1);
                }
            }
        }
    }
}

#[test]
fn simultaneous_ringing_rings_every_device_and_the_first_answer_wins() {
    if !sipp_available() {
        return;
    }
    let server = start_switch("");
    let before = generations(&server);
    let account = account(&server, "acme", None);
    origination_carrier(&server, CARRIER_IP);
    let conn = phones(&server, &account, json!({"simultaneous_ringing": "enabled"}));
    phone_number(&server, &account, NUMBER, &id(&conn));
    wait_config_applied(&server, before);
    let mut desk = Device::new(server.sip);
    let mut mobile = Device::new(server.sip);
    assert_eq!(desk.register(600).status(), Some(200));
    assert_eq!(mobile.register(600).status(), Some(200));

    let dir = work_dir("simultaneous-ringing");
    let carrier = Sipp::pbx(&dir, "carrier", "pbx_call.xml", &server, CARRIER_IP, NUMBER).spawn();
    let at_desk = desk.ringing();
    let at_mobile = mobile.ringing();
    assert_ne!(at_desk.call_id().ok(), None);
    // The mobile answers first: the desk phone's ringing is cancelled.
    mobile.answer(at_mobile);
    desk.cancelled(&at_desk);
    carrier.wait(Duration::from_secs(30)).assert_succeeded("the carrier's call", 1);
}

#[test]
fn guessing_a_password_is_turned_away_for_a_while() {
    if !sipp_available() {
        return;
    }
    let server = start_switch("");
    let before = generations(&server);
    let account = account(&server, "acme", None);
    phones(&server, &account, json!({}));
    wait_config_applied(&server, before);
    let device = Device::new(server.sip);
    let me = device.addr();
    let invite = |n: u32, auth: &str| {
        format!(
            "INVITE sip:+12125550123@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKguess{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{USER}@{server}>;tag=g{n}\r\nTo: <sip:+12125550123@{server}>\r\n\
             Call-ID: guess-{n}@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:{USER}@{me}>\r\n{auth}Content-Length: 0\r\n\r\n",
            server = server.sip,
        )
    };
    let final_of = |device: &Device| loop {
        let m = device.recv();
        if m.status().is_some_and(|s| s >= 200) {
            return m;
        }
    };
    device.send(&invite(0, ""));
    let challenge = final_of(&device);
    assert_eq!(challenge.status(), Some(407));
    let header = challenge.header(HeaderName::ProxyAuthenticate).expect("a challenge").to_owned();
    let parsed = sip::Auth::parse(&header).expect("a digest challenge");
    let uri = "sip:+12125550123@".to_owned() + &server.sip.to_string();
    let mut answers = Vec::new();
    for n in 1..=6u32 {
        let wrong = trunking::digest::authorization(&parsed, "INVITE", &uri, USER, "not-the-password", "c0ffee", n)
            .expect("an answer");
        device.send(&invite(n, &format!("Proxy-Authorization: {wrong}\r\n")));
        answers.push(final_of(&device));
    }
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.status(), Some(403), "attempt {}: {a:?}", i + 1);
        assert!(a.reason().is_some_and(|r| r.ends_with("D25")), "attempt {}: {:?}", i + 1, a.reason());
    }
    assert!(answers[..5].iter().all(|a| a.header(HeaderName::RetryAfter).is_none()), "five tries are let through");
    let wait: u64 = answers[5].header(HeaderName::RetryAfter).expect("then a cool-down").parse().unwrap();
    assert!(wait > 0 && wait <= 300, "{wait}");
}
