//! Property tests for the transaction state machines (RFC 3261 section 17, RFC 6026).
//!
//! `end_to_end`: a client and a server transaction joined by a simulated network that loses,
//! duplicates and reorders datagrams. Every message carries a delivery time; the driver below
//! advances a fake clock to the earliest of (next delivery, next TU action, every
//! `poll_timeout`), feeds `handle_*`, and pumps `poll_transmit`/`poll_event` after each step,
//! like the engine will. Loss happens during a window at the start ("loss < 100% and enough
//! time": the window is shorter than the timers' reach), one-way delay stays under T1/2 (T1 is
//! the round-trip estimate). The TUs on both sides are scripted: the server answers after a
//! delay, optionally with a provisional first, and retransmits its 2xx to INVITE until the ACK
//! (RFC 3261 13.3.1.4); the client acknowledges every 2xx.
//!
//! `arbitrary_inputs`: random inputs in random order to single transactions; the invariants
//! hold and nothing panics.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use sip::headers::HeaderName;
use sip::transaction::{ClientState, ServerState};
use sip::{ClientEvent, ClientTransaction, Framing, Message, ServerEvent, ServerTransaction, Timers, TransactionKey};

/// SplitMix64: the network's dice, seeded by proptest so that failures shrink and replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
    /// Uniform in `1..=max` milliseconds.
    fn delay(&mut self, max_ms: u64) -> Duration {
        Duration::from_millis(1 + self.next() % max_ms.max(1))
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    seed: u64,
    reliable: bool,
    invite: bool,
    /// Branch without the magic cookie: the server matches by the RFC 2543 rules, and the ACK
    /// of a 2xx (which reuses the INVITE's Via) reaches the INVITE transaction in Accepted.
    rfc2543: bool,
    method: &'static str,
    t1: Duration,
    loss: f64,
    dup: f64,
    max_delay_ms: u64,
    lossy: Duration,
    tu_delay: Duration,
    provisional: bool,
    status: u16,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        (any::<u64>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (prop::sample::select(&["OPTIONS", "BYE", "REGISTER", "MESSAGE"][..]), 100u64..=500),
        (0.0..0.9f64, 0.0..0.5f64, 0.0..1.0f64),
        (0.0..16.0f64, 0.0..16.0f64, any::<bool>()),
        (prop::sample::select(&[200u16, 486, 603, 302, 500][..]), prop::sample::select(&[200u16, 202, 404, 503][..])),
    )
        .prop_map(
            |(
                (seed, reliable, invite, rfc2543),
                (method, t1_ms),
                (loss, dup, delay_frac),
                (lossy_t1s, tu_t1s, provisional),
                (invite_status, other_status),
            )| {
                let t1 = Duration::from_millis(t1_ms);
                Scenario {
                    seed,
                    reliable,
                    invite,
                    rfc2543,
                    method,
                    t1,
                    loss,
                    dup,
                    // One-way delay below T1/2.
                    max_delay_ms: 1 + ((t1_ms / 2 - 2) as f64 * delay_frac) as u64,
                    lossy: t1.mul_f64(lossy_t1s),
                    tu_delay: t1.mul_f64(tu_t1s),
                    provisional,
                    status: if invite { invite_status } else { other_status },
                }
            },
        )
}

fn parse(b: &Bytes) -> Message {
    Message::parse(b.clone(), Framing::Datagram).expect("the transactions send parseable messages")
}

fn request(sc: &Scenario) -> Message {
    let method = if sc.invite { "INVITE" } else { sc.method };
    let text = format!(
        "{method} sip:+14155550123@198.51.100.5 SIP/2.0\r\n\
         Via: {}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+12125550199@203.0.113.17>;tag=c1\r\n\
         To: <sip:+14155550123@198.51.100.5>\r\n\
         Call-ID: sim@203.0.113.17\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n",
        via(sc, 0)
    );
    Message::parse(Bytes::from(text), Framing::Datagram).unwrap()
}

fn via(sc: &Scenario, ack: u32) -> String {
    let transport = if sc.reliable { "TCP" } else { "UDP" };
    let branch = match (sc.rfc2543, ack) {
        (true, _) => "2543-1".to_string(),
        (false, 0) => "z9hG4bKsim1".to_string(),
        // The ACK of a 2xx is a new request with a new branch (RFC 3261 8.1.1.7, 13.2.2.4).
        (false, n) => format!("z9hG4bKack{n}"),
    };
    format!("SIP/2.0/{transport} 203.0.113.17:5060;branch={branch}")
}

/// The client TU's ACK for a 2xx (13.2.2.4).
fn ack_2xx(sc: &Scenario, resp: &Message, n: u32) -> Bytes {
    let mut ack = Message::new_request("ACK", "sip:+14155550123@198.51.100.5");
    ack.push_header(HeaderName::Via, &via(sc, n));
    ack.push_header(HeaderName::MaxForwards, "70");
    ack.push_header(HeaderName::From, "<sip:+12125550199@203.0.113.17>;tag=c1");
    ack.push_header(HeaderName::To, resp.header(HeaderName::To).unwrap());
    ack.push_header(HeaderName::CallId, "sim@203.0.113.17");
    ack.push_header(HeaderName::CSeq, "1 ACK");
    ack.to_bytes()
}

enum Action {
    ToServer(Bytes),
    ToClient(Bytes),
    /// The server TU answers.
    Respond(TransactionKey, u16),
    /// The server TU retransmits its 2xx (interval, first sent at).
    Retransmit2xx(TransactionKey, Duration, Instant),
}

#[derive(Default, Debug)]
struct Outcome {
    /// Server transactions created per key: the server TU sees the request this many times.
    created: HashMap<TransactionKey, usize>,
    provisionals: usize,
    finals: Vec<u16>,
    client_timeouts: usize,
    client_terminated: Option<Instant>,
    server_acks: usize,
    server_timeouts: usize,
    server_terminated: Option<Instant>,
    stray_acks: usize,
    /// Network statistics, to show the scenarios exercise what they claim.
    dropped: usize,
    duplicated: usize,
    to_server: usize,
    to_client: usize,
    /// Request retransmissions that reached the existing server transaction.
    absorbed: usize,
    violations: Vec<String>,
}

struct Sim {
    sc: Scenario,
    timers: Timers,
    t0: Instant,
    now: Instant,
    rng: Rng,
    seq: u64,
    queue: BTreeMap<(Instant, u64), Action>,
    client: Option<ClientTransaction>,
    servers: HashMap<TransactionKey, ServerTransaction>,
    server_done: HashMap<TransactionKey, bool>,
    tu_ok: Option<Message>,
    tu_acked: bool,
    acks_sent: u32,
    out: Outcome,
}

impl Sim {
    fn new(sc: Scenario) -> Sim {
        let t0 = Instant::now();
        let timers = Timers { t1: sc.t1, ..Timers::default() };
        let mut sim = Sim {
            rng: Rng(sc.seed),
            timers,
            t0,
            now: t0,
            seq: 0,
            queue: BTreeMap::new(),
            client: None,
            servers: HashMap::new(),
            server_done: HashMap::new(),
            tu_ok: None,
            tu_acked: false,
            acks_sent: 0,
            out: Outcome::default(),
            sc,
        };
        let client = ClientTransaction::new(request(&sim.sc), sim.sc.reliable, &timers, t0).unwrap();
        sim.client = Some(client);
        sim.pump();
        sim
    }

    fn at(&mut self, at: Instant, action: Action) {
        self.seq += 1;
        self.queue.insert((at, self.seq), action);
    }

    /// The network: loss during the lossy window, duplication and reordering on unreliable
    /// transports; a reliable transport delivers everything once, in order.
    fn send(&mut self, to_server: bool, bytes: Bytes) {
        let wrap = |b: Bytes| if to_server { Action::ToServer(b) } else { Action::ToClient(b) };
        if self.sc.reliable {
            let at = self.now + Duration::from_millis(self.sc.max_delay_ms);
            self.at(at, wrap(bytes));
            return;
        }
        if self.now < self.t0 + self.sc.lossy && self.rng.chance(self.sc.loss) {
            self.out.dropped += 1;
            return;
        }
        let copies = if self.rng.chance(self.sc.dup) { 2 } else { 1 };
        self.out.duplicated += copies - 1;
        for _ in 0..copies {
            let at = self.now + self.rng.delay(self.sc.max_delay_ms);
            self.at(at, wrap(bytes.clone()));
        }
    }

    fn check_timer(&mut self, what: &str, t: Option<Instant>) {
        if let Some(t) = t
            && t < self.now
        {
            self.out.violations.push(format!("{what} timer scheduled in the past"));
        }
    }

    /// Everything the machines want done now: transmissions onto the network, events to the
    /// scripted TUs.
    fn pump(&mut self) {
        loop {
            let mut progress = false;
            if let Some(c) = self.client.as_mut() {
                let mut sends = Vec::new();
                let mut events = Vec::new();
                while let Some(b) = c.poll_transmit() {
                    sends.push(b);
                }
                while let Some(e) = c.poll_event() {
                    events.push(e);
                }
                let t = c.poll_timeout();
                let terminated = c.state() == ClientState::Terminated;
                self.check_timer("client", t);
                progress |= !sends.is_empty() || !events.is_empty();
                for b in sends {
                    self.send(true, b);
                }
                for e in events {
                    self.client_event(e);
                }
                if terminated {
                    self.client = None;
                }
            }
            let keys: Vec<TransactionKey> = self.servers.keys().cloned().collect();
            for key in keys {
                let Some(s) = self.servers.get_mut(&key) else { continue };
                let mut sends = Vec::new();
                let mut events = Vec::new();
                while let Some(b) = s.poll_transmit() {
                    sends.push(b);
                }
                while let Some(e) = s.poll_event() {
                    events.push(e);
                }
                let t = s.poll_timeout();
                let terminated = s.state() == ServerState::Terminated;
                self.check_timer("server", t);
                progress |= !sends.is_empty() || !events.is_empty();
                for b in sends {
                    self.send(false, b);
                }
                for e in events {
                    self.server_event(&key, e);
                }
                if terminated {
                    self.servers.remove(&key);
                }
            }
            if !progress {
                break;
            }
        }
    }

    fn client_event(&mut self, e: ClientEvent) {
        if self.out.client_terminated.is_some() {
            self.out.violations.push(format!("client event after Terminated: {e:?}"));
        }
        match e {
            ClientEvent::Provisional(_) => self.out.provisionals += 1,
            ClientEvent::Final(m) => {
                let status = m.status().unwrap_or(0);
                self.out.finals.push(status);
                if self.sc.invite && (200..300).contains(&status) {
                    self.acks_sent += 1;
                    let ack = ack_2xx(&self.sc, &m, self.acks_sent);
                    self.send(true, ack);
                }
            }
            ClientEvent::Timeout => self.out.client_timeouts += 1,
            ClientEvent::TransportError => self.out.violations.push("client transport error".into()),
            ClientEvent::Terminated => self.out.client_terminated = Some(self.now),
        }
    }

    fn server_event(&mut self, key: &TransactionKey, e: ServerEvent) {
        if self.server_done.get(key).copied().unwrap_or(false) {
            self.out.violations.push(format!("server event after Terminated: {e:?}"));
        }
        match e {
            ServerEvent::Ack(_) => {
                self.out.server_acks += 1;
                self.tu_acked = true;
            }
            ServerEvent::Timeout => self.out.server_timeouts += 1,
            ServerEvent::TransportError => self.out.violations.push("server transport error".into()),
            ServerEvent::Terminated => {
                self.server_done.insert(key.clone(), true);
                self.out.server_terminated = Some(self.now);
            }
        }
    }

    fn step(&mut self, action: Action) {
        match action {
            Action::ToClient(b) => {
                self.out.to_client += 1;
                let m = parse(&b);
                let Some(c) = self.client.as_mut() else { return };
                if TransactionKey::for_client_response(&m).ok().as_ref() != Some(c.key()) {
                    self.out.violations.push("response for an unknown client transaction".into());
                    return;
                }
                if let Err(e) = c.handle_response(m, self.now) {
                    self.out.violations.push(format!("client refused a response: {e}"));
                }
            }
            Action::ToServer(b) => {
                self.out.to_server += 1;
                let m = parse(&b);
                let key = TransactionKey::for_server(&m).unwrap();
                let is_ack = m.method() == Some(sip::Method::Ack);
                if let Some(s) = self.servers.get_mut(&key) {
                    self.out.absorbed += usize::from(!is_ack);
                    if let Err(e) = s.handle_request(m, self.now) {
                        self.out.violations.push(format!("server refused a request: {e}"));
                    }
                } else if is_ack {
                    // No transaction: the ACK of a 2xx goes to the TU (RFC 3261 17.2.3, RFC 6026 8.10).
                    self.out.stray_acks += 1;
                    self.tu_acked = true;
                } else {
                    *self.out.created.entry(key.clone()).or_default() += 1;
                    let s = ServerTransaction::new(m, self.sc.reliable, &self.timers, self.now).unwrap();
                    self.servers.insert(key.clone(), s);
                    self.server_done.insert(key.clone(), false);
                    if self.sc.provisional {
                        let code = if self.sc.invite { 180 } else { 100 };
                        self.at(self.now + self.sc.tu_delay / 2, Action::Respond(key.clone(), code));
                    }
                    self.at(self.now + self.sc.tu_delay, Action::Respond(key, self.sc.status));
                }
            }
            Action::Respond(key, code) => {
                let Some(s) = self.servers.get_mut(&key) else { return };
                let tag = (code > 100).then_some("srv");
                let Some(request) = s.request() else {
                    self.out.violations.push(format!("the TU's {code} came after the final response"));
                    return;
                };
                let resp = request.response_to(code, "Scripted", tag);
                if let Err(e) = s.send_response(resp.clone(), self.now) {
                    self.out.violations.push(format!("server refused the TU's {code}: {e}"));
                }
                if self.sc.invite && (200..300).contains(&code) {
                    self.tu_ok = Some(resp);
                    let t1 = self.timers.t1;
                    self.at(self.now + t1, Action::Retransmit2xx(key, t1, self.now));
                }
            }
            Action::Retransmit2xx(key, interval, started) => {
                if self.tu_acked || self.now >= started + self.timers.t1 * 64 {
                    return;
                }
                let (Some(s), Some(ok)) = (self.servers.get_mut(&key), self.tu_ok.clone()) else { return };
                if let Err(e) = s.send_response(ok, self.now) {
                    self.out.violations.push(format!("server refused a 2xx retransmission: {e}"));
                }
                let next = (interval * 2).min(self.timers.t2);
                self.at(self.now + next, Action::Retransmit2xx(key, next, started));
            }
        }
    }

    fn run(mut self, limit: Duration) -> Outcome {
        loop {
            let mut next = self.queue.first_key_value().map(|((t, _), _)| *t);
            let timers = self.client.iter().filter_map(|c| c.poll_timeout());
            let timers = timers.chain(self.servers.values().filter_map(|s| s.poll_timeout()));
            for t in timers {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            let Some(next) = next else { break };
            if next > self.t0 + limit {
                break;
            }
            self.now = next;
            if let Some(c) = self.client.as_mut()
                && c.poll_timeout().is_some_and(|t| t <= next)
            {
                c.handle_timeout(next);
            }
            for s in self.servers.values_mut() {
                if s.poll_timeout().is_some_and(|t| t <= next) {
                    s.handle_timeout(next);
                }
            }
            self.pump();
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > next {
                    break;
                }
                let action = entry.remove();
                self.step(action);
                self.pump();
            }
        }
        if self.client.is_some() {
            self.out.violations.push("client transaction still alive".into());
        }
        if !self.servers.is_empty() {
            self.out.violations.push("server transaction still alive".into());
        }
        self.out
    }
}

fn config() -> ProptestConfig {
    // No regression files: this file is the only one the tests own. 512 cases unless
    // PROPTEST_CASES says otherwise.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn end_to_end(sc in scenario()) {
        let t1 = sc.t1;
        let (invite, status) = (sc.invite, sc.status);
        let sim = Sim::new(sc.clone());
        let t0 = sim.t0;
        let out = sim.run(Duration::from_secs(1000));
        prop_assert!(out.violations.is_empty(), "{:?}\n{:?}", out.violations, out);

        // The server TU sees the request exactly once: one transaction for its key, every
        // retransmission absorbed by it.
        prop_assert_eq!(out.created.len(), 1, "{:?}", out);
        prop_assert!(out.created.values().all(|&n| n == 1), "{:?}", out);

        // The client TU gets its final response: exactly once for non-INVITE and for a non-2xx
        // to INVITE; for a 2xx at least once (each copy passes up, RFC 6026), and no timeout.
        prop_assert_eq!(out.client_timeouts, 0, "{:?}", out);
        prop_assert!(out.finals.iter().all(|&s| s == status), "{:?}", out);
        if invite && (200..300).contains(&status) {
            prop_assert!(!out.finals.is_empty(), "{:?}", out);
            prop_assert!(out.stray_acks + out.server_acks >= 1, "the 2xx was acknowledged: {:?}", out);
        } else {
            prop_assert_eq!(out.finals.len(), 1, "{:?}", out);
        }
        prop_assert!(out.provisionals <= 64, "{:?}", out);
        // A non-2xx final to INVITE is acknowledged before Timer H.
        prop_assert_eq!(out.server_timeouts, 0, "{:?}", out);

        // Both sides end within bounded simulated time: the loss window and the TU (16 T1
        // each), then at most 64*T1 of waiting for retransmissions, then the longest linger
        // (D: max(32 s, 64*T1); H, J, L, M: 64*T1; I, K: T4).
        let bound = t1 * (16 + 16 + 64 + 64) + Duration::from_secs(32 + 5);
        let client_end = out.client_terminated.expect("client terminated");
        let server_end = out.server_terminated.expect("server terminated");
        prop_assert!(client_end <= t0 + bound, "client ended at {:?}", client_end - t0);
        prop_assert!(server_end <= t0 + bound, "server ended at {:?}", server_end - t0);
    }
}

/// Fixed scenarios that must take the paths the properties rely on: loss and duplication
/// happen, retransmissions get through, the ACK of a 2xx reaches the INVITE transaction in
/// Accepted under RFC 2543 matching and the TU otherwise, a non-2xx is acknowledged.
#[test]
fn end_to_end_paths_are_exercised() {
    let base = Scenario {
        seed: 7,
        reliable: false,
        invite: true,
        rfc2543: true,
        method: "OPTIONS",
        t1: Duration::from_millis(500),
        loss: 0.6,
        dup: 0.3,
        max_delay_ms: 200,
        lossy: Duration::from_secs(6),
        tu_delay: Duration::from_secs(2),
        provisional: true,
        status: 200,
    };
    let (mut dropped, mut duplicated, mut server_acks, mut stray_acks, mut extra_finals) = (0, 0, 0, 0, 0);
    let (mut runs, mut absorbed) = (0, 0);
    for seed in 0..64 {
        for (rfc2543, status) in [(true, 200), (false, 200), (true, 486), (false, 404)] {
            let sc = Scenario { seed, rfc2543, status, invite: status != 404, ..base.clone() };
            let out = Sim::new(sc.clone()).run(Duration::from_secs(1000));
            assert!(out.violations.is_empty(), "{sc:?}: {:?}", out.violations);
            assert_eq!(out.created.values().sum::<usize>(), 1, "{sc:?}");
            runs += 1;
            absorbed += out.absorbed;
            dropped += out.dropped;
            duplicated += out.duplicated;
            server_acks += out.server_acks;
            stray_acks += out.stray_acks;
            extra_finals += out.finals.len().saturating_sub(1);
            if status == 200 {
                assert!(!out.finals.is_empty());
            } else {
                assert_eq!(out.finals, [status]);
            }
        }
    }
    assert!(dropped > 100 && duplicated > 100, "{dropped} dropped, {duplicated} duplicated");
    assert!(absorbed > runs / 2, "request retransmissions reached the server transaction: {absorbed} in {runs} runs");
    assert!(server_acks > 0, "ACKs of 2xx reached the transaction in Accepted");
    assert!(stray_acks > 0, "ACKs of 2xx with a new branch went to the TU");
    assert!(extra_finals > 0, "retransmitted 2xx passed up again");
}

// ---- arbitrary inputs to single transactions ----

#[derive(Clone, Debug)]
enum Input {
    /// Let time pass (milliseconds) and fire what is due.
    Wait(u64),
    /// A response with this status from the network (client) or the TU (server).
    Response(u16, bool),
    /// A retransmission of the request (server).
    Retransmit,
    /// An ACK (server), with the To tag of the last response or another.
    Ack(bool),
    TransportError,
    /// A response for some other transaction.
    Foreign(u16),
}

fn input() -> impl Strategy<Value = Input> {
    let status = prop_oneof![100u16..=199, 200u16..=299, 300u16..=699, 0u16..=1000];
    prop_oneof![
        4 => (0u64..40_000).prop_map(Input::Wait),
        4 => (status.clone(), any::<bool>()).prop_map(|(s, t)| Input::Response(s, t)),
        2 => Just(Input::Retransmit),
        2 => any::<bool>().prop_map(Input::Ack),
        1 => Just(Input::TransportError),
        1 => status.prop_map(Input::Foreign),
    ]
}

const METHODS: &[&str] = &["INVITE", "OPTIONS", "BYE", "CANCEL", "X-CUSTOM"];

fn base_request(method: &str, branch: &str) -> Message {
    let text = format!(
        "{method} sip:bob@example.net SIP/2.0\r\n\
         Via: SIP/2.0/UDP pc.example.com:5060;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=f1\r\n\
         To: <sip:bob@example.net>\r\n\
         Call-ID: arb@pc.example.com\r\n\
         CSeq: 5 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text), Framing::Datagram).unwrap()
}

fn response(req: &Message, status: u16, tag: bool) -> Message {
    let mut r = req.response_to(status.clamp(100, 699), "Any", Some(if tag { "t1" } else { "t2" }));
    if !(100..=699).contains(&status) {
        // Out of range statuses only arrive built by code (the parser refuses them).
        r = Message::new_response(status, "Odd");
        for (name, value) in req.response_to(100, "x", None).header_fields() {
            r.push_header(name, value);
        }
    }
    r
}

/// An ACK for `req` as a UAC builds it for a non-2xx response (the same Via), with To tag `t1`
/// (the one [`response`] gives with `tag`) or `t2`.
fn ack(req: &Message, tag: bool) -> Option<Message> {
    let mut a = Message::new_request("ACK", req.request_uri_str()?);
    a.push_header(HeaderName::Via, req.header(HeaderName::Via)?);
    a.push_header(HeaderName::From, req.header(HeaderName::From)?);
    a.push_header(HeaderName::To, &format!("<sip:bob@example.net>;tag={}", if tag { "t1" } else { "t2" }));
    a.push_header(HeaderName::CallId, req.header(HeaderName::CallId)?);
    a.push_header(HeaderName::CSeq, &format!("{} ACK", req.cseq().ok()?.seq));
    Some(a)
}

/// What holds after every input, whatever the input.
#[derive(Default)]
struct Invariants {
    terminated: bool,
    finals: Vec<u16>,
    violations: Vec<String>,
}

impl Invariants {
    fn event(&mut self, what: String, is_terminated: bool, final_status: Option<u16>) {
        if self.terminated {
            self.violations.push(format!("event after Terminated: {what}"));
        }
        if let Some(s) = final_status {
            self.finals.push(s);
        }
        self.terminated |= is_terminated;
    }
    fn timer(&mut self, t: Option<Instant>, now: Instant) {
        if t.is_some_and(|t| t < now) {
            self.violations.push("timer in the past".into());
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_inputs_client(
        method in prop::sample::select(METHODS),
        rfc2543 in any::<bool>(),
        reliable in any::<bool>(),
        inputs in prop::collection::vec(input(), 0..40),
    ) {
        let branch = if rfc2543 { "legacy7" } else { "z9hG4bKarb" };
        let req = base_request(method, branch);
        let other = base_request(method, "z9hG4bKother");
        let t0 = Instant::now();
        let mut now = t0;
        let mut c = ClientTransaction::new(req.clone(), reliable, &Timers::default(), now).unwrap();
        let mut inv = Invariants::default();
        let mut last_state = c.state();
        for i in inputs {
            match i {
                Input::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    c.handle_timeout(now);
                }
                Input::Response(s, t) => {
                    let r = c.handle_response(response(&req, s, t), now);
                    prop_assert_eq!(r.is_ok(), (100..=699).contains(&s));
                }
                Input::Foreign(s) => {
                    let before = c.state();
                    prop_assert!(c.handle_response(response(&other, s, true), now).is_err());
                    prop_assert_eq!(c.state(), before);
                }
                Input::Retransmit | Input::Ack(_) => {
                    prop_assert!(c.handle_response(req.clone(), now).is_err());
                }
                Input::TransportError => c.handle_transport_error(now),
            }
            while c.poll_transmit().is_some() {}
            while let Some(e) = c.poll_event() {
                let final_status = match &e { ClientEvent::Final(m) => m.status(), _ => None };
                inv.event(format!("{e:?}"), matches!(e, ClientEvent::Terminated), final_status);
            }
            inv.timer(c.poll_timeout(), now);
            // States only move forward.
            let order = |s: ClientState| match s {
                ClientState::Calling | ClientState::Trying => 0,
                ClientState::Proceeding => 1,
                ClientState::Accepted | ClientState::Completed => 2,
                ClientState::Terminated => 3,
            };
            prop_assert!(order(c.state()) >= order(last_state));
            last_state = c.state();
            prop_assert_eq!(c.state() == ClientState::Terminated, inv.terminated);
        }
        prop_assert!(inv.violations.is_empty(), "{:?}", inv.violations);
        // Only 2xx to INVITE may pass up more than once; a non-2xx final passes up once and
        // ends what may pass up.
        let non_2xx = inv.finals.iter().filter(|s| !(200..300).contains(*s)).count();
        if method == "INVITE" {
            prop_assert!(non_2xx <= 1);
            if non_2xx == 1 {
                prop_assert_eq!(inv.finals.len(), 1);
            }
        } else {
            prop_assert!(inv.finals.len() <= 1);
        }
        // Enough time always ends it (no INVITE stays in Proceeding without a final, though).
        now += Duration::from_secs(200);
        c.handle_timeout(now);
        if c.state() != ClientState::Proceeding || method != "INVITE" {
            prop_assert_eq!(c.state(), ClientState::Terminated);
        }
    }

    #[test]
    fn arbitrary_inputs_server(
        method in prop::sample::select(METHODS),
        rfc2543 in any::<bool>(),
        reliable in any::<bool>(),
        inputs in prop::collection::vec(input(), 0..40),
    ) {
        let branch = if rfc2543 { "legacy7" } else { "z9hG4bKarb" };
        let req = base_request(method, branch);
        let foreign = base_request(if method == "OPTIONS" { "BYE" } else { "OPTIONS" }, branch);
        let invite = method == "INVITE";
        let t0 = Instant::now();
        let mut now = t0;
        let mut s = ServerTransaction::new(req.clone(), reliable, &Timers::default(), now).unwrap();
        let mut inv = Invariants::default();
        let mut first_final: Option<u16> = None;
        // The To tag flag of the final response sent.
        let mut final_tag: Option<bool> = None;
        for i in inputs {
            let before = s.state();
            match i {
                Input::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    s.handle_timeout(now);
                }
                Input::Response(st, t) => {
                    let r = s.send_response(response(&req, st, t), now);
                    if r.is_ok() && st >= 200 {
                        // One final per transaction; only an INVITE's 2xx may be repeated (the
                        // TU's retransmissions).
                        if let Some(f) = first_final {
                            prop_assert!(invite && (200..300).contains(&f) && (200..300).contains(&st));
                        }
                        first_final.get_or_insert(st);
                        final_tag.get_or_insert(t);
                    }
                    if r.is_err() {
                        prop_assert_eq!(s.state(), before);
                    }
                }
                Input::Foreign(_) => {
                    prop_assert!(s.handle_request(foreign.clone(), now).is_err());
                    prop_assert_eq!(s.state(), before);
                }
                Input::Retransmit => s.handle_request(req.clone(), now).unwrap(),
                Input::Ack(tag) => {
                    let r = s.handle_request(ack(&req, tag).unwrap(), now);
                    if !invite {
                        prop_assert!(r.is_err());
                    } else if r.is_err() {
                        // Only RFC 2543 matching refuses an ACK: one in Completed without the
                        // final response's To tag.
                        prop_assert!(rfc2543 && before == ServerState::Completed && final_tag != Some(tag));
                    }
                }
                Input::TransportError => {
                    s.handle_transport_error(now);
                    prop_assert_eq!(s.state(), before);
                }
            }
            while s.poll_transmit().is_some() {}
            while let Some(e) = s.poll_event() {
                inv.event(format!("{e:?}"), matches!(e, ServerEvent::Terminated), None);
            }
            inv.timer(s.poll_timeout(), now);
            prop_assert_eq!(s.state() == ServerState::Terminated, inv.terminated);
        }
        prop_assert!(inv.violations.is_empty(), "{:?}", inv.violations);
        // Once a final is sent, enough time always ends it.
        if first_final.is_some() {
            now += Duration::from_secs(200);
            s.handle_timeout(now);
            prop_assert_eq!(s.state(), ServerState::Terminated);
        }
    }

    #[test]
    fn keys_match_as_the_rfc_says(
        branch in "[a-zA-Z0-9.!%*_+`'~-]{1,24}",
        cookie in any::<bool>(),
        host in prop_oneof![
            "[a-z]{1,12}(\\.[a-z]{1,8}){0,3}",
            any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])),
            any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
        ],
        port in prop::option::of(1u16..),
        method in prop::sample::select(&["INVITE", "OPTIONS", "BYE", "REGISTER"][..]),
    ) {
        let branch = if cookie { format!("z9hG4bK{branch}") } else { branch };
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let text = format!(
            "{method} sip:bob@example.net SIP/2.0\r\n\
             Via: SIP/2.0/UDP {host}{port};branch={branch}\r\n\
             From: <sip:alice@example.com>;tag=f1\r\n\
             To: <sip:bob@example.net>\r\n\
             Call-ID: k@example.com\r\n\
             CSeq: 9 {method}\r\n\r\n"
        );
        let req = Message::parse(Bytes::from(text.clone()), Framing::Datagram).unwrap();
        let key = TransactionKey::for_server(&req).unwrap();
        // Retransmissions match; the same request with the host in upper case too.
        let upper = text.replacen(&format!("UDP {host}"), &format!("UDP {}", host.to_uppercase()), 1);
        let again = Message::parse(Bytes::from(upper), Framing::Datagram).unwrap();
        prop_assert_eq!(&TransactionKey::for_server(&again).unwrap(), &key);
        // The client side of the same request matches its responses.
        let client = ClientTransaction::new(req.clone(), false, &Timers::default(), Instant::now()).unwrap();
        let resp = req.response_to(200, "OK", Some("t9"));
        prop_assert_eq!(&TransactionKey::for_client_response(&resp).unwrap(), client.key());
        if method == "INVITE" {
            let ack = ack(&req, true).unwrap();
            prop_assert_eq!(&TransactionKey::for_server(&ack).unwrap(), &key);
            let cancel = Message::parse(
                Bytes::from(text.replacen("INVITE sip", "CANCEL sip", 1).replace("9 INVITE", "9 CANCEL")),
                Framing::Datagram,
            )
            .unwrap();
            prop_assert_eq!(&TransactionKey::cancel_target(&cancel).unwrap(), &key);
            prop_assert_ne!(&TransactionKey::for_server(&cancel).unwrap(), &key);
        }
    }

    #[test]
    fn keys_of_arbitrary_messages_never_panic(data in prop::collection::vec(any::<u8>(), 0..400), seed in any::<u8>()) {
        let mut text = base_request("INVITE", "z9hG4bKx").to_bytes().to_vec();
        let at = usize::from(seed) % text.len();
        text.splice(at..at, data);
        if let Ok(m) = Message::parse(Bytes::from(text), Framing::Datagram) {
            let _ = TransactionKey::for_server(&m);
            let _ = TransactionKey::for_client_response(&m);
            let _ = TransactionKey::cancel_target(&m);
            let now = Instant::now();
            if let Ok(mut c) = ClientTransaction::new(m.clone(), false, &Timers::default(), now) {
                let _ = c.handle_response(m.response_to(486, "x", Some("t")), now);
                c.handle_timeout(now + Duration::from_secs(40));
            }
            if let Ok(mut s) = ServerTransaction::new(m.clone(), false, &Timers::default(), now) {
                let _ = s.handle_request(m.clone(), now);
                let _ = s.send_response(m.response_to(486, "x", Some("t")), now);
                if let Some(a) = ack(&m, true) {
                    let _ = s.handle_request(a, now);
                }
                s.handle_timeout(now + Duration::from_secs(40));
            }
        }
    }
}
