//! UAC connections with a real PBX on loopback: opentrunk registers itself to the customer's
//! PBX (SIPp as its registrar, checking our digest answer), and a carrier's call to the
//! connection's number is delivered to the PBX over that registration.
//!
//! Skipped with one line when SIPp is missing, except where `OPENTRUNK_REQUIRE_SIPP=1` (CI).

use std::time::Duration;

use serde_json::json;

mod peers;
mod support;

use peers::*;

const CARRIER_IP: &str = "127.0.0.2";
const PBX_IP: &str = "127.0.0.3";
const NUMBER: &str = "+12125550123";

#[test]
fn a_uac_connection_registers_to_its_pbx_and_takes_its_numbers_calls_over_it() {
    if !sipp_available() {
        return;
    }
    let server = start_switch("");
    let before = generations(&server);
    let account = account(&server, "acme", None);
    origination_carrier(&server, CARRIER_IP);
    let dir = work_dir("uac");
    // The PBX: one registration, then one call.
    let (pbx, pbx_at) = Running::gateway(&dir, "pbx", "uac_pbx.xml", PBX_IP, Some(2));
    let conn = create(
        &server,
        "/v2/uac_connections",
        &account.key,
        json!({
            "connection_name": "office-pbx",
            "external_uac_settings": {
                "username": "ext1001",
                "password": "pbx-secret-1",
                "proxy": pbx_at.to_string(),
                "transport": "UDP",
                "expiration_sec": 600,
            },
        }),
    );
    phone_number(&server, &account, NUMBER, &id(&conn));
    wait_config_applied(&server, before);

    // Registered: the carrier's call for the number reaches the PBX.
    let call = wait_for(Duration::from_secs(15), "a delivered call", || {
        let run = Sipp::pbx(&dir, "carrier", "pbx_call.xml", &server, CARRIER_IP, NUMBER).run();
        (run.code == Some(0)).then_some(run)
    });
    call.assert_succeeded("the carrier's call", 1);
    // The API reports the registration: where the PBX is, and that it holds.
    let path = format!("/v2/uac_connections/{}/actions/check_registration_status", id(&conn));
    let status = wait_for(Duration::from_secs(10), "the stored registration", || {
        let (code, body) = api(&server, "POST", &path, &account.key, None);
        assert_eq!(code, 200, "{body}");
        (body["data"]["status"] == "Registered").then_some(body)
    });
    assert_eq!(status["data"]["ip_address"], PBX_IP, "{status}");
    assert_eq!(status["data"]["port"], pbx_at.port(), "{status}");
    let pbx = pbx.wait(Duration::from_secs(15));
    pbx.assert_succeeded("the PBX (registration and call)", 2);
    let registers = pbx.requests("REGISTER");
    assert_eq!(registers.len(), 2, "one challenged REGISTER, one answered:\n{}", pbx.messages);
    assert!(pbx.messages.contains("Authorization: Digest"), "{}", pbx.messages);
    let invite = pbx.requests("INVITE");
    assert!(invite.iter().any(|l| l.starts_with("INVITE sip:ext1001@")), "addressed to the registered AOR: {invite:?}");
}
