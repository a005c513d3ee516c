//! Churn: 2,000 calls at 100 calls/s through `opentrunk serve`, each ending one of six ways at
//! random moments among the others (caller BYE, callee BYE, CANCEL before the answer, 486 from
//! the carrier, 503 then failover to a second gateway, no answer until `timeout_2xx_secs`). Six
//! SIPp PBXs run at once, one per ending, their rates adding up to 100 calls/s, each dialing a
//! destination that only the carrier of that ending terminates. At the end every channel lease
//! is back (`opentrunk_channels_held` 0), no call is active, and there is exactly one CDR per
//! call: the records' A-leg Call-IDs are the PBXs' Call-IDs, each once, with the final status
//! each ending must give. Skipped with one line when SIPp is missing, except where
//! `OPENTRUNK_REQUIRE_SIPP=1` (CI).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;

mod peers;
mod support;

use peers::*;

/// One way a call ends: the PBX scenario, the carrier's gateway scenarios (a second one takes
/// the failover), the destination only this carrier terminates, how many calls at which rate,
/// and the final status the caller gets.
struct Ending {
    name: &'static str,
    pbx: &'static str,
    gateways: &'static [&'static str],
    area: &'static str,
    calls: u64,
    rate: u64,
    status: u16,
}

const ENDINGS: &[Ending] = &[
    Ending {
        name: "caller-bye",
        pbx: "pbx_call.xml",
        gateways: &["carrier_answer.xml"],
        area: "212",
        calls: 500,
        rate: 25,
        status: 200,
    },
    Ending {
        name: "callee-bye",
        pbx: "pbx_call_callee_bye.xml",
        gateways: &["carrier_answer_bye.xml"],
        area: "415",
        calls: 400,
        rate: 20,
        status: 200,
    },
    Ending {
        name: "cancel",
        pbx: "pbx_cancel.xml",
        gateways: &["carrier_no_answer.xml"],
        area: "617",
        calls: 300,
        rate: 15,
        status: 487,
    },
    Ending {
        name: "busy",
        pbx: "pbx_refused.xml",
        gateways: &["carrier_486.xml"],
        area: "713",
        calls: 300,
        rate: 15,
        status: 486,
    },
    Ending {
        name: "failover",
        pbx: "pbx_call.xml",
        gateways: &["carrier_503.xml", "carrier_answer.xml"],
        area: "702",
        calls: 300,
        rate: 15,
        status: 200,
    },
    Ending {
        name: "no-answer",
        pbx: "pbx_refused.xml",
        gateways: &["carrier_no_answer.xml"],
        area: "305",
        calls: 200,
        rate: 10,
        status: 408,
    },
];

#[test]
fn churn_of_2000_calls_at_100_per_second_leaves_no_channel_held_and_one_cdr_per_call() {
    if !sipp_available() {
        return;
    }
    let total: u64 = ENDINGS.iter().map(|e| e.calls).sum();
    assert_eq!((total, ENDINGS.iter().map(|e| e.rate).sum::<u64>()), (2000, 100));

    let server = start_switch("");
    let dir = work_dir("churn");
    let before = generations(&server);
    let account = account(&server, "churn", Some(5000));
    let profile = profile(&server, &account, None);
    let conn = ip_connection(&server, &account, "pbx", PBX_IP, json!({"outbound_voice_profile_id": profile}));

    let mut gateways = Vec::new();
    for e in ENDINGS {
        let mut addrs = Vec::new();
        for (i, scenario_file) in e.gateways.iter().enumerate() {
            let ip = if i == 0 { GATEWAY_1_IP } else { GATEWAY_2_IP };
            let name = format!("{}-gateway-{}", e.name, i + 1);
            let (running, at) = Running::gateway(&dir, &name, scenario_file, ip, Some(e.calls));
            gateways.push((name, running, e.calls));
            addrs.push(at);
        }
        carrier_for(&server, e.name, &addrs, &[&format!("1{}", e.area)], None, None);
    }
    wait_config_applied(&server, before);

    let started = Instant::now();
    let pbxs: Vec<_> = ENDINGS
        .iter()
        .map(|e| {
            let run = Sipp::pbx(&dir, e.name, e.pbx, &server, PBX_IP, &format!("+1{}5550123", e.area))
                .args(["-m", &e.calls.to_string(), "-r", &e.rate.to_string(), "-l", "500", "-d", "1000"])
                .spawn();
            (e, run)
        })
        .collect();
    let mut pbx_call_ids: HashMap<String, u16> = HashMap::new();
    for (e, run) in pbxs {
        let run = run.wait(Duration::from_secs(120));
        run.assert_succeeded(&format!("the {} PBX", e.name), e.calls);
        let ids = run.call_ids();
        assert_eq!(ids.len() as u64, e.calls, "{}: one Call-ID per call", e.name);
        pbx_call_ids.extend(ids.into_iter().map(|id| (id, e.status)));
    }
    let elapsed = started.elapsed();
    for (name, running, calls) in gateways {
        running.wait(Duration::from_secs(30)).assert_succeeded(&name, calls);
    }
    println!("churn: {total} calls in {elapsed:?}");

    wait_metric(&server, "opentrunk_calls_active", 0.0, Duration::from_secs(15));
    wait_metric(&server, "opentrunk_channels_held", 0.0, Duration::from_secs(15));
    let (code, active) =
        api(&server, "GET", &format!("/v2/connections/{}/active_calls", id(&conn)), &account.key, None);
    assert_eq!(code, 200, "{active}");
    assert_eq!(active["data"], json!([]), "no active call is left: {active}");

    // CDR writes are asynchronous: wait for the count, then read every record.
    let filter = format!("&filter[connection_id]={}", id(&conn));
    wait_for(Duration::from_secs(30), "a CDR for every call", || (cdr_total(&server, &filter) >= total).then_some(()));
    let mut seen: HashMap<String, u16> = HashMap::new();
    let mut duplicates = Vec::new();
    for page in 1..=total.div_ceil(250) + 1 {
        for r in cdrs(&server, &format!("{filter}&page[number]={page}")) {
            let a_leg = r["a_leg_call_id"].as_str().unwrap_or_default().to_owned();
            let status = r["sip_response_code"].as_u64().unwrap_or(0) as u16;
            if seen.insert(a_leg.clone(), status).is_some() {
                duplicates.push(a_leg);
            }
        }
    }
    assert!(
        duplicates.is_empty(),
        "{} calls have more than one CDR, e.g. {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)]
    );
    let missing: Vec<&String> = pbx_call_ids.keys().filter(|id| !seen.contains_key(*id)).collect();
    assert!(missing.is_empty(), "{} calls have no CDR, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    let strangers: HashSet<&String> = seen.keys().filter(|id| !pbx_call_ids.contains_key(*id)).collect();
    assert!(strangers.is_empty(), "CDRs of calls no PBX made: {strangers:?}");
    let wrong: Vec<(&String, u16, u16)> =
        pbx_call_ids.iter().filter(|(id, want)| seen[*id] != **want).map(|(id, want)| (id, seen[id], *want)).collect();
    assert!(
        wrong.is_empty(),
        "{} CDRs with the wrong final status (call, got, want), e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(cdr_total(&server, &filter), total, "exactly one CDR per call");
}
