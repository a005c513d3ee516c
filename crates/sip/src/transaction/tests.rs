//! State and timer tests with a fake clock: `t0` plus durations, never the real time.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::headers::HeaderName;
use crate::message::{Framing, Message};

const INVITE: &str = "INVITE sip:+14155550123@198.51.100.5 SIP/2.0\r\n\
    Via: SIP/2.0/UDP 203.0.113.17:5060;branch=z9hG4bK7f3a9c21e0;rport\r\n\
    Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKinner\r\n\
    Route: <sip:edge1.example.net;lr>\r\n\
    Route: <sip:edge2.example.net;lr>\r\n\
    Max-Forwards: 69\r\n\
    From: <sip:+12125550199@203.0.113.17>;tag=as6f2b9c1e\r\n\
    To: <sip:+14155550123@198.51.100.5>\r\n\
    Call-ID: 3c26700c4e6a1f2b9d1e@203.0.113.17\r\n\
    CSeq: 102 INVITE\r\n\
    Timestamp: 54\r\n\
    Content-Length: 0\r\n\r\n";

const OPTIONS: &str = "OPTIONS sip:gw.example.net SIP/2.0\r\n\
    Via: SIP/2.0/UDP 203.0.113.17:5060;branch=z9hG4bKopt1\r\n\
    Max-Forwards: 70\r\n\
    From: <sip:probe@203.0.113.17>;tag=p1\r\n\
    To: <sip:gw.example.net>\r\n\
    Call-ID: opt1@203.0.113.17\r\n\
    CSeq: 7 OPTIONS\r\n\
    Content-Length: 0\r\n\r\n";

fn parse(s: &str) -> Message {
    Message::parse(Bytes::from(s.to_owned()), Framing::Datagram).unwrap()
}

fn invite() -> Message {
    parse(INVITE)
}

fn options() -> Message {
    parse(OPTIONS)
}

/// A response as it would come off the wire.
fn response(req: &Message, code: u16, tag: &str) -> Message {
    let r = req.response_to(code, "Reason", Some(tag));
    Message::parse(r.to_bytes(), Framing::Datagram).unwrap()
}

/// The ACK a UAC sends for a non-2xx final response: same branch as the INVITE.
fn ack_for(req: &Message, resp: &Message) -> Message {
    client::build_ack(req, resp).unwrap()
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

trait Machine {
    type Event;
    fn transmit(&mut self) -> Option<Bytes>;
    fn timeout(&self) -> Option<Instant>;
    fn fire(&mut self, now: Instant);
    fn event(&mut self) -> Option<Self::Event>;
    fn sent(&mut self) -> Vec<Bytes> {
        std::iter::from_fn(|| self.transmit()).collect()
    }
    fn events(&mut self) -> Vec<Self::Event> {
        std::iter::from_fn(|| self.event()).collect()
    }
    /// Fires every timer up to `until` exactly at its deadline; returns, per firing, the offset
    /// from `t0` and how many messages it sent.
    fn run(&mut self, t0: Instant, until: Duration) -> Vec<(Duration, usize)> {
        let mut out = Vec::new();
        while let Some(t) = self.timeout().filter(|t| *t <= t0 + until) {
            self.fire(t);
            if let Some(next) = self.timeout() {
                assert!(next >= t, "timer scheduled in the past");
            }
            out.push((t - t0, self.sent().len()));
        }
        out
    }
}

impl Machine for ClientTransaction {
    type Event = ClientEvent;
    fn transmit(&mut self) -> Option<Bytes> {
        self.poll_transmit()
    }
    fn timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn fire(&mut self, now: Instant) {
        self.handle_timeout(now)
    }
    fn event(&mut self) -> Option<ClientEvent> {
        self.poll_event()
    }
}

impl Machine for ServerTransaction {
    type Event = ServerEvent;
    fn transmit(&mut self) -> Option<Bytes> {
        self.poll_transmit()
    }
    fn timeout(&self) -> Option<Instant> {
        self.poll_timeout()
    }
    fn fire(&mut self, now: Instant) {
        self.handle_timeout(now)
    }
    fn event(&mut self) -> Option<ServerEvent> {
        self.poll_event()
    }
}

fn kinds_c(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            ClientEvent::Provisional(m) => format!("1xx {}", m.status().unwrap_or(0)),
            ClientEvent::Final(m) => format!("final {}", m.status().unwrap_or(0)),
            ClientEvent::Timeout => "timeout".into(),
            ClientEvent::TransportError => "transport error".into(),
            ClientEvent::Terminated => "terminated".into(),
        })
        .collect()
}

fn kinds_s(events: &[ServerEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            ServerEvent::Ack(_) => "ack".into(),
            ServerEvent::Timeout => "timeout".into(),
            ServerEvent::TransportError => "transport error".into(),
            ServerEvent::Terminated => "terminated".into(),
        })
        .collect()
}

fn text(b: &Bytes) -> &str {
    std::str::from_utf8(b).unwrap()
}

// ---- timers ----

#[test]
fn timer_values() {
    let t = Timers::default();
    assert_eq!((t.t1, t.t2, t.t4), (ms(500), secs(4), secs(5)));
    assert_eq!((t.a(), t.b()), (ms(500), secs(32)));
    assert_eq!((t.d(false), t.d(true)), (secs(32), Duration::ZERO));
    assert_eq!((t.e(), t.f(), t.g(), t.h()), (ms(500), secs(32), ms(500), secs(32)));
    assert_eq!((t.i(false), t.i(true)), (secs(5), Duration::ZERO));
    assert_eq!((t.j(false), t.j(true)), (secs(32), Duration::ZERO));
    assert_eq!((t.k(false), t.k(true)), (secs(5), Duration::ZERO));
    assert_eq!((t.l(), t.m()), (secs(32), secs(32)));
    assert_eq!(t.next_a(secs(16)), secs(32));
    assert_eq!(t.next_capped(secs(2)), secs(4));
    assert_eq!(t.next_capped(secs(4)), secs(4));

    let fast = Timers { t1: ms(100), t2: ms(1500), t4: secs(2) };
    assert_eq!((fast.b(), fast.f(), fast.h(), fast.l(), fast.m()), (ms(6400), ms(6400), ms(6400), ms(6400), ms(6400)));
    assert_eq!(fast.d(false), secs(32), "D is at least 32 s");
    assert_eq!(fast.j(false), ms(6400));
    assert_eq!((fast.i(false), fast.k(false)), (secs(2), secs(2)));
    let slow = Timers { t1: secs(1), ..Timers::default() };
    assert_eq!(slow.d(false), secs(64), "D covers a server's 64*T1");

    let huge = Timers { t1: Duration::MAX, t2: Duration::MAX, t4: Duration::MAX };
    assert_eq!(huge.b(), Duration::MAX);
    assert_eq!(huge.next_a(Duration::MAX), Duration::MAX);
}

// ---- client INVITE ----

#[test]
fn client_invite_timer_a_doubles_until_b() {
    let t0 = Instant::now();
    let mut c = ClientTransaction::new(invite(), false, &Timers::default(), t0).unwrap();
    assert_eq!(c.state(), ClientState::Calling);
    assert!(c.is_invite());
    assert_eq!(c.sent(), vec![invite().to_bytes()]);
    assert_eq!(c.poll_timeout(), Some(t0 + ms(500)));
    let fired = c.run(t0, secs(100));
    let expect: Vec<(Duration, usize)> =
        [500, 1500, 3500, 7500, 15500, 31500].into_iter().map(|t| (ms(t), 1)).chain([(secs(32), 0)]).collect();
    assert_eq!(fired, expect);
    assert_eq!(c.retransmissions(), 6, "the first send is not a retransmission");
    assert_eq!(kinds_c(&c.events()), ["timeout", "terminated"]);
    assert_eq!(c.state(), ClientState::Terminated);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn client_invite_reliable_sends_once_and_times_out_with_b() {
    let t0 = Instant::now();
    let mut c = ClientTransaction::new(invite(), true, &Timers::default(), t0).unwrap();
    assert_eq!(c.sent().len(), 1);
    assert_eq!(c.poll_timeout(), Some(t0 + secs(32)));
    assert_eq!(c.run(t0, secs(100)), vec![(secs(32), 0)]);
    assert_eq!(kinds_c(&c.events()), ["timeout", "terminated"]);
}

#[test]
fn client_invite_custom_t1() {
    let t0 = Instant::now();
    let timers = Timers { t1: ms(100), ..Timers::default() };
    let mut c = ClientTransaction::new(invite(), false, &timers, t0).unwrap();
    let fired: Vec<Duration> = c.run(t0, secs(100)).into_iter().map(|(t, _)| t).collect();
    assert_eq!(fired, [100, 300, 700, 1500, 3100, 6300, 6400].map(ms));
}

#[test]
fn client_invite_late_driver_keeps_schedule_and_never_schedules_in_the_past() {
    let t0 = Instant::now();
    let mut c = ClientTransaction::new(invite(), false, &Timers::default(), t0).unwrap();
    c.sent();
    // Woken 30 ms late: the next deadline still follows the schedule.
    c.handle_timeout(t0 + ms(530));
    assert_eq!(c.sent().len(), 1);
    assert_eq!(c.poll_timeout(), Some(t0 + ms(1500)));
    // Woken 10 s late: one retransmission, the next one a full interval later.
    c.handle_timeout(t0 + ms(11500));
    assert_eq!(c.sent().len(), 1);
    assert_eq!(c.poll_timeout(), Some(t0 + ms(11500) + secs(2)));
    // A timer that has not fired yet does nothing.
    c.handle_timeout(t0 + ms(11600));
    assert!(c.sent().is_empty());
}

#[test]
fn client_invite_provisional_stops_a_and_b() {
    let t0 = Instant::now();
    let req = invite();
    let mut c = ClientTransaction::new(req.clone(), false, &Timers::default(), t0).unwrap();
    c.sent();
    c.handle_timeout(t0 + ms(500));
    c.handle_response(response(&req, 100, "x"), t0 + ms(600)).unwrap();
    c.handle_response(response(&req, 180, "b1"), t0 + secs(2)).unwrap();
    assert_eq!(c.state(), ClientState::Proceeding);
    assert_eq!(c.poll_timeout(), None, "no A, no B in Proceeding");
    assert_eq!(kinds_c(&c.events()), ["1xx 100", "1xx 180"]);
    c.handle_timeout(t0 + secs(300));
    assert_eq!(c.state(), ClientState::Proceeding);
    assert_eq!(c.sent().len(), 1, "only the retransmission before the 100");
}

#[test]
fn client_invite_non_2xx_builds_ack_and_waits_timer_d() {
    let t0 = Instant::now();
    let req = invite();
    let mut c = ClientTransaction::new(req.clone(), false, &Timers::default(), t0).unwrap();
    c.sent();
    c.handle_response(response(&req, 180, "b1"), t0 + ms(100)).unwrap();
    let busy = response(&req, 486, "b1");
    c.handle_response(busy.clone(), t0 + secs(3)).unwrap();
    assert_eq!(c.state(), ClientState::Completed);
    assert_eq!(kinds_c(&c.events()), ["1xx 180", "final 486"]);
    let acks = c.sent();
    assert_eq!(acks.len(), 1);
    let ack = Message::parse(acks[0].clone(), Framing::Datagram).unwrap();
    assert_eq!(
        text(&acks[0]),
        "ACK sip:+14155550123@198.51.100.5 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 203.0.113.17:5060;branch=z9hG4bK7f3a9c21e0;rport\r\n\
         Route: <sip:edge1.example.net;lr>\r\n\
         Route: <sip:edge2.example.net;lr>\r\n\
         Max-Forwards: 69\r\n\
         From: <sip:+12125550199@203.0.113.17>;tag=as6f2b9c1e\r\n\
         To: <sip:+14155550123@198.51.100.5>;tag=b1\r\n\
         Call-ID: 3c26700c4e6a1f2b9d1e@203.0.113.17\r\n\
         CSeq: 102 ACK\r\n\
         Content-Length: 0\r\n\r\n"
    );
    // Same transaction on the server side: the ACK maps to the INVITE's key.
    assert_eq!(TransactionKey::for_server(&ack).unwrap(), TransactionKey::for_server(&req).unwrap());
    assert_eq!(ack.count(HeaderName::Via), 1);

    // A retransmitted 486 gets the same ACK again and is not passed up.
    assert_eq!(c.retransmissions(), 0, "the provisional stopped Timer A before it fired");
    c.handle_response(busy.clone(), t0 + secs(4)).unwrap();
    assert_eq!(c.sent(), acks);
    assert_eq!(c.retransmissions(), 1, "the ACK sent again");
    assert!(c.events().is_empty());
    // Late 1xx and 2xx are absorbed.
    c.handle_response(response(&req, 180, "b1"), t0 + secs(5)).unwrap();
    assert!(c.events().is_empty() && c.sent().is_empty());

    // Timer D: 32 s after the final.
    assert_eq!(c.poll_timeout(), Some(t0 + secs(3) + secs(32)));
    assert_eq!(c.run(t0, secs(100)), vec![(secs(35), 0)]);
    assert_eq!(kinds_c(&c.events()), ["terminated"]);
}

#[test]
fn client_invite_non_2xx_reliable_terminates_at_once_after_the_ack() {
    let t0 = Instant::now();
    let req = invite();
    let mut c = ClientTransaction::new(req.clone(), true, &Timers::default(), t0).unwrap();
    c.sent();
    c.handle_response(response(&req, 503, "b1"), t0 + ms(40)).unwrap();
    assert_eq!(c.state(), ClientState::Terminated);
    assert_eq!(kinds_c(&c.events()), ["final 503", "terminated"]);
    assert_eq!(c.sent().len(), 1, "the ACK is still sent");
    assert_eq!(c.poll_timeout(), None);
    // Nothing happens after Terminated.
    c.handle_response(response(&req, 503, "b1"), t0 + ms(50)).unwrap();
    c.handle_timeout(t0 + secs(100));
    c.handle_transport_error(t0 + secs(100));
    assert!(c.events().is_empty() && c.sent().is_empty());
}

#[test]
fn client_invite_2xx_passes_up_every_time_until_timer_m() {
    for reliable in [false, true] {
        let t0 = Instant::now();
        let req = invite();
        let mut c = ClientTransaction::new(req.clone(), reliable, &Timers::default(), t0).unwrap();
        c.sent();
        c.handle_response(response(&req, 200, "u1"), t0 + secs(1)).unwrap();
        assert_eq!(c.state(), ClientState::Accepted);
        // A retransmission and a second fork's 2xx both pass up; no ACK from the transaction.
        c.handle_response(response(&req, 200, "u1"), t0 + secs(2)).unwrap();
        c.handle_response(response(&req, 200, "u2"), t0 + secs(3)).unwrap();
        // A late non-2xx or 1xx is absorbed.
        c.handle_response(response(&req, 486, "u3"), t0 + secs(4)).unwrap();
        c.handle_response(response(&req, 180, "u1"), t0 + secs(4)).unwrap();
        assert_eq!(kinds_c(&c.events()), ["final 200", "final 200", "final 200"]);
        assert!(c.sent().is_empty());
        assert_eq!(c.poll_timeout(), Some(t0 + secs(33)), "Timer M, 64*T1 on every transport");
        assert_eq!(c.run(t0, secs(100)), vec![(secs(33), 0)]);
        assert_eq!(kinds_c(&c.events()), ["terminated"]);
    }
}

#[test]
fn client_transport_error_terminates() {
    let t0 = Instant::now();
    let mut c = ClientTransaction::new(invite(), false, &Timers::default(), t0).unwrap();
    c.sent();
    c.handle_transport_error(t0 + ms(1));
    assert_eq!(c.state(), ClientState::Terminated);
    assert_eq!(kinds_c(&c.events()), ["transport error", "terminated"]);
    assert_eq!(c.poll_timeout(), None);

    let mut c = ClientTransaction::new(options(), false, &Timers::default(), t0).unwrap();
    c.handle_response(response(&options(), 100, "x"), t0).unwrap();
    c.handle_transport_error(t0 + ms(1));
    assert_eq!(kinds_c(&c.events()), ["1xx 100", "transport error", "terminated"]);
}

#[test]
fn client_rejects_what_it_cannot_run() {
    let t0 = Instant::now();
    let t = Timers::default();
    let ack = parse(&INVITE.replacen("INVITE sip", "ACK sip", 1).replace("102 INVITE", "102 ACK"));
    assert!(ClientTransaction::new(ack, false, &t, t0).is_err());
    let no_branch = parse(&INVITE.replace(";branch=z9hG4bK7f3a9c21e0", ""));
    assert!(ClientTransaction::new(no_branch, false, &t, t0).is_err());
    let no_via = parse(
        &INVITE
            .replace("Via: SIP/2.0/UDP 203.0.113.17:5060;branch=z9hG4bK7f3a9c21e0;rport\r\n", "")
            .replace("Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKinner\r\n", ""),
    );
    assert!(ClientTransaction::new(no_via, false, &t, t0).is_err());
    let mismatch = parse(&INVITE.replace("102 INVITE", "102 BYE"));
    assert!(ClientTransaction::new(mismatch, false, &t, t0).is_err());
    let resp = response(&invite(), 200, "x");
    assert!(ClientTransaction::new(resp, false, &t, t0).is_err());

    // Responses of other transactions are refused and change nothing.
    let mut c = ClientTransaction::new(invite(), false, &t, t0).unwrap();
    c.sent();
    let other = parse(&INVITE.replace("z9hG4bK7f3a9c21e0", "z9hG4bKother"));
    assert!(c.handle_response(response(&other, 200, "x"), t0).is_err());
    let cancel = parse(&INVITE.replacen("INVITE sip", "CANCEL sip", 1).replace("102 INVITE", "102 CANCEL"));
    assert!(c.handle_response(response(&cancel, 200, "x"), t0).is_err());
    assert!(c.handle_response(invite(), t0).is_err());
    assert_eq!(c.state(), ClientState::Calling);
    assert!(c.events().is_empty());
}

// ---- client non-INVITE ----

#[test]
fn client_non_invite_timer_e_capped_at_t2_until_f() {
    let t0 = Instant::now();
    let mut c = ClientTransaction::new(options(), false, &Timers::default(), t0).unwrap();
    assert_eq!(c.state(), ClientState::Trying);
    assert_eq!(c.sent().len(), 1);
    let fired = c.run(t0, secs(100));
    let expect: Vec<(Duration, usize)> = [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        .into_iter()
        .map(|t| (ms(t), 1))
        .chain([(secs(32), 0)])
        .collect();
    assert_eq!(fired, expect);
    assert_eq!(kinds_c(&c.events()), ["timeout", "terminated"]);
}

#[test]
fn client_non_invite_reliable_has_no_e() {
    let t0 = Instant::now();
    let mut c = ClientTransaction::new(options(), true, &Timers::default(), t0).unwrap();
    assert_eq!(c.sent().len(), 1);
    assert_eq!(c.run(t0, secs(100)), vec![(secs(32), 0)]);
    assert_eq!(kinds_c(&c.events()), ["timeout", "terminated"]);
}

#[test]
fn client_non_invite_proceeding_resets_e_to_t2() {
    let t0 = Instant::now();
    let req = options();
    let mut c = ClientTransaction::new(req.clone(), false, &Timers::default(), t0).unwrap();
    c.sent();
    c.handle_timeout(t0 + ms(500));
    c.handle_response(response(&req, 100, "x"), t0 + ms(600)).unwrap();
    assert_eq!(c.state(), ClientState::Proceeding);
    // E was armed with 1 s in Trying; when it fires in Proceeding it is reset to T2.
    let fired: Vec<Duration> = c.run(t0, secs(100)).into_iter().map(|(t, _)| t).collect();
    assert_eq!(fired, [1500, 5500, 9500, 13500, 17500, 21500, 25500, 29500, 32000].map(ms));
    assert_eq!(kinds_c(&c.events()), ["1xx 100", "timeout", "terminated"]);
}

#[test]
fn client_non_invite_final_then_timer_k() {
    let t0 = Instant::now();
    let req = options();
    let mut c = ClientTransaction::new(req.clone(), false, &Timers::default(), t0).unwrap();
    c.sent();
    c.handle_response(response(&req, 200, "g"), t0 + ms(80)).unwrap();
    assert_eq!(c.state(), ClientState::Completed);
    c.handle_response(response(&req, 200, "g"), t0 + ms(90)).unwrap();
    c.handle_response(response(&req, 404, "g"), t0 + ms(95)).unwrap();
    assert_eq!(kinds_c(&c.events()), ["final 200"], "retransmissions absorbed");
    assert!(c.sent().is_empty(), "no ACK for non-INVITE");
    assert_eq!(c.run(t0, secs(100)), vec![(ms(5080), 0)], "Timer K = T4, no retransmission after the final");
    assert_eq!(kinds_c(&c.events()), ["terminated"]);

    let mut c = ClientTransaction::new(req.clone(), true, &Timers::default(), t0).unwrap();
    c.handle_response(response(&req, 200, "g"), t0 + ms(80)).unwrap();
    assert_eq!(c.state(), ClientState::Terminated, "Timer K = 0 on reliable transports");
    assert_eq!(kinds_c(&c.events()), ["final 200", "terminated"]);
}

// ---- server INVITE ----

#[test]
fn server_invite_sends_100_trying_at_once() {
    let t0 = Instant::now();
    let mut s = ServerTransaction::new(invite(), false, &Timers::default(), t0).unwrap();
    assert_eq!(s.state(), ServerState::Proceeding);
    assert!(s.is_invite());
    let sent = s.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        text(&sent[0]),
        "SIP/2.0 100 Trying\r\n\
         Via: SIP/2.0/UDP 203.0.113.17:5060;branch=z9hG4bK7f3a9c21e0;rport\r\n\
         Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKinner\r\n\
         From: <sip:+12125550199@203.0.113.17>;tag=as6f2b9c1e\r\n\
         To: <sip:+14155550123@198.51.100.5>\r\n\
         Call-ID: 3c26700c4e6a1f2b9d1e@203.0.113.17\r\n\
         CSeq: 102 INVITE\r\n\
         Timestamp: 54\r\n\
         Content-Length: 0\r\n\r\n"
    );
    assert_eq!(s.poll_timeout(), None, "nothing runs while the TU decides");
    // A retransmitted INVITE gets the 100 again, then the latest provisional.
    assert_eq!(s.retransmissions(), 0);
    s.handle_request(invite(), t0 + ms(500)).unwrap();
    assert_eq!(s.sent(), sent);
    assert_eq!(s.retransmissions(), 1, "the 100 sent again");
    let ringing = invite().response_to(180, "Ringing", Some("s1"));
    s.send_response(ringing.clone(), t0 + secs(1)).unwrap();
    assert_eq!(s.sent(), vec![ringing.to_bytes()]);
    s.handle_request(invite(), t0 + ms(1500)).unwrap();
    assert_eq!(s.sent(), vec![ringing.to_bytes()]);
    assert_eq!(s.state(), ServerState::Proceeding);
    // An ACK before any final response is absorbed.
    let early_ack = ack_for(&invite(), &ringing);
    s.handle_request(early_ack, t0 + ms(1600)).unwrap();
    assert_eq!(s.state(), ServerState::Proceeding);
    assert!(s.events().is_empty() && s.sent().is_empty());
}

#[test]
fn server_invite_non_2xx_timer_g_capped_until_h() {
    let t0 = Instant::now();
    let mut s = ServerTransaction::new(invite(), false, &Timers::default(), t0).unwrap();
    s.sent();
    let busy = invite().response_to(486, "Busy Here", Some("s1"));
    s.send_response(busy.clone(), t0 + secs(1)).unwrap();
    assert_eq!(s.state(), ServerState::Completed);
    assert_eq!(s.sent(), vec![busy.to_bytes()]);
    let fired = s.run(t0, secs(100));
    // G: 0.5, 1, 2, 4, 4, ... after the final at 1 s; H at 1 + 32 s.
    let expect: Vec<(Duration, usize)> = [1500, 2500, 4500, 8500, 12500, 16500, 20500, 24500, 28500, 32500]
        .into_iter()
        .map(|t| (ms(t), 1))
        .chain([(secs(33), 0)])
        .collect();
    assert_eq!(fired, expect);
    assert_eq!(s.retransmissions(), 10, "every Timer G firing, not the first send");
    assert_eq!(kinds_s(&s.events()), ["timeout", "terminated"]);
}

#[test]
fn server_invite_ack_confirms_then_timer_i() {
    let t0 = Instant::now();
    let req = invite();
    let mut s = ServerTransaction::new(req.clone(), false, &Timers::default(), t0).unwrap();
    s.sent();
    let busy = req.response_to(486, "Busy Here", Some("s1"));
    s.send_response(busy.clone(), t0).unwrap();
    s.sent();
    // A retransmitted INVITE gets the final again.
    s.handle_request(req.clone(), t0 + ms(200)).unwrap();
    assert_eq!(s.sent(), vec![busy.to_bytes()]);
    s.handle_timeout(t0 + ms(500));
    assert_eq!(s.sent().len(), 1, "G fired once");
    s.handle_request(ack_for(&req, &busy), t0 + ms(700)).unwrap();
    assert_eq!(s.state(), ServerState::Confirmed);
    assert!(s.events().is_empty(), "the ACK of a non-2xx is absorbed");
    assert_eq!(s.poll_timeout(), Some(t0 + ms(700) + secs(5)), "only Timer I (T4) runs");
    // ACK and INVITE retransmissions are absorbed in Confirmed.
    s.handle_request(ack_for(&req, &busy), t0 + secs(1)).unwrap();
    s.handle_request(req.clone(), t0 + secs(1)).unwrap();
    assert!(s.sent().is_empty() && s.events().is_empty());
    assert_eq!(s.run(t0, secs(100)), vec![(ms(5700), 0)]);
    assert_eq!(kinds_s(&s.events()), ["terminated"]);
    // Responses after the final are refused.
    assert!(s.send_response(req.response_to(200, "OK", Some("s1")), t0 + secs(10)).is_err());
}

#[test]
fn server_invite_reliable_no_g_and_i_is_zero() {
    let t0 = Instant::now();
    let req = invite();
    let mut s = ServerTransaction::new(req.clone(), true, &Timers::default(), t0).unwrap();
    assert_eq!(s.sent().len(), 1, "100 Trying on every transport");
    let busy = req.response_to(603, "Decline", Some("s1"));
    s.send_response(busy.clone(), t0 + secs(1)).unwrap();
    s.sent();
    assert_eq!(s.poll_timeout(), Some(t0 + secs(33)), "no G, only H");
    s.handle_request(ack_for(&req, &busy), t0 + secs(2)).unwrap();
    assert_eq!(s.state(), ServerState::Terminated);
    assert_eq!(kinds_s(&s.events()), ["terminated"]);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn server_invite_2xx_accepted_until_timer_l() {
    for reliable in [false, true] {
        let t0 = Instant::now();
        let req = invite();
        let mut s = ServerTransaction::new(req.clone(), reliable, &Timers::default(), t0).unwrap();
        s.sent();
        let ok = req.response_to(200, "OK", Some("s1"));
        s.send_response(ok.clone(), t0 + secs(2)).unwrap();
        assert_eq!(s.state(), ServerState::Accepted);
        assert_eq!(s.sent(), vec![ok.to_bytes()]);
        // The transaction never retransmits a 2xx on its own: only Timer L runs.
        assert_eq!(s.poll_timeout(), Some(t0 + secs(34)));
        // The TU's retransmission goes out; INVITE retransmissions are absorbed.
        s.send_response(ok.clone(), t0 + ms(2500)).unwrap();
        assert_eq!(s.sent(), vec![ok.to_bytes()]);
        s.handle_request(req.clone(), t0 + secs(3)).unwrap();
        assert!(s.sent().is_empty());
        // ACKs pass up, each one.
        let ack = ack_for(&req, &ok);
        s.handle_request(ack.clone(), t0 + secs(4)).unwrap();
        s.handle_request(ack, t0 + secs(5)).unwrap();
        assert_eq!(kinds_s(&s.events()), ["ack", "ack"]);
        assert_eq!(s.state(), ServerState::Accepted);
        // Non-2xx and 1xx are refused in Accepted.
        assert!(s.send_response(req.response_to(500, "Oops", Some("s1")), t0 + secs(6)).is_err());
        assert!(s.send_response(req.response_to(180, "Ringing", Some("s1")), t0 + secs(6)).is_err());
        assert_eq!(s.run(t0, secs(100)), vec![(secs(34), 0)]);
        assert_eq!(kinds_s(&s.events()), ["terminated"]);
        assert!(s.send_response(ok, t0 + secs(40)).is_err());
    }
}

#[test]
fn server_transport_error_informs_and_keeps_state() {
    let t0 = Instant::now();
    let req = invite();
    let mut s = ServerTransaction::new(req.clone(), false, &Timers::default(), t0).unwrap();
    s.sent();
    s.send_response(req.response_to(486, "Busy Here", Some("s1")), t0).unwrap();
    s.handle_transport_error(t0 + ms(1));
    assert_eq!(s.state(), ServerState::Completed);
    assert_eq!(kinds_s(&s.events()), ["transport error"]);
    // Timer H still ends it.
    s.run(t0, secs(100));
    assert_eq!(kinds_s(&s.events()), ["timeout", "terminated"]);
    s.handle_transport_error(t0 + secs(200));
    assert!(s.events().is_empty(), "no event after Terminated");
}

#[test]
fn server_rejects_ack_and_foreign_requests() {
    let t0 = Instant::now();
    let t = Timers::default();
    let ack = ack_for(&invite(), &invite().response_to(486, "Busy", Some("x")));
    assert!(ServerTransaction::new(ack, false, &t, t0).is_err());
    assert!(ServerTransaction::new(invite().response_to(200, "OK", None), false, &t, t0).is_err());
    let mut s = ServerTransaction::new(options(), false, &t, t0).unwrap();
    assert!(s.handle_request(invite(), t0).is_err());
    assert!(s.handle_request(options().response_to(200, "OK", None), t0).is_err());
    assert!(s.send_response(options(), t0).is_err());
    assert!(s.send_response(Message::new_response(700, "Huh"), t0).is_err());
    let mut s = ServerTransaction::new(invite(), false, &t, t0).unwrap();
    assert!(s.handle_request(options(), t0).is_err());
}

// ---- server non-INVITE ----

#[test]
fn server_non_invite_trying_proceeding_completed_timer_j() {
    let t0 = Instant::now();
    let req = options();
    let mut s = ServerTransaction::new(req.clone(), false, &Timers::default(), t0).unwrap();
    assert_eq!(s.state(), ServerState::Trying);
    assert!(!s.is_invite());
    assert!(s.sent().is_empty(), "no 100 Trying for non-INVITE");
    s.handle_request(req.clone(), t0 + ms(500)).unwrap();
    assert!(s.sent().is_empty(), "retransmission absorbed in Trying");
    let trying = req.response_to(100, "Trying", None);
    s.send_response(trying.clone(), t0 + ms(600)).unwrap();
    assert_eq!(s.state(), ServerState::Proceeding);
    assert_eq!(s.sent(), vec![trying.to_bytes()]);
    s.handle_request(req.clone(), t0 + ms(1500)).unwrap();
    assert_eq!(s.sent(), vec![trying.to_bytes()]);
    let ok = req.response_to(200, "OK", Some("g1"));
    s.send_response(ok.clone(), t0 + secs(2)).unwrap();
    assert_eq!(s.state(), ServerState::Completed);
    assert_eq!(s.sent(), vec![ok.to_bytes()]);
    s.handle_request(req.clone(), t0 + ms(3500)).unwrap();
    assert_eq!(s.sent(), vec![ok.to_bytes()], "the final again");
    assert!(s.send_response(req.response_to(500, "Late", Some("g1")), t0 + secs(4)).is_err());
    assert_eq!(s.run(t0, secs(100)), vec![(secs(34), 0)], "Timer J = 64*T1, nothing retransmitted on its own");
    assert_eq!(kinds_s(&s.events()), ["terminated"]);
}

#[test]
fn server_non_invite_reliable_j_is_zero() {
    let t0 = Instant::now();
    let req = options();
    let mut s = ServerTransaction::new(req.clone(), true, &Timers::default(), t0).unwrap();
    s.send_response(req.response_to(404, "Not Found", Some("g1")), t0).unwrap();
    assert_eq!(s.state(), ServerState::Terminated);
    assert_eq!(s.sent().len(), 1);
    assert_eq!(kinds_s(&s.events()), ["terminated"]);
}

#[test]
fn degenerate_timers_do_not_panic_or_spin() {
    let t0 = Instant::now();
    for t in [
        Timers { t1: Duration::ZERO, t2: Duration::ZERO, t4: Duration::ZERO },
        Timers { t1: Duration::MAX, t2: Duration::MAX, t4: Duration::MAX },
        Timers { t1: secs(10), t2: ms(1), t4: ms(1) },
    ] {
        for reliable in [false, true] {
            let mut c = ClientTransaction::new(invite(), reliable, &t, t0).unwrap();
            let n = c.run(t0, secs(10_000)).len();
            assert!(n < 100, "{t:?}");
            let mut c = ClientTransaction::new(options(), reliable, &t, t0).unwrap();
            assert!(c.run(t0, secs(10_000)).len() < 100);
            let mut s = ServerTransaction::new(invite(), reliable, &t, t0).unwrap();
            s.send_response(invite().response_to(500, "x", Some("y")), t0).unwrap();
            assert!(s.run(t0, secs(10_000)).len() < 100);
        }
    }
}

// ---- keys ----

#[test]
fn server_keys_follow_17_2_3() {
    let inv = invite();
    let k = TransactionKey::for_server(&inv).unwrap();
    assert_eq!(k.as_str(), "SINVITE 203.0.113.17:5060 z9hG4bK7f3a9c21e0");
    assert_eq!(k.to_string(), k.as_str());
    // The ACK of a non-2xx (same branch) finds the INVITE.
    let ack = ack_for(&inv, &response(&inv, 486, "x"));
    assert_eq!(TransactionKey::for_server(&ack).unwrap(), k);
    // CANCEL has its own transaction but targets the INVITE's (9.2).
    let cancel = parse(&INVITE.replacen("INVITE sip", "CANCEL sip", 1).replace("102 INVITE", "102 CANCEL"));
    assert_ne!(TransactionKey::for_server(&cancel).unwrap(), k);
    assert_eq!(TransactionKey::cancel_target(&cancel).unwrap(), k);
    assert!(TransactionKey::cancel_target(&inv).is_err());
    // Sent-by is part of the key; its host compares case-insensitively.
    let other_host = parse(&INVITE.replace("UDP 203.0.113.17:5060", "UDP 203.0.113.18:5060"));
    assert_ne!(TransactionKey::for_server(&other_host).unwrap(), k);
    let other_port = parse(&INVITE.replace("UDP 203.0.113.17:5060", "UDP 203.0.113.17"));
    assert_ne!(TransactionKey::for_server(&other_port).unwrap(), k);
    let named = parse(&INVITE.replace("UDP 203.0.113.17:5060", "UDP PBX.Example.COM"));
    let lower = parse(&INVITE.replace("UDP 203.0.113.17:5060", "UDP pbx.example.com"));
    assert_eq!(TransactionKey::for_server(&named).unwrap(), TransactionKey::for_server(&lower).unwrap());
    let v6 = parse(&INVITE.replace("UDP 203.0.113.17:5060", "UDP [2001:db8::9:1]:6050"));
    assert_eq!(TransactionKey::for_server(&v6).unwrap().as_str(), "SINVITE [2001:db8::9:1]:6050 z9hG4bK7f3a9c21e0");
    // Branch and method are part of it.
    let other_branch = parse(&INVITE.replace("z9hG4bK7f3a9c21e0", "z9hG4bK7f3a9c21e1"));
    assert_ne!(TransactionKey::for_server(&other_branch).unwrap(), k);
    let bye = parse(&INVITE.replacen("INVITE sip", "BYE sip", 1).replace("102 INVITE", "103 BYE"));
    assert_ne!(TransactionKey::for_server(&bye).unwrap(), k);
    // Errors, not panics.
    assert!(TransactionKey::for_server(&response(&inv, 200, "x")).is_err());
    let no_via = Message::new_request("INVITE", "sip:x@y");
    assert!(TransactionKey::for_server(&no_via).is_err());
}

#[test]
fn rfc2543_fallback_keys() {
    // No magic cookie (or nothing after it): Request-URI, tags, Call-ID, CSeq number, top Via.
    for branch in [";branch=1234", "", ";branch=z9hG4bK"] {
        let src = INVITE.replace(";branch=z9hG4bK7f3a9c21e0", branch);
        let inv = parse(&src);
        let k = TransactionKey::for_server(&inv).unwrap();
        assert!(k.as_str().starts_with("LINVITE"), "{k}");
        // The ACK carries the To tag of the response; it still finds the INVITE.
        let ack = ack_for(&inv, &response(&inv, 486, "srv"));
        assert_eq!(TransactionKey::for_server(&ack).unwrap(), k);
        let cancel = parse(&src.replacen("INVITE sip", "CANCEL sip", 1).replace("102 INVITE", "102 CANCEL"));
        assert_eq!(TransactionKey::cancel_target(&cancel).unwrap(), k);
        for (from, to) in [
            ("Call-ID: 3c26", "Call-ID: 4c26"),
            ("tag=as6f2b9c1e", "tag=other"),
            ("102 INVITE", "103 INVITE"),
            ("INVITE sip:+14155550123@198.51.100.5 SIP", "INVITE sip:+14155550124@198.51.100.5 SIP"),
            ("UDP 203.0.113.17:5060", "TCP 203.0.113.17:5060"),
            ("rport", "rport;x=1"),
        ] {
            let changed = parse(&src.replace(from, to));
            assert_ne!(TransactionKey::for_server(&changed).unwrap(), k, "{from} -> {to}");
        }
        // Non-INVITE requests keep the To tag in the key.
        let bye = src.replacen("INVITE sip", "BYE sip", 1).replace("102 INVITE", "103 BYE");
        let tagged = |t: &str| parse(&bye.replace("198.51.100.5>\r\n", &format!("198.51.100.5>;tag={t}\r\n")));
        let kb = TransactionKey::for_server(&tagged("a")).unwrap();
        assert!(kb.as_str().starts_with("LBYE"));
        assert_ne!(TransactionKey::for_server(&tagged("b")).unwrap(), kb);
    }
}

#[test]
fn rfc2543_ack_must_carry_the_final_responses_to_tag() {
    let t0 = Instant::now();
    let inv = parse(&INVITE.replace(";branch=z9hG4bK7f3a9c21e0", ";branch=1234"));
    let mut s = ServerTransaction::new(inv.clone(), false, &Timers::default(), t0).unwrap();
    let busy = inv.response_to(486, "Busy Here", Some("srv"));
    s.send_response(busy.clone(), t0).unwrap();
    let wrong = ack_for(&inv, &inv.response_to(486, "Busy Here", Some("other")));
    assert!(s.handle_request(wrong, t0 + ms(10)).is_err());
    assert_eq!(s.state(), ServerState::Completed);
    s.handle_request(ack_for(&inv, &busy), t0 + ms(20)).unwrap();
    assert_eq!(s.state(), ServerState::Confirmed);
}

#[test]
fn client_keys_follow_17_1_3() {
    let t0 = Instant::now();
    let inv = invite();
    let c = ClientTransaction::new(inv.clone(), false, &Timers::default(), t0).unwrap();
    assert_eq!(c.key().as_str(), "CINVITE z9hG4bK7f3a9c21e0");
    assert_eq!(c.request().unwrap().to_bytes(), inv.to_bytes());
    let resp = response(&inv, 180, "x");
    assert_eq!(&TransactionKey::for_client_response(&resp).unwrap(), c.key());
    // The same branch with CSeq CANCEL is the CANCEL's client transaction.
    let cancel = parse(&INVITE.replacen("INVITE sip", "CANCEL sip", 1).replace("102 INVITE", "102 CANCEL"));
    assert_ne!(&TransactionKey::for_client_response(&response(&cancel, 200, "x")).unwrap(), c.key());
    assert!(TransactionKey::for_client_response(&inv).is_err());
    // Client and server keys never collide.
    assert_ne!(&TransactionKey::for_server(&inv).unwrap(), c.key());
}

// ---- what lingers after the final response ----

#[test]
fn server_lets_its_request_go_with_the_final_response_and_still_answers_retransmissions() {
    let t0 = Instant::now();
    let t = Timers::default();
    let req = options();
    let mut s = ServerTransaction::new(req.clone(), false, &t, t0).unwrap();
    assert!(s.request().is_some());
    let ok = req.response_to(200, "OK", Some("g1"));
    s.send_response(ok.clone(), t0).unwrap();
    assert!(s.request().is_none(), "Completed keeps the key and the final, not the request");
    assert_eq!(s.sent(), vec![ok.to_bytes()]);
    s.handle_request(req.clone(), t0 + secs(1)).unwrap();
    assert_eq!(s.sent(), vec![ok.to_bytes()], "the final again, from the bytes kept");
    // The method check outlives the request: it is the key's.
    assert!(s.handle_request(invite(), t0 + secs(1)).is_err());
    assert!(s.handle_request(ack_for(&invite(), &ok), t0 + secs(1)).is_err());

    // INVITE: a 2xx (Accepted) and a non-2xx (Completed) both let the request go.
    let inv = invite();
    let mut s = ServerTransaction::new(inv.clone(), false, &t, t0).unwrap();
    s.send_response(inv.response_to(200, "OK", Some("g2")), t0).unwrap();
    assert_eq!((s.state(), s.request().is_none()), (ServerState::Accepted, true));
    s.handle_request(inv.clone(), t0 + secs(1)).unwrap();
    assert_eq!(s.sent().len(), 2, "100 Trying and the 2xx once; 2xx retransmission is the TU's (RFC 6026)");
    let mut s = ServerTransaction::new(inv.clone(), false, &t, t0).unwrap();
    let busy = inv.response_to(486, "Busy Here", Some("g3"));
    s.send_response(busy.clone(), t0).unwrap();
    assert_eq!((s.state(), s.request().is_none()), (ServerState::Completed, true));
    s.sent();
    s.handle_request(inv.clone(), t0 + ms(100)).unwrap();
    assert_eq!(s.sent(), vec![busy.to_bytes()]);
    s.handle_request(ack_for(&inv, &busy), t0 + ms(200)).unwrap();
    assert_eq!(s.state(), ServerState::Confirmed);
}

#[test]
fn client_lets_its_request_go_with_the_final_response_and_still_acks_repeats() {
    let t0 = Instant::now();
    let t = Timers::default();
    let inv = invite();
    let mut c = ClientTransaction::new(inv.clone(), false, &t, t0).unwrap();
    c.sent();
    c.handle_response(response(&inv, 180, "x"), t0).unwrap();
    assert!(c.request().is_some(), "a CANCEL is still built from it in Proceeding");
    let busy = response(&inv, 486, "x");
    c.handle_response(busy.clone(), t0 + ms(10)).unwrap();
    assert_eq!((c.state(), c.request().is_none()), (ClientState::Completed, true));
    let ack = c.sent();
    assert_eq!(ack.len(), 1);
    c.handle_response(busy, t0 + ms(20)).unwrap();
    assert_eq!(c.sent(), ack, "the same ACK for a repeated final");
    assert_eq!(c.run(t0 + ms(20), secs(100)).iter().map(|(_, n)| n).sum::<usize>(), 0, "nothing sent on its own");

    let mut c = ClientTransaction::new(inv.clone(), false, &t, t0).unwrap();
    c.handle_response(response(&inv, 200, "x"), t0).unwrap();
    assert_eq!((c.state(), c.request().is_none()), (ClientState::Accepted, true));

    let req = options();
    let mut c = ClientTransaction::new(req.clone(), false, &t, t0).unwrap();
    c.handle_response(response(&req, 200, "x"), t0).unwrap();
    assert_eq!((c.state(), c.request().is_none()), (ClientState::Completed, true));
    c.sent();
    assert_eq!(c.run(t0, secs(100)).iter().map(|(_, n)| n).sum::<usize>(), 0, "no request again after its final");
}

#[test]
fn keys_carry_their_method() {
    let inv = invite();
    assert_eq!(TransactionKey::for_server(&inv).unwrap().method(), "INVITE");
    assert_eq!(TransactionKey::for_server(&options()).unwrap().method(), "OPTIONS");
    let ack = ack_for(&inv, &inv.response_to(486, "Busy", Some("x")));
    assert_eq!(TransactionKey::for_server(&ack).unwrap().method(), "INVITE", "an ACK finds its INVITE");
    let old = parse(&INVITE.replace("z9hG4bK7f3a9c21e0", "old2543"));
    let key = TransactionKey::for_server(&old).unwrap();
    assert!(!key.is_rfc3261());
    assert_eq!(key.method(), "INVITE");
    assert_eq!(TransactionKey::for_client_response(&response(&inv, 180, "x")).unwrap().method(), "INVITE");
}
