//! Which core of a sharded switch takes a call.
//!
//! The first core reads every datagram. A call it keeps costs nothing more than on a switch of
//! one core; a call handed to another core costs that core's wake-ups and the hand-off of each
//! of its messages, 35-45% more CPU a call at 500 calls/s when every other call went there by a
//! hash of its Call-ID (docs/performance.md, sixth round). Under load the hand-offs are shared by
//! many messages and a burst is worked on both CPUs at once. So new calls stay on the first core
//! while its turns are short, and are dealt round the cores only in turns crowded enough that
//! their datagrams would queue behind each other.
//!
//! Every later message of a call must reach the core that took it. The Call-IDs our cores make
//! (B legs, UAC registrations) carry the making core's mark, `~N` before the `@` ([`core_mark`]),
//! so a carrier's answers and requests find it without a table. A caller's Call-ID dealt to
//! another core is remembered here ([`Placement`]) until that core has said the call is over,
//! and for 64*T1 more, as long as a retransmission of its last requests can come; one that never
//! became a call (refused, cancelled) is forgotten 2 x 64*T1 after it was dealt. Routing is a
//! function of the Call-ID and this table alone: a caller who mimics a mark only puts its calls
//! on that core, each with all its messages, as a hash did.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sip::headers::HeaderName;
use sip::{Framing, Message};

use super::HashMap;
use crate::transport::Inbound;

/// The core a Call-ID of ours names: the decimal `N` of a `~N` that ends the part before the
/// `@` (or the whole id). `None` for any other Call-ID.
pub fn core_mark(call_id: &[u8]) -> Option<usize> {
    let local = call_id.split(|&b| b == b'@').next().unwrap_or(call_id);
    let tilde = memchr::memrchr(b'~', local)?;
    let digits = &local[tilde + 1..];
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0usize, |n, d| Some(n * 10 + usize::from(d - b'0')))
}

/// Appends core `index`'s mark to the local part of a Call-ID being made.
pub(super) fn push_core_mark(out: &mut String, index: usize) {
    use std::fmt::Write;
    let _ = write!(out, "~{index}");
}

/// The value of a message's Call-ID header, read off its raw header lines (long or compact
/// form, without parsing the message); `None` when it has none.
pub(super) fn raw_call_id(data: &[u8]) -> Option<&[u8]> {
    raw_headers(data).find_map(|(name, value)| (name == HeaderName::CallId).then_some(value))
}

/// A message's header lines as (name, trimmed value), up to the blank line; the start line is
/// skipped. Folded continuation lines are not joined (Call-ID and CSeq are never folded by the
/// peers that matter; one that is only loses its place in a turn or its core's choice).
pub(super) fn raw_headers(data: &[u8]) -> impl Iterator<Item = (HeaderName, &[u8])> {
    let mut at = memchr::memchr(b'\n', data).map_or(data.len(), |i| i + 1);
    std::iter::from_fn(move || {
        while at < data.len() {
            let end = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |i| at + i);
            let line = &data[at..end];
            at = end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                at = data.len(); // the end of the header
                return None;
            }
            let Some(colon) = memchr::memchr(b':', line) else { continue };
            let name = HeaderName::from_bytes(line[..colon].trim_ascii_end());
            return Some((name, line[colon + 1..].trim_ascii()));
        }
        None
    })
}

/// A caller's Call-ID dealt to a core other than the first.
#[derive(Debug)]
struct Placed {
    core: usize,
    /// Calls of this Call-ID the core holds (it says when one starts and when one is over).
    calls: u32,
    /// When it is forgotten, if no call holds it by then.
    expires: Instant,
}

/// What a core other than the first tells the first about a caller's Call-ID it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementNote {
    pub call_id: Box<[u8]>,
    /// A call of this Call-ID started (`true`) or is over (`false`).
    pub held: bool,
}

/// The first core's table of callers' Call-IDs dealt to the other cores (see the module's
/// documentation).
#[derive(Debug)]
pub struct Placement {
    cores: usize,
    /// 64*T1: how long after a call is over its Call-ID still routes to its core.
    linger: Duration,
    /// The most Call-IDs remembered: past it new calls stay on the first core. A flood of
    /// INVITEs refused at once would otherwise leave an entry each for 2 x 64*T1; the
    /// transactions they make are bounded the same way (`max_transactions`).
    most: usize,
    placed: HashMap<Box<[u8]>, Placed>,
    /// Expiries in the order they were set (each queue's are set a constant time ahead, so
    /// each stays in order): at dealing, and at a call's end.
    dealt: VecDeque<(Instant, Box<[u8]>)>,
    released: VecDeque<(Instant, Box<[u8]>)>,
    next: usize,
}

impl Placement {
    pub fn new(cores: usize, linger: Duration, most: usize) -> Placement {
        Placement {
            cores: cores.max(1),
            linger,
            most,
            placed: HashMap::default(),
            dealt: VecDeque::new(),
            released: VecDeque::new(),
            next: 0,
        }
    }

    /// Callers' Call-IDs remembered.
    pub fn len(&self) -> usize {
        self.placed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.placed.is_empty()
    }

    /// The core `inbound` belongs to. `crowded`: the first core is behind (a long turn), so a
    /// new call (an INVITE without a To tag, of a Call-ID not ours nor dealt, that the first
    /// core does not hold: `first_holds`, a retransmission of one it took) is dealt to the
    /// next core in turn, the first included; otherwise it stays on the first. A message without
    /// a Call-ID goes to the first, which answers or drops it as one core would.
    pub fn core_of(
        &mut self,
        inbound: &Inbound,
        crowded: bool,
        now: Instant,
        first_holds: impl FnOnce(&Message) -> bool,
    ) -> usize {
        if self.cores <= 1 {
            return 0;
        }
        let Some(call_id) = raw_call_id(&inbound.data) else { return 0 };
        if let Some(core) = core_mark(call_id).filter(|&c| c < self.cores) {
            return core;
        }
        if let Some(placed) = self.placed.get(call_id) {
            return placed.core;
        }
        if !crowded || !inbound.data.starts_with(b"INVITE ") {
            return 0;
        }
        let framing = if inbound.kind.is_reliable() { Framing::Stream } else { Framing::Datagram };
        match Message::parse(inbound.data.clone(), framing) {
            // Dealt only when the Call-ID read off the raw lines is the one the core will
            // read (a folded one is not), so that the core's notes name what is remembered.
            Ok(invite)
                if matches!(invite.to_tag(), Ok(None))
                    && invite.call_id().is_ok_and(|c| c.as_bytes() == call_id)
                    && !first_holds(&invite) =>
            {
                self.deal(call_id, now)
            }
            _ => 0,
        }
    }

    fn deal(&mut self, call_id: &[u8], now: Instant) -> usize {
        if self.placed.len() >= self.most {
            return 0;
        }
        let core = self.next;
        self.next = (self.next + 1) % self.cores;
        if core != 0 {
            let expires = now + 2 * self.linger;
            self.placed.insert(call_id.into(), Placed { core, calls: 0, expires });
            self.dealt.push_back((expires, call_id.into()));
        }
        core
    }

    /// Takes what another core says about a Call-ID it holds; a Call-ID not dealt (one of its
    /// own marks) is not remembered.
    pub fn note(&mut self, note: PlacementNote, now: Instant) {
        let Some(placed) = self.placed.get_mut(&note.call_id) else { return };
        if note.held {
            placed.calls += 1;
            return;
        }
        placed.calls = placed.calls.saturating_sub(1);
        if placed.calls == 0 {
            placed.expires = now + self.linger;
            self.released.push_back((placed.expires, note.call_id));
        }
    }

    /// Forgets the Call-IDs no call holds whose time is up.
    pub fn expire(&mut self, now: Instant) {
        for queue in [&mut self.dealt, &mut self.released] {
            while let Some((at, _)) = queue.front()
                && *at <= now
            {
                let Some((_, call_id)) = queue.pop_front() else { break };
                // A later expiry, or a call holding it, keeps it; another entry of the queue
                // (or of the other queue) comes for it then.
                if self.placed.get(&call_id).is_some_and(|p| p.calls == 0 && p.expires <= now) {
                    self.placed.remove(&call_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::transport::TransportKind;

    fn inbound(text: &str) -> Inbound {
        Inbound {
            kind: TransportKind::Udp,
            conn: None,
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "127.0.0.2:5060".parse().unwrap(),
            data: Bytes::from(text.to_owned()),
        }
    }

    fn request(method: &str, call_id: &str, to_tag: Option<&str>) -> Inbound {
        let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        inbound(&format!(
            "{method} sip:+15551234567@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@10.0.0.5>;tag=1\r\nTo: <sip:+15551234567@10.0.0.1>{tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    const LINGER: Duration = Duration::from_secs(32);

    #[test]
    fn marks_are_read_before_the_at_and_only_as_digits() {
        for (id, want) in [
            (&b"3f2a~1@10.0.0.1"[..], Some(1)),
            (b"3f2a~12", Some(12)),
            (b"a~b~0@h", Some(0)),
            (b"3f2a@10.0.0.1~1", None),
            (b"3f2a~@h", None),
            (b"3f2a~1x@h", None),
            (b"3f2a~123456@h", None),
            (b"plain@pbx", None),
            (b"", None),
        ] {
            assert_eq!(core_mark(id), want, "{}", String::from_utf8_lossy(id));
        }
        let mut made = String::from("3f2a");
        push_core_mark(&mut made, 7);
        made.push_str("@h");
        assert_eq!(core_mark(made.as_bytes()), Some(7));
    }

    #[test]
    fn the_call_id_is_read_in_either_form_and_a_message_without_one_goes_to_the_first_core() {
        let long = request("BYE", "  call-1@10.0.0.5 ", Some("x"));
        assert_eq!(raw_call_id(&long.data), Some(&b"call-1@10.0.0.5"[..]));
        let compact = inbound(&String::from_utf8_lossy(&long.data).replace("Call-ID:", "i:"));
        assert_eq!(raw_call_id(&compact.data), Some(&b"call-1@10.0.0.5"[..]));
        // The body is not the header.
        let in_body = inbound("MESSAGE sip:a@b SIP/2.0\r\nCSeq: 1 MESSAGE\r\n\r\nCall-ID: x\r\n");
        assert_eq!(raw_call_id(&in_body.data), None);
        let mut placement = Placement::new(2, LINGER, 100);
        assert_eq!(placement.core_of(&in_body, true, Instant::now(), |_| false), 0);
        assert_eq!(placement.core_of(&inbound("garbage"), true, Instant::now(), |_| false), 0);
    }

    #[test]
    fn new_calls_stay_on_the_first_core_until_a_turn_is_crowded_then_are_dealt_in_turn() {
        let t0 = Instant::now();
        let mut placement = Placement::new(3, LINGER, 100);
        for n in 0..5 {
            let invite = request("INVITE", &format!("quiet-{n}@pbx"), None);
            assert_eq!(placement.core_of(&invite, false, t0, |_| false), 0);
        }
        assert!(placement.is_empty(), "nothing is remembered for the first core's calls");
        let dealt: Vec<usize> = (0..6)
            .map(|n| placement.core_of(&request("INVITE", &format!("busy-{n}@pbx"), None), true, t0, |_| false))
            .collect();
        assert_eq!(dealt, [0, 1, 2, 0, 1, 2]);
        assert_eq!(placement.len(), 4, "only the Call-IDs dealt to other cores are remembered");
        // Every later message of a dealt call follows it, crowded or not, from either side.
        for (n, &core) in dealt.iter().enumerate() {
            let id = format!("busy-{n}@pbx");
            for msg in
                [request("ACK", &id, Some("b")), request("BYE", &id, Some("b")), request("INVITE", &id, Some("b"))]
            {
                assert_eq!(placement.core_of(&msg, n % 2 == 0, t0, |_| false), core, "{id}");
            }
            // A retransmitted INVITE is not dealt again: one dealt to another core is
            // remembered here, one the first core took is known to it.
            let first_holds = |m: &Message| core == 0 && m.call_id().is_ok_and(|c| c == id);
            assert_eq!(placement.core_of(&request("INVITE", &id, None), true, t0, first_holds), core);
        }
        // A Call-ID folded onto a second line is not read the same off the raw lines: its
        // call stays on the first core, whose notes it needs none of.
        let folded = inbound(
            &String::from_utf8_lossy(&request("INVITE", "fold-1@pbx", None).data)
                .replace("Call-ID: fold-1@pbx", "Call-ID:\r\n  fold-1@pbx"),
        );
        assert_eq!(Message::parse(folded.data.clone(), Framing::Datagram).unwrap().call_id().unwrap(), "fold-1@pbx");
        for _ in 0..3 {
            assert_eq!(placement.core_of(&folded, true, t0, |_| false), 0);
        }
        // An in-dialog request of an undealt call, a re-INVITE included, stays where it is.
        assert_eq!(placement.core_of(&request("INVITE", "quiet-1@pbx", Some("b")), true, t0, |_| false), 0);
        assert_eq!(placement.core_of(&request("OPTIONS", "ping@pbx", None), true, t0, |_| false), 0);
        // Our own Call-IDs go to the core that made them; a mark beyond the cores is no mark.
        assert_eq!(placement.core_of(&request("BYE", "9c1d~2@10.0.0.1", Some("b")), false, t0, |_| false), 2);
        assert_eq!(placement.core_of(&request("BYE", "9c1d~9@10.0.0.1", Some("b")), false, t0, |_| false), 0);
        // Past the most Call-IDs remembered, new calls stay on the first core.
        let mut small = Placement::new(2, LINGER, 1);
        let dealt: Vec<usize> = (0..4)
            .map(|n| small.core_of(&request("INVITE", &format!("cap-{n}@pbx"), None), true, t0, |_| false))
            .collect();
        assert_eq!(dealt, [0, 1, 0, 0]);
        assert_eq!(small.len(), 1);
        small.expire(t0 + 2 * LINGER);
        let later: Vec<usize> = ["cap-8@pbx", "cap-9@pbx"]
            .iter()
            .map(|id| small.core_of(&request("INVITE", id, None), true, t0 + 2 * LINGER, |_| false))
            .collect();
        assert_eq!(later, [0, 1], "room again once the first is forgotten");
        // One core: everything is its.
        let mut one = Placement::new(1, LINGER, 100);
        assert_eq!(one.core_of(&request("INVITE", "x~0@h", None), true, t0, |_| false), 0);
        assert!(one.is_empty());
    }

    #[test]
    fn a_dealt_call_id_is_kept_while_its_calls_last_and_64_t1_after() {
        let t0 = Instant::now();
        let mut placement = Placement::new(2, LINGER, 100);
        let invite = |id: &str| request("INVITE", id, None);
        let note = |id: &str, held| PlacementNote { call_id: id.as_bytes().into(), held };
        assert_eq!(placement.core_of(&invite("first@pbx"), true, t0, |_| false), 0);
        // Two calls of one Call-ID (a fork back to us) on core 1, and one refused.
        assert_eq!(placement.core_of(&invite("held@pbx"), true, t0, |_| false), 1);
        assert_eq!(placement.core_of(&invite("x@pbx"), true, t0, |_| false), 0);
        assert_eq!(placement.core_of(&invite("refused@pbx"), true, t0, |_| false), 1);
        placement.note(note("held@pbx", true), t0);
        placement.note(note("held@pbx", true), t0);
        // Notes about Call-IDs not dealt change nothing.
        placement.note(note("9c1d~1@us", true), t0);
        placement.note(note("9c1d~1@us", false), t0);
        assert_eq!(placement.len(), 2);

        // The refused one goes 2 x 64*T1 after it was dealt; the held one stays.
        placement.expire(t0 + 2 * LINGER - Duration::from_millis(1));
        assert_eq!(placement.len(), 2);
        placement.expire(t0 + 2 * LINGER);
        assert_eq!(placement.len(), 1);
        let bye = request("BYE", "held@pbx", Some("b"));
        assert_eq!(placement.core_of(&bye, false, t0 + Duration::from_secs(3600), |_| false), 1);

        // One call over: still held by the other. Both over: kept 64*T1, then forgotten.
        let t1 = t0 + Duration::from_secs(3600);
        placement.note(note("held@pbx", false), t1);
        placement.expire(t1 + 2 * LINGER);
        assert_eq!(placement.core_of(&bye, false, t1 + 2 * LINGER, |_| false), 1);
        let t2 = t1 + 3 * LINGER;
        placement.note(note("held@pbx", false), t2);
        placement.expire(t2 + LINGER - Duration::from_millis(1));
        assert_eq!(placement.core_of(&bye, false, t2 + LINGER - Duration::from_millis(1), |_| false), 1);
        placement.expire(t2 + LINGER);
        assert!(placement.is_empty());
        assert_eq!(
            placement.core_of(&bye, false, t2 + LINGER, |_| false),
            0,
            "an unknown call's BYE is the first core's"
        );

        // A Call-ID dealt again after it was forgotten is not forgotten early by the old entries.
        let t3 = t2 + 10 * LINGER;
        assert_eq!(placement.core_of(&invite("y@pbx"), true, t3, |_| false), 0);
        assert_eq!(placement.core_of(&invite("held@pbx"), true, t3, |_| false), 1);
        placement.note(note("held@pbx", true), t3);
        placement.expire(t3 + 10 * LINGER);
        assert_eq!(placement.core_of(&bye, false, t3 + 10 * LINGER, |_| false), 1);
    }
}
