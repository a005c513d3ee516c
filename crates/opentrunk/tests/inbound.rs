//! Inbound calls through `opentrunk serve` with real peers on loopback: SIPp as the carrier
//! delivering a call for one of the platform's numbers (from its `inbound_ips`), SIPp as the
//! customer's PBXes at the IPs of an IP connection. Sequential delivery fails over from a `503`
//! to the next IP, a `486` is not failed over, round-robin spreads calls evenly, and the
//! numbers nobody can take get the product's responses.
//!
//! Skipped with one line when SIPp is missing, except where `OPENTRUNK_REQUIRE_SIPP=1` (CI).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

mod peers;
mod support;

use peers::*;

/// The carrier's address (its `inbound_ips`), and the PBXes of the customer.
const CARRIER_IP: &str = "127.0.0.2";
const PBX_IPS: [&str; 3] = ["127.0.0.3", "127.0.0.6", "127.0.0.7"];
/// The platform number the carrier calls.
const NUMBER: &str = "+12125550123";

struct Platform {
    server: support::Server,
    account: Account,
    dir: std::path::PathBuf,
    before: (u64, Option<u64>),
}

impl Platform {
    fn new(test: &str) -> Platform {
        let server = start_switch("");
        let before = generations(&server);
        let account = account(&server, "acme", None);
        origination_carrier(&server, CARRIER_IP);
        Platform { server, account, dir: work_dir(test), before }
    }

    /// An IP connection delivering to `pbxs` in `routing` order, and `NUMBER` pointed at it.
    fn connection(&self, routing: &str, pbxs: &[SocketAddr]) -> Value {
        let c = create(
            &self.server,
            "/v2/ip_connections",
            &self.account.key,
            json!({"connection_name": "office", "inbound": {"default_routing_method": routing}}),
        );
        for pbx in pbxs {
            create(
                &self.server,
                "/v2/ips",
                &self.account.key,
                json!({"connection_id": id(&c), "ip_address": pbx.ip().to_string(), "port": pbx.port()}),
            );
        }
        self.number(NUMBER, Some(&id(&c)));
        c
    }

    fn number(&self, number: &str, connection: Option<&str>) {
        let mut body = json!({"phone_number": number, "account_id": self.account.id});
        if let Some(c) = connection {
            body["connection_id"] = json!(c);
        }
        create(&self.server, "/v2/phone_numbers", OPERATOR_KEY, body);
    }

    fn applied(&mut self) {
        wait_config_applied(&self.server, self.before);
        self.before = generations(&self.server);
    }

    /// The carrier calling `dial` through the switch.
    fn carrier_call(&self, name: &str, scenario_file: &str, dial: &str) -> Sipp {
        Sipp::pbx(&self.dir, name, scenario_file, &self.server, CARRIER_IP, dial)
    }

    fn pbx(&self, name: &str, scenario_file: &str, ip: &str, calls: Option<u64>) -> (Running, SocketAddr) {
        Running::gateway(&self.dir, name, scenario_file, ip, calls)
    }
}

#[test]
fn sequential_delivery_fails_over_from_503_to_the_next_ip() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("inbound-sequential");
    let (first, at_1) = p.pbx("pbx-1", "carrier_503.xml", PBX_IPS[0], Some(1));
    let (second, at_2) = p.pbx("pbx-2", "carrier_answer.xml", PBX_IPS[1], Some(1));
    let conn = p.connection("sequential", &[at_1, at_2]);
    p.applied();

    let carrier = p.carrier_call("carrier", "pbx_call.xml", NUMBER).run();
    carrier.assert_succeeded("the carrier's call", 1);
    first.wait(Duration::from_secs(15)).assert_succeeded("PBX 1 (503)", 1);
    let second = second.wait(Duration::from_secs(15));
    second.assert_succeeded("PBX 2 (answers)", 1);
    let invite = second.requests("INVITE");
    assert!(invite[0].contains("12125550123@"), "the number reaches the PBX: {invite:?}");
    assert!(!second.messages.contains(&carrier.call_ids()[0]), "the carrier's Call-ID stays on its leg");

    let cdr = wait_for(Duration::from_secs(10), "the inbound call's record", || {
        cdrs(&p.server, &format!("&filter[connection_id]={}", id(&conn))).into_iter().next()
    });
    assert_eq!((&cdr["direction"], &cdr["sip_response_code"]), (&json!("inbound"), &json!(200)), "{cdr}");
    let attempts = cdr["route_attempts"].as_array().unwrap_or_else(|| panic!("route_attempts: {cdr}"));
    assert_eq!(attempts.len(), 2, "{cdr}");
    assert_eq!((&attempts[0]["port"], &attempts[0]["sip_response_code"]), (&json!(at_1.port()), &json!(503)));
    assert_eq!((&attempts[1]["port"], &attempts[1]["sip_response_code"]), (&json!(at_2.port()), &json!(200)));
}

#[test]
fn busy_is_returned_to_the_carrier_without_trying_the_next_ip() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("inbound-busy");
    let (first, at_1) = p.pbx("pbx-1", "carrier_486.xml", PBX_IPS[0], Some(1));
    let (second, at_2) = p.pbx("pbx-2", "carrier_answer.xml", PBX_IPS[1], None);
    p.connection("sequential", &[at_1, at_2]);
    p.applied();

    let carrier = p.carrier_call("carrier", "pbx_refused.xml", NUMBER).run();
    carrier.assert_succeeded("the carrier's refused call", 1);
    assert!(carrier.last_final().is_some_and(|l| l.starts_with("SIP/2.0 486")), "{:?}", carrier.last_final());
    first.wait(Duration::from_secs(15)).assert_succeeded("PBX 1 (486)", 1);
    let second = second.stop(Duration::from_secs(10));
    assert!(second.requests("INVITE").is_empty(), "PBX 2 never hears of the call:\n{}", second.messages);
}

#[test]
fn round_robin_spreads_300_calls_evenly_over_three_ips() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("inbound-round-robin");
    let pbxs: Vec<(Running, SocketAddr)> =
        PBX_IPS.iter().enumerate().map(|(i, ip)| p.pbx(&format!("pbx-{i}"), "carrier_answer.xml", ip, None)).collect();
    let addrs: Vec<SocketAddr> = pbxs.iter().map(|(_, a)| *a).collect();
    p.connection("round-robin", &addrs);
    p.applied();

    let carrier = p.carrier_call("carrier", "pbx_call.xml", NUMBER).args(["-m", "300", "-r", "60", "-d", "100"]).run();
    carrier.assert_succeeded("the carrier's 300 calls", 300);
    for (i, (pbx, _)) in pbxs.into_iter().enumerate() {
        let run = pbx.stop(Duration::from_secs(15));
        let got = run.requests("INVITE").len();
        assert!((90..=110).contains(&got), "PBX {i} took {got} of 300 calls (within 10% of 100 expected)");
    }
    wait_metric(&p.server, "opentrunk_channels_held", 0.0, Duration::from_secs(10));
}

#[test]
fn numbers_nobody_can_take_get_the_product_responses() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("inbound-refused");
    p.number("+12125550155", None);
    p.applied();
    for (dial, expected) in [("+12125550199", "SIP/2.0 404"), ("+12125550155", "SIP/2.0 480 No destination number D21")]
    {
        let run = p.carrier_call(&format!("carrier-{}", &dial[1..]), "pbx_refused.xml", dial).run();
        run.assert_succeeded("a refused call", 1);
        let status = run.last_final().unwrap_or_default().to_owned();
        assert!(status.starts_with(expected), "{dial}: {status}");
    }
}

#[test]
fn every_ip_failing_forwards_the_call_to_its_forwarding_number_over_the_carriers() {
    if !sipp_available() {
        return;
    }
    let server = start_switch("");
    let before = generations(&server);
    let account = account(&server, "acme", None);
    let profile = profile(&server, &account, None);
    let dir = work_dir("inbound-forwarding");
    // One carrier both ways: its gateway takes the forwarded call, its address brings calls in.
    let (gateway, at_gateway) = Running::gateway(&dir, "gateway", "carrier_answer.xml", "127.0.0.9", Some(1));
    let body = json!({
        "name": "both-ways",
        "gateways": [{"host": at_gateway.ip().to_string(), "port": at_gateway.port(), "transport": "UDP", "priority": 1}],
        "inbound_ips": [CARRIER_IP],
    });
    create(&server, "/v2/carriers", OPERATOR_KEY, body);
    let (pbx, at_pbx) = Running::gateway(&dir, "pbx", "carrier_503.xml", PBX_IPS[0], Some(1));
    let conn = create(
        &server,
        "/v2/ip_connections",
        &account.key,
        json!({"connection_name": "office", "outbound": {"outbound_voice_profile_id": profile}}),
    );
    create(
        &server,
        "/v2/ips",
        &account.key,
        json!({"connection_id": id(&conn), "ip_address": at_pbx.ip().to_string(), "port": at_pbx.port()}),
    );
    let number = phone_number(&server, &account, NUMBER, &id(&conn));
    let forwarding = json!({"call_forwarding": {
        "call_forwarding_enabled": true, "forwarding_type": "on-failure", "forwards_to": "+13125550150"}});
    let (code, body) =
        api(&server, "PATCH", &format!("/v2/phone_numbers/{}/voice", id(&number)), &account.key, Some(&forwarding));
    assert_eq!(code, 200, "{body}");
    wait_config_applied(&server, before);

    let dir2 = work_dir("inbound-forwarding-carrier");
    let carrier = Sipp::pbx(&dir2, "carrier", "pbx_call.xml", &server, CARRIER_IP, NUMBER).run();
    carrier.assert_succeeded("the carrier's call", 1);
    pbx.wait(Duration::from_secs(15)).assert_succeeded("the PBX (503)", 1);
    let gateway = gateway.wait(Duration::from_secs(15));
    gateway.assert_succeeded("the forwarding number's carrier", 1);
    let invite = gateway.requests("INVITE");
    assert!(invite[0].contains("13125550150@"), "forwarded to the forwarding number: {invite:?}");

    let cdr = wait_for(Duration::from_secs(10), "the forwarded call's record", || {
        cdrs(&server, &format!("&filter[connection_id]={}", id(&conn))).into_iter().next()
    });
    let attempts = cdr["route_attempts"].as_array().unwrap_or_else(|| panic!("{cdr}"));
    assert_eq!(attempts.len(), 2, "the PBX, then the forwarding number: {cdr}");
    assert_eq!(attempts[1]["sip_response_code"], 200, "{cdr}");
    assert_eq!(cdr["rate"], json!(RATE), "billed at the forwarding leg's rate: {cdr}");
    assert!(cdr["cost"].as_str().is_some_and(|c| c != "0"), "{cdr}");
}

#[test]
fn a_sip_subdomain_reaches_its_connection_from_whom_its_settings_allow() {
    if !sipp_available() {
        return;
    }
    let p = Platform::new("inbound-subdomain");
    let (pbx, at_pbx) = p.pbx("pbx", "carrier_answer.xml", PBX_IPS[0], Some(2));
    let mut before = generations(&p.server);
    let c = create(
        &p.server,
        "/v2/ip_connections",
        &p.account.key,
        json!({"connection_name": "office", "inbound": {"sip_subdomain": "acme"}}),
    );
    create(
        &p.server,
        "/v2/ips",
        &p.account.key,
        json!({"connection_id": id(&c), "ip_address": at_pbx.ip().to_string(), "port": at_pbx.port()}),
    );
    // Another connection of the same account, calling from its own address.
    let branch = create(&p.server, "/v2/ip_connections", &p.account.key, json!({"connection_name": "branch"}));
    let branch_ip = "127.0.0.4";
    create(&p.server, "/v2/ips", &p.account.key, json!({"connection_id": id(&branch), "ip_address": branch_ip}));
    wait_config_applied(&p.server, before);
    let outsider = "127.0.0.8";
    let call = |name: &str, scenario: &str, from: &str, host: &str| {
        Sipp::pbx(&p.dir, name, scenario, &p.server, from, "reception").key("to_host", host).run()
    };
    let refused = |name: &str, host: &str| {
        let run = call(name, "host_refused.xml", outsider, host);
        run.assert_succeeded(name, 1);
        run.last_final().unwrap_or_default().to_owned()
    };
    // Only the account's own connections by default: a caller nothing identifies is asked who
    // it is, and a subdomain nobody has gets the same answer (nothing is told apart).
    assert_eq!(refused("only-mine", "acme.sip.opentrunk.local"), "SIP/2.0 407 Proxy Authentication Required");
    assert_eq!(refused("nobody", "globex.sip.opentrunk.local"), "SIP/2.0 407 Proxy Authentication Required");
    call("branch", "host_call.xml", branch_ip, "acme.sip.opentrunk.local").assert_succeeded("the branch's call", 1);

    before = generations(&p.server);
    let path = format!("/v2/ip_connections/{}", id(&c));
    let patch = json!({"inbound": {"sip_subdomain_receive_settings": "from_anyone"}});
    let (code, body) = api(&p.server, "PATCH", &path, &p.account.key, Some(&patch));
    assert_eq!(code, 200, "{body}");
    wait_config_applied(&p.server, before);
    call("from-anyone", "host_call.xml", outsider, "ACME.sip.opentrunk.local")
        .assert_succeeded("the outsider's call", 1);
    assert_eq!(refused("still-nobody", "globex.sip.opentrunk.local"), "SIP/2.0 407 Proxy Authentication Required");
    let pbx = pbx.wait(Duration::from_secs(15));
    pbx.assert_succeeded("the connection's PBX", 2);
    let invite = pbx.requests("INVITE");
    assert!(invite[0].starts_with("INVITE sip:reception@"), "the user part as dialed: {invite:?}");
}

#[test]
fn a_customer_calling_a_platform_number_is_delivered_on_net() {
    if !sipp_available() {
        return;
    }
    let p = Platform::new("on-net");
    // The callee: another account's PBX, owning the number.
    let callee = account(&p.server, "globex", None);
    let (pbx_b, at_b) = p.pbx("pbx-b", "carrier_answer.xml", PBX_IPS[0], Some(1));
    let before = generations(&p.server);
    let conn_b = create(&p.server, "/v2/ip_connections", &callee.key, json!({"connection_name": "globex-pbx"}));
    create(
        &p.server,
        "/v2/ips",
        &callee.key,
        json!({"connection_id": id(&conn_b), "ip_address": at_b.ip().to_string(), "port": at_b.port()}),
    );
    phone_number(&p.server, &callee, NUMBER, &id(&conn_b));
    // The caller: this account's PBX with an outbound voice profile.
    let profile = profile(&p.server, &p.account, None);
    let conn_a =
        ip_connection(&p.server, &p.account, "acme-pbx", "127.0.0.4", json!({"outbound_voice_profile_id": profile}));
    wait_config_applied(&p.server, before);

    let caller = Sipp::pbx(&p.dir, "pbx-a", "pbx_call.xml", &p.server, "127.0.0.4", NUMBER).run();
    caller.assert_succeeded("the on-net call", 1);
    let pbx_b = pbx_b.wait(Duration::from_secs(15));
    pbx_b.assert_succeeded("the number's PBX", 1);
    let cdr = wait_for(Duration::from_secs(10), "the caller's record", || {
        cdrs(&p.server, &format!("&filter[connection_id]={}", id(&conn_a))).into_iter().next()
    });
    let attempts = cdr["route_attempts"].as_array().unwrap_or_else(|| panic!("{cdr}"));
    assert_eq!(attempts.len(), 1, "{cdr}");
    assert_eq!((&attempts[0]["gateway"], &attempts[0]["port"]), (&json!(PBX_IPS[0]), &json!(at_b.port())), "{cdr}");
    assert_eq!(cdr["rate"], json!(RATE), "rated as the caller's outbound call: {cdr}");
}
