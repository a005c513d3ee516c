//! Outbound calls through `opentrunk serve` with real peers on loopback: SIPp as the customer's
//! PBX and as the carrier's gateways, every resource made through the `/v2` API. Each way a
//! customer proves who it is (digest credentials, IP + token, IP + tech prefix, IP +
//! P-Charge-Info) completes a call that is billed at the deck's rate, and the wrong proof gets
//! the product's response; the limits answer with their codes from the outside (D1, D2, D3, D35,
//! D38, D24); a 503 fails over to the next gateway and a 486 does not.
//!
//! Skipped with one line when SIPp is missing, except where `OPENTRUNK_REQUIRE_SIPP=1` (CI).
//! SIPp's message logs stay in the temporary directory named in a failure's message.

use std::time::Duration;

use serde_json::{Value, json};

mod peers;
mod support;

use peers::*;

/// A platform for one test: the switch, an account with its deck and a profile.
struct Platform {
    server: support::Server,
    account: Account,
    profile: String,
    dir: std::path::PathBuf,
    before: (u64, Option<u64>),
}

impl Platform {
    /// `limits`: the account's and the profile's concurrent call limits.
    /// The switch runs two cores here (elsewhere one), dealing every call round them: every
    /// call's messages must reach the core that took it, and limits hold across cores.
    fn new(test: &str, account_limit: Option<u32>, profile_limit: Option<u32>) -> Platform {
        let server = start_switch("[sip]\ncores = 2\nspread_from = 1\n");
        let before = generations(&server);
        let account = account(&server, "acme", account_limit);
        let profile = profile(&server, &account, profile_limit);
        Platform { server, account, profile, dir: work_dir(test), before }
    }

    /// Waits until the switch decides with everything made so far.
    fn applied(&mut self) {
        wait_config_applied(&self.server, self.before);
        self.before = generations(&self.server);
    }

    fn pbx(&self, name: &str, scenario_file: &str, ip: &str, dial: &str) -> Sipp {
        Sipp::pbx(&self.dir, name, scenario_file, &self.server, ip, dial)
    }

    fn gateway(
        &self,
        name: &str,
        scenario_file: &str,
        ip: &str,
        calls: Option<u64>,
    ) -> (Running, std::net::SocketAddr) {
        Running::gateway(&self.dir, name, scenario_file, ip, calls)
    }

    /// An IP connection at `address` using the profile, with more `outbound` settings.
    fn ip_connection(&self, name: &str, address: &str, mut outbound: Value) -> Value {
        outbound["outbound_voice_profile_id"] = json!(self.profile);
        ip_connection(&self.server, &self.account, name, address, outbound)
    }
}

/// An answered call's record: 200, hung up by the caller, billed per the deck's increments at
/// its rate.
fn assert_billed(cdr: &Value) {
    assert_eq!(cdr["sip_response_code"], 200, "{cdr}");
    assert!(cdr["answered_at"].is_string(), "answered, so answered_at is set: {cdr}");
    assert_eq!(cdr["hangup_source"], "caller", "{cdr}");
    let answered = utc_ms(cdr["answered_at"].as_str().unwrap());
    let talked_ms = utc_ms(cdr["ended_at"].as_str().unwrap_or_else(|| panic!("ended_at: {cdr}"))) - answered;
    assert!((0..5000).contains(&talked_ms), "a call held half a second lasted {talked_ms} ms: {cdr}");
    let call_sec = cdr["call_sec"].as_u64().unwrap_or_else(|| panic!("call_sec: {cdr}"));
    let started_seconds = (talked_ms as u64).div_ceil(1000);
    assert!((talked_ms as u64 / 1000..=started_seconds).contains(&call_sec), "call_sec of {talked_ms} ms: {cdr}");
    let billed_sec = cdr["billed_sec"].as_u64().unwrap_or_else(|| panic!("billed_sec: {cdr}"));
    assert_eq!(billed_sec, billed(started_seconds, INCREMENT), "{talked_ms} ms billed per {INCREMENT:?}: {cdr}");
    assert_eq!(billed_sec, u64::from(INCREMENT.0), "a short answered call is billed the first increment: {cdr}");
    let rate = cdr["rate"].as_str().unwrap_or_else(|| panic!("rate: {cdr}"));
    assert_eq!(decimal_micros(rate), decimal_micros(RATE), "the deck's rate: {cdr}");
    let cost = cdr["cost"].as_str().unwrap_or_else(|| panic!("cost: {cdr}"));
    assert_eq!(decimal_micros(cost), micro_cost(RATE, billed_sec), "rate x billed seconds / 60: {cdr}");
    assert_eq!(cdr["currency"], "USD", "{cdr}");
}

/// The A-leg Call-ID of a PBX's (single) call.
fn call_id(run: &SippRun) -> String {
    run.call_ids().into_iter().next().unwrap_or_else(|| panic!("no Call-ID in {}", run.log.display()))
}

/// Runs a PBX call that must be refused and returns the final status line it got.
fn refused(run: SippRun) -> (String, String) {
    run.assert_succeeded("the refused call's scenario", 1);
    let status = run.last_final().unwrap_or_else(|| panic!("no final response in {}", run.log.display())).to_owned();
    (status, call_id(&run))
}

const LOGIN: (&str, &str) = ("opentrunk", "carrier-pass");

#[test]
fn credential_connection_completes_a_call_through_a_carrier_that_challenges() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("credential", None, None);
    // The carrier wants our login and its tech prefix 99.
    let (gateway, at) = p.gateway("carrier", "carrier_challenge.xml", GATEWAY_1_IP, Some(1));
    carrier(&p.server, "upstream", &[at], Some(LOGIN), Some("99"));
    let conn = create(
        &p.server,
        "/v2/credential_connections",
        &p.account.key,
        json!({
            "connection_name": "pbx-cred",
            "user_name": "acmepbx1",
            "password": "s3cretpass",
            "outbound": {"outbound_voice_profile_id": p.profile},
        }),
    );
    p.applied();

    // SIPp's digest `uri` is the Request-URI only when told so.
    let auth_uri = format!("{DESTINATION}@{}", p.server.sip);
    let pbx = p
        .pbx("pbx", "pbx_call_auth.xml", ROAMING_PBX_IP, DESTINATION)
        .args(["-au", "acmepbx1", "-ap", "s3cretpass", "-auth_uri", &auth_uri])
        .run();
    pbx.assert_succeeded("the PBX's call", 1);
    let statuses = pbx.status_lines();
    assert!(statuses.iter().any(|l| l.starts_with("SIP/2.0 407")), "the first INVITE is challenged: {statuses:?}");

    let carrier_side = gateway.wait(Duration::from_secs(15));
    carrier_side.assert_succeeded("the carrier (its login verified)", 1);
    let invites = carrier_side.requests("INVITE");
    assert_eq!(invites.len(), 2, "challenged once, then with credentials: {invites:?}");
    for invite in &invites {
        assert!(
            invite.starts_with("INVITE sip:9912125550123@"),
            "the carrier's tech prefix before the number: {invite}"
        );
    }

    let cdr = wait_cdr(&p.server, &id(&conn), &call_id(&pbx));
    assert_billed(&cdr);
    assert_eq!(cdr["account_id"], p.account.id.as_str(), "{cdr}");
    assert_eq!(cdr["outbound_voice_profile_id"], p.profile.as_str(), "{cdr}");
    // Every call is dealt round the two cores: the challenged INVITE stayed on the first, the
    // one with credentials (a new transaction) went to the second, which carried the call.
    assert_eq!(metric(&p.server, "opentrunk_sip_calls_dealt_total"), Some(1.0));
}

#[test]
fn credential_connection_with_a_wrong_password_is_refused_d25() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("credential-wrong", None, None);
    let (_gateway, at) = p.gateway("carrier", "carrier_answer.xml", GATEWAY_1_IP, None);
    carrier(&p.server, "upstream", &[at], None, None);
    create(
        &p.server,
        "/v2/credential_connections",
        &p.account.key,
        json!({
            "connection_name": "pbx-cred",
            "user_name": "acmepbx2",
            "password": "s3cretpass",
            "outbound": {"outbound_voice_profile_id": p.profile},
        }),
    );
    p.applied();
    let auth_uri = format!("{DESTINATION}@{}", p.server.sip);
    let run = p
        .pbx("pbx", "pbx_auth_refused.xml", ROAMING_PBX_IP, DESTINATION)
        .args(["-au", "acmepbx2", "-ap", "not-the-password", "-auth_uri", &auth_uri])
        .run();
    let (status, _) = refused(run);
    assert_eq!(status, "SIP/2.0 403 Authentication failed D25");
}

#[test]
fn ip_connection_with_its_token_completes_a_call_and_a_wrong_token_gets_d26() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("token", None, None);
    let (gateway, at) = p.gateway("carrier", "carrier_answer.xml", GATEWAY_1_IP, Some(1));
    carrier(&p.server, "upstream", &[at], None, None);
    let token = "acme-token-000001";
    let conn = p.ip_connection(
        "pbx-token",
        PBX_IP,
        json!({"ip_authentication_method": "token", "ip_authentication_token": token}),
    );
    p.applied();

    let pbx = p
        .pbx("pbx", "pbx_call.xml", PBX_IP, DESTINATION)
        .key("extra_header", &format!("X-Telnyx-Token: {token}"))
        .run();
    pbx.assert_succeeded("the PBX's call with its token", 1);
    gateway.wait(Duration::from_secs(15)).assert_succeeded("the carrier", 1);
    assert_billed(&wait_cdr(&p.server, &id(&conn), &call_id(&pbx)));

    let wrong = p
        .pbx("pbx-wrong", "pbx_refused.xml", PBX_IP, DESTINATION)
        .key("extra_header", "X-Telnyx-Token: not-acme-token-01")
        .run();
    assert_eq!(refused(wrong).0, "SIP/2.0 403 IP authentication token mismatch D26");
    let missing = p.pbx("pbx-missing", "pbx_refused.xml", PBX_IP, DESTINATION).run();
    assert_eq!(refused(missing).0, "SIP/2.0 403 IP authentication token mismatch D26");
}

#[test]
fn ip_connection_told_apart_by_tech_prefix_completes_a_call_and_a_wrong_prefix_is_challenged() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("tech-prefix", None, None);
    let (gateway, at) = p.gateway("carrier", "carrier_answer.xml", GATEWAY_1_IP, Some(1));
    carrier(&p.server, "upstream", &[at], None, None);
    // Two connections on one address: only the prefix says which one calls.
    let a = p.ip_connection("pbx-a", PBX_IP, json!({}));
    let b = p.ip_connection("pbx-b", PBX_IP, json!({}));
    p.applied();
    let (prefix_a, prefix_b) = (tech_prefix(&a), tech_prefix(&b));
    let national = DESTINATION.trim_start_matches('+');

    let pbx = p.pbx("pbx", "pbx_call.xml", PBX_IP, &format!("{prefix_a}{national}")).run();
    pbx.assert_succeeded("the PBX's call with connection A's prefix", 1);
    let carrier_side = gateway.wait(Duration::from_secs(15));
    carrier_side.assert_succeeded("the carrier", 1);
    assert_eq!(
        carrier_side.requests("INVITE"),
        vec![format!("INVITE sip:{national}@{at} SIP/2.0")],
        "the customer's tech prefix is not sent on"
    );
    assert_billed(&wait_cdr(&p.server, &id(&a), &call_id(&pbx)));

    let wrong_prefix = (1000..10_000).map(|n| n.to_string()).find(|n| *n != prefix_a && *n != prefix_b).unwrap();
    let wrong = p.pbx("pbx-wrong", "pbx_refused.xml", PBX_IP, &format!("{wrong_prefix}{national}")).run();
    assert_eq!(refused(wrong).0, "SIP/2.0 407 Proxy Authentication Required");
}

#[test]
fn ip_connection_told_apart_by_p_charge_info_completes_a_call_and_an_unassigned_number_gets_d28() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("charge-info", None, None);
    let (gateway, at) = p.gateway("carrier", "carrier_answer.xml", GATEWAY_1_IP, Some(1));
    carrier(&p.server, "upstream", &[at], None, None);
    let _a = p.ip_connection("pbx-a", PBX_IP, json!({}));
    let b = p.ip_connection("pbx-b", PBX_IP, json!({}));
    create(
        &p.server,
        "/v2/phone_numbers",
        OPERATOR_KEY,
        json!({"phone_number": CALLER, "account_id": p.account.id, "connection_id": id(&b)}),
    );
    p.applied();

    let header = format!("P-Charge-Info: <sip:{CALLER}@{PBX_IP}>");
    let pbx = p.pbx("pbx", "pbx_call.xml", PBX_IP, DESTINATION).key("extra_header", &header).run();
    pbx.assert_succeeded("the PBX's call naming connection B's number", 1);
    gateway.wait(Duration::from_secs(15)).assert_succeeded("the carrier", 1);
    assert_billed(&wait_cdr(&p.server, &id(&b), &call_id(&pbx)));

    let wrong = p
        .pbx("pbx-wrong", "pbx_refused.xml", PBX_IP, DESTINATION)
        .key("extra_header", &format!("P-Charge-Info: <sip:+13125550111@{PBX_IP}>"))
        .run();
    assert_eq!(refused(wrong).0, "SIP/2.0 403 P-Charge-Info number not assigned D28");
}

/// Two calls held up on a limit of 2; the third gets `status`, and its record says `code`.
/// Every channel comes back once the two end.
fn third_concurrent_call_refused(
    test: &str,
    account: Option<u32>,
    profile: Option<u32>,
    connection: Option<u32>,
) -> (String, Value) {
    let mut p = Platform::new(test, account, profile);
    let (gateway, at) = p.gateway("carrier", "carrier_answer.xml", GATEWAY_1_IP, Some(2));
    carrier(&p.server, "upstream", &[at], None, None);
    let outbound = match connection {
        Some(l) => json!({"channel_limit": l}),
        None => json!({}),
    };
    let conn = p.ip_connection("pbx", PBX_IP, outbound);
    p.applied();

    let held = p
        .pbx("pbx-held", "pbx_call.xml", PBX_IP, DESTINATION)
        .args(["-m", "2", "-l", "2", "-r", "20", "-d", "8000"])
        .spawn();
    wait_metric(&p.server, "opentrunk_calls_active", 2.0, Duration::from_secs(10));
    let (status, refused_call) = refused(p.pbx("pbx-third", "pbx_refused.xml", PBX_IP, DESTINATION).run());

    held.wait(Duration::from_secs(30)).assert_succeeded("the two calls within the limit", 2);
    gateway.wait(Duration::from_secs(15)).assert_succeeded("the carrier", 2);
    wait_metric(&p.server, "opentrunk_calls_active", 0.0, Duration::from_secs(10));
    wait_metric(&p.server, "opentrunk_channels_held", 0.0, Duration::from_secs(10));
    let cdr = wait_cdr(&p.server, &id(&conn), &refused_call);
    (status, cdr)
}

#[test]
fn account_limit_of_2_refuses_the_third_concurrent_call_d1() {
    if !sipp_available() {
        return;
    }
    let (status, cdr) = third_concurrent_call_refused("limit-d1", Some(2), None, None);
    assert_eq!(status, "SIP/2.0 403 User channel limit exceeded D1");
    assert_eq!((&cdr["sip_response_code"], &cdr["reason_code"]), (&json!(403), &json!("D1")), "{cdr}");
}

#[test]
fn profile_limit_of_2_refuses_the_third_concurrent_call_d2() {
    if !sipp_available() {
        return;
    }
    let (status, cdr) = third_concurrent_call_refused("limit-d2", None, Some(2), None);
    assert_eq!(status, "SIP/2.0 403 Outbound profile channel limit exceeded D2");
    assert_eq!((&cdr["sip_response_code"], &cdr["reason_code"]), (&json!(403), &json!("D2")), "{cdr}");
}

#[test]
fn connection_limit_of_2_refuses_the_third_concurrent_call_d3() {
    if !sipp_available() {
        return;
    }
    let (status, cdr) = third_concurrent_call_refused("limit-d3", None, None, Some(2));
    assert_eq!(status, "SIP/2.0 403 Connection channel limit exceeded D3");
    assert_eq!((&cdr["sip_response_code"], &cdr["reason_code"]), (&json!(403), &json!("D3")), "{cdr}");
}

#[test]
fn invalid_caller_id_no_profile_and_a_destination_above_the_max_rate_get_d35_d38_d24() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("refusals", None, None);
    // A gateway that sees no call: every one of these is refused before routing.
    let (gateway, at) = p.gateway("carrier", "carrier_answer.xml", GATEWAY_1_IP, None);
    carrier(&p.server, "upstream", &[at], None, None);
    let conn = p.ip_connection("pbx", PBX_IP, json!({}));
    // A connection without a profile, on its own address.
    let bare_ip = "127.0.0.6";
    let bare = ip_connection(&p.server, &p.account, "pbx-no-profile", bare_ip, json!({}));
    p.applied();

    let cases = [
        ("d35", PBX_IP, DESTINATION, "12345", "SIP/2.0 403 Caller Origination Number is Invalid D35", "D35", id(&conn)),
        ("d38", bare_ip, DESTINATION, CALLER, "SIP/2.0 403 No outbound voice profile D38", "D38", id(&bare)),
        (
            "d24",
            PBX_IP,
            EXPENSIVE_DESTINATION,
            CALLER,
            "SIP/2.0 403 Rate exceeds maximum destination rate D24",
            "D24",
            id(&conn),
        ),
    ];
    for (name, from, dial, caller, want, code, connection) in cases {
        let run = p.pbx(name, "pbx_refused.xml", from, dial).key("caller", caller).run();
        let (status, call) = refused(run);
        assert_eq!(status, want, "{name}");
        let cdr = wait_cdr(&p.server, &connection, &call);
        assert_eq!((&cdr["sip_response_code"], &cdr["reason_code"]), (&json!(403), &json!(code)), "{cdr}");
        assert!(cdr["b_leg_call_id"].is_null(), "refused before routing, no B leg: {cdr}");
    }
    let carrier_side = gateway.stop(Duration::from_secs(10));
    assert!(
        carrier_side.requests("INVITE").is_empty(),
        "no refused call reaches the carrier: {}",
        carrier_side.messages
    );
}

#[test]
fn gateway_503_fails_over_to_the_second_gateway_which_answers() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("failover", None, None);
    let (first, at_1) = p.gateway("gateway-1", "carrier_503.xml", GATEWAY_1_IP, Some(1));
    let (second, at_2) = p.gateway("gateway-2", "carrier_answer.xml", GATEWAY_2_IP, Some(1));
    let carrier_id = carrier(&p.server, "upstream", &[at_1, at_2], None, None);
    let conn = p.ip_connection("pbx", PBX_IP, json!({}));
    p.applied();

    let pbx = p.pbx("pbx", "pbx_call.xml", PBX_IP, DESTINATION).run();
    pbx.assert_succeeded("the PBX's call", 1);
    first.wait(Duration::from_secs(15)).assert_succeeded("gateway 1 (503)", 1);
    second.wait(Duration::from_secs(15)).assert_succeeded("gateway 2 (answers)", 1);

    let cdr = wait_cdr(&p.server, &id(&conn), &call_id(&pbx));
    assert_billed(&cdr);
    let attempts = cdr["route_attempts"].as_array().unwrap_or_else(|| panic!("route_attempts: {cdr}"));
    assert_eq!(attempts.len(), 2, "{cdr}");
    let (a1, a2) = (&attempts[0], &attempts[1]);
    assert_eq!(
        (&a1["carrier_id"], &a1["gateway"], &a1["port"]),
        (&json!(carrier_id), &json!(GATEWAY_1_IP), &json!(at_1.port()))
    );
    assert_eq!((&a1["outcome"], &a1["sip_response_code"]), (&json!("response"), &json!(503)), "{a1}");
    assert_eq!((&a2["gateway"], &a2["port"]), (&json!(GATEWAY_2_IP), &json!(at_2.port())), "{a2}");
    assert_eq!((&a2["outcome"], &a2["sip_response_code"]), (&json!("response"), &json!(200)), "{a2}");
}

#[test]
fn gateway_486_goes_back_to_the_caller_without_trying_the_second_gateway() {
    if !sipp_available() {
        return;
    }
    let mut p = Platform::new("busy", None, None);
    let (first, at_1) = p.gateway("gateway-1", "carrier_486.xml", GATEWAY_1_IP, Some(1));
    let (second, at_2) = p.gateway("gateway-2", "carrier_answer.xml", GATEWAY_2_IP, None);
    carrier(&p.server, "upstream", &[at_1, at_2], None, None);
    let conn = p.ip_connection("pbx", PBX_IP, json!({}));
    p.applied();

    let (status, call) = refused(p.pbx("pbx", "pbx_refused.xml", PBX_IP, DESTINATION).run());
    assert_eq!(status.get(..11), Some("SIP/2.0 486"), "the carrier's busy goes back to the caller: {status}");
    first.wait(Duration::from_secs(15)).assert_succeeded("gateway 1 (486)", 1);
    let cdr = wait_cdr(&p.server, &id(&conn), &call);
    let second_side = second.stop(Duration::from_secs(10));
    assert!(second_side.requests("INVITE").is_empty(), "gateway 2 must see no INVITE: {}", second_side.messages);
    assert_eq!(cdr["sip_response_code"], 486, "{cdr}");
    let attempts = cdr["route_attempts"].as_array().unwrap_or_else(|| panic!("route_attempts: {cdr}"));
    assert_eq!(attempts.len(), 1, "{cdr}");
    assert_eq!(attempts[0]["sip_response_code"], 486, "{cdr}");
    assert!(cdr["cost"].is_null() || decimal_micros(cdr["cost"].as_str().unwrap()) == 0, "unanswered: {cdr}");
}
