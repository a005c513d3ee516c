//! `opentrunk serve` under abuse: 100,000 random and mutated datagrams and 1,000 TCP
//! connections sending garbage, half messages and oversized headers. It must not crash, its
//! memory must settle instead of growing, and it must answer OPTIONS throughout. Mutated
//! torture messages name foreign hosts, so this runs in a loopback-only network namespace.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[path = "../../sip/tests/support/corpus.rs"]
mod corpus;
mod support;

/// xorshift64*: deterministic and dependency-free; the seed is printed for replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEED_MESSAGE: &[u8] = b"INVITE sip:+12125551212@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKseed;rport\r\nMax-Forwards: 70\r\n\
From: \"Caller\" <sip:+13125550100@127.0.0.1>;tag=abc\r\nTo: <sip:+12125551212@127.0.0.1>\r\n\
Call-ID: seed@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:5999>\r\n\
Content-Type: application/sdp\r\nContent-Length: 24\r\n\r\nv=0\r\ns=-\r\nt=0 0\r\nm=x\r\n\r\n";

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = v.len().max(1);
        match rng.below(6) {
            0 => {
                let i = rng.below(len);
                if let Some(b) = v.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
            1 => {
                let i = rng.below(len);
                {
                    let specials = b":;,<>\"\\\r\n %@[]";
                    v.insert(i.min(v.len()), specials[rng.below(specials.len())]);
                }
            }
            2 if !v.is_empty() => {
                v.remove(rng.below(len).min(v.len() - 1));
            }
            3 => v.truncate(rng.below(len)),
            4 => {
                // Duplicate a slice: repeated headers, repeated parameters.
                let a = rng.below(len).min(v.len());
                let b = (a + rng.below(64)).min(v.len());
                let chunk = v[a..b].to_vec();
                v.splice(a..a, chunk);
            }
            _ => {
                let i = rng.below(len).min(v.len());
                let digits = ["4294967296", "-1", "99999999999999999999", "0", "65536"][rng.below(5)];
                v.splice(i..i, digits.bytes());
            }
        }
    }
    v
}

fn metric(server: &support::Server, name: &str) -> u64 {
    let (_, body) = support::http_get(server.api, "/metrics").expect("metrics");
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(u64::MAX)
}

fn assert_answers(server: &support::Server, probe: &UdpSocket, n: &mut u32, when: &str) {
    for _ in 0..5 {
        *n += 1;
        if server.options_ping(probe, *n) == Some(200) {
            return;
        }
    }
    panic!("no answer to OPTIONS {when}");
}

#[test]
fn floods_of_garbage_and_broken_connections() {
    if !support::in_loopback_namespace("floods_of_garbage_and_broken_connections") {
        return;
    }
    let mut corpus: Vec<Vec<u8>> = vec![SEED_MESSAGE.to_vec()];
    if let Some(dir) = corpus::conformance_dir() {
        corpus.extend(corpus::rows(&dir).into_iter().map(|r| r.bytes));
    }
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("abuse seed {seed}");
    let mut rng = Rng(seed);
    // Short timers so flood transactions expire within the test; a short idle timeout so
    // half-open connections are reaped.
    let server = support::Server::start_with_config(
        "[sip]\nt1_ms = 50\nt2_ms = 400\nidle_timeout_secs = 3\nmax_connections_per_ip = 300\n",
        &[],
    );
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut pings = 0;
    assert_answers(&server, &probe, &mut pings, "at start");

    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    let round = |rng: &mut Rng, pings: &mut u32| {
        for i in 0..50_000u32 {
            let d = if i % 2 == 0 {
                let n = rng.below(1500);
                (0..n).map(|_| rng.next() as u8).collect()
            } else {
                let base = &corpus[rng.below(corpus.len())];
                mutate(rng, base)
            };
            let _ = flood.send_to(&d, server.sip);
            if i % 200 == 199 {
                std::thread::sleep(Duration::from_millis(1));
            }
            if i % 10_000 == 9_999 {
                assert_answers(&server, &probe, pings, &format!("after {} datagrams", i + 1));
            }
        }
        // Let the flood's transactions run out their timers (64*T1 = 3.2 s).
        std::thread::sleep(Duration::from_secs(4));
        server.rss_kib()
    };
    let rss_a = round(&mut rng, &mut pings);
    let rss_b = round(&mut rng, &mut pings);
    println!("RSS after 50k datagrams: {rss_a} KiB, after 100k: {rss_b} KiB");
    assert!(rss_b <= rss_a + rss_a / 2 + 16 * 1024, "memory keeps growing: {rss_a} -> {rss_b} KiB");
    assert!(metric(&server, "opentrunk_sip_messages_received_total") > 10_000);
    assert_answers(&server, &probe, &mut pings, "after 100k datagrams");

    // 1,000 connections from four source addresses: garbage, half messages, oversized
    // headers, and a valid message followed by garbage.
    let mut conns = Vec::new();
    for i in 0..1000usize {
        let src: SocketAddr = format!("127.0.0.{}:0", 2 + i % 4).parse().unwrap();
        let sock = socket2_connect(src, server.sip);
        let Some(mut s) = sock else { continue };
        let payload: Vec<u8> = match i % 4 {
            0 => (0..rng.below(4096)).map(|_| rng.next() as u8).collect(),
            1 => SEED_MESSAGE[..SEED_MESSAGE.len() / 2].to_vec(),
            2 => {
                let mut v = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n".to_vec();
                while v.len() < 80_000 {
                    v.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
                }
                v
            }
            _ => {
                let mut v = SEED_MESSAGE.to_vec();
                v.extend((0..512).map(|_| rng.next() as u8));
                v
            }
        };
        let _ = s.write_all(&payload);
        conns.push(s);
    }
    assert!(conns.len() >= 990, "only {} connections were accepted", conns.len());
    assert_answers(&server, &probe, &mut pings, "with 1,000 connections open");
    // Oversized and unframeable ones are closed at once; the rest when idle (3 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&server, "opentrunk_sip_connections") > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(&server, "opentrunk_sip_connections"), 0, "idle connections were not reaped");
    drop(conns);
    assert_answers(&server, &probe, &mut pings, "at the end");

    let mut server = server;
    let status = server.terminate(Duration::from_secs(20)).expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

/// A TCP connection from a chosen source address (std cannot bind before connecting).
fn socket2_connect(src: SocketAddr, dst: SocketAddr) -> Option<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&src.into()).ok()?;
    sock.connect_timeout(&dst.into(), Duration::from_secs(2)).ok()?;
    let s: TcpStream = sock.into();
    s.set_write_timeout(Some(Duration::from_millis(200))).ok()?;
    Some(s)
}
