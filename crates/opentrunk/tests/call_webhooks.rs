//! A call's webhooks as a customer's receiver gets them: a connection with a
//! `webhook_event_url` on a local HTTP receiver, one call through `opentrunk serve` between SIPp
//! peers, and `call.initiated`, `call.answered` and `call.hangup` arrive, each signed with
//! Ed25519 over `timestamp|body` by the key `GET /v2/public_key` publishes (and a body changed
//! in transit does not verify). Skipped with one line when SIPp is missing, except where
//! `OPENTRUNK_REQUIRE_SIPP=1` (CI).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

mod peers;
mod support;

use peers::*;

/// One POST the receiver got: its headers (names in lowercase) and body.
#[derive(Clone, Debug)]
struct Post {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// A tiny HTTP/1.1 receiver on 127.0.0.1 that answers every request 200 and keeps it.
struct Receiver {
    addr: SocketAddr,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let posts = Arc::new(Mutex::new(Vec::new()));
        let kept = posts.clone();
        // Lives as long as the test process: a blocked accept costs nothing.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve(stream, &kept));
            }
        });
        Receiver { addr, posts }
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

/// Reads requests off one connection (a pooled client may send several) until it closes.
fn serve(stream: TcpStream, posts: &Mutex<Vec<Post>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let body = if headers.get("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            read_chunked(&mut reader)
        } else {
            let len = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0usize);
            let mut buf = vec![0; len];
            if reader.read_exact(&mut buf).is_err() {
                return;
            }
            buf
        };
        posts.lock().unwrap().push(Post { path, headers, body: String::from_utf8_lossy(&body).into_owned() });
        if writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return body;
        }
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        let mut chunk = vec![0; n + 2];
        if reader.read_exact(&mut chunk).is_err() || n == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_call_posts_initiated_answered_and_hangup_signed_with_the_published_key() {
    if !sipp_available() {
        return;
    }
    let receiver = Receiver::start();
    let server = start_switch("");
    let dir = work_dir("webhooks");
    let before = generations(&server);
    let account = account(&server, "acme", None);
    let profile = profile(&server, &account, None);
    let (gateway, at) = Running::gateway(&dir, "carrier", "carrier_answer.xml", GATEWAY_1_IP, Some(1));
    carrier(&server, "upstream", &[at], None, None);
    let conn = create(
        &server,
        "/v2/ip_connections",
        &account.key,
        json!({
            "connection_name": "pbx-hooks",
            "webhook_event_url": format!("http://{}/events", receiver.addr),
            "webhook_api_version": "2",
            "webhook_timeout_secs": 5,
            "outbound": {"outbound_voice_profile_id": profile},
        }),
    );
    create(&server, "/v2/ips", &account.key, json!({"connection_id": id(&conn), "ip_address": PBX_IP}));
    wait_config_applied(&server, before);

    // The key as a customer gets it: with their own API key.
    let (code, key) = api(&server, "GET", "/v2/public_key", &account.key, None);
    assert_eq!(code, 200, "{key}");
    let public_key = engine::webhooks::public_key_from_base64(key["data"]["public_key"].as_str().expect("public_key"))
        .unwrap_or_else(|| panic!("not an Ed25519 public key: {key}"));

    let pbx = Sipp::pbx(&dir, "pbx", "pbx_call.xml", &server, PBX_IP, DESTINATION).run();
    pbx.assert_succeeded("the PBX's call", 1);
    gateway.wait(Duration::from_secs(15)).assert_succeeded("the carrier", 1);

    let wanted = ["call.initiated", "call.answered", "call.hangup"];
    let posts = wait_for(Duration::from_secs(15), "the call's three webhooks", || {
        let posts = receiver.posts();
        let types: Vec<String> = posts.iter().map(|p| event_type(&p.body)).collect();
        wanted.iter().all(|w| types.iter().any(|t| t == w)).then_some(posts)
    });

    for post in &posts {
        assert_eq!(post.path, "/events");
        let signature = post.headers.get("telnyx-signature-ed25519").unwrap_or_else(|| panic!("unsigned: {post:?}"));
        let timestamp = post.headers.get("telnyx-timestamp").unwrap_or_else(|| panic!("no timestamp: {post:?}"));
        assert!(
            engine::webhooks::verify(&public_key, timestamp, &post.body, signature),
            "{} does not verify with the published key: {post:?}",
            event_type(&post.body)
        );
        let tampered = post.body.replacen("call.", "cal1.", 1);
        assert!(
            !engine::webhooks::verify(&public_key, timestamp, &tampered, signature),
            "a changed body must not verify"
        );
        let event: Value = serde_json::from_str(&post.body).expect("JSON body");
        assert_eq!(event["data"]["payload"]["connection_id"], id(&conn).as_str(), "{event}");
    }
    let hangup = posts.iter().find(|p| event_type(&p.body) == "call.hangup").expect("call.hangup");
    let hangup: Value = serde_json::from_str(&hangup.body).unwrap();
    assert_eq!(hangup["data"]["payload"]["hangup_source"], "caller", "{hangup}");
    for w in wanted {
        let n = posts.iter().filter(|p| event_type(&p.body) == w).count();
        assert_eq!(n, 1, "{w} delivered once (a 200 answers it)");
    }
}

fn event_type(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["data"]["event_type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}
