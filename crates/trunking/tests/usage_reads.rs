//! `outbound::usage_reads`: what a shared counters backend fetches before an outbound decision.
//! Each row is a call on the fixture platform; the reads it names must be exactly the spend and
//! calls-to reads the decision then makes.

#[path = "support/fixture.rs"]
mod fixture;

use std::sync::Mutex;

use fixture::*;
use rust_decimal::Decimal;
use trunking::config::{CallingWindow, Config, OutboundVoiceProfile};
use trunking::digest::ReplayGuard;
use trunking::identify::{CallFacts, Identification, identify};
use trunking::outbound::{OutboundRequest, Scope, Usage, decide, usage_reads};
use trunking::time::Timestamp;
use trunking::trace::Trace;

/// Counters that remember which spend and calls-to keys were read.
#[derive(Default)]
struct Recorder {
    spend: Mutex<Vec<(String, u64)>>,
    calls_to: Mutex<Vec<(String, String)>>,
}

impl Usage for Recorder {
    fn channels(&self, _: Scope, _: &str) -> u32 {
        0
    }
    fn spend_today(&self, profile_id: &str, utc_day: u64) -> Decimal {
        self.spend.lock().unwrap().push((profile_id.to_owned(), utc_day));
        Decimal::ZERO
    }
    fn calls_to(&self, profile_id: &str, destination: &str, _: Timestamp) -> u32 {
        self.calls_to.lock().unwrap().push((profile_id.to_owned(), destination.to_owned()));
        0
    }
}

type Edit = fn(&mut OutboundVoiceProfile);
/// The reads named: the spend's UTC day, the destination whose calls are counted.
type Reads = Option<(Option<u64>, Option<&'static str>)>;

#[test]
fn the_reads_named_are_the_reads_the_decision_makes() {
    let day = NOON.utc_day();
    #[rustfmt::skip]
    let table: [(&str, &str, Edit, Reads); 6] = [
        ("a spend limit: today's spend", "4321+13125550199", |_| {}, Some((Some(day), None))),
        ("no spend limit, no window: nothing", "4321+13125550199", |p| p.daily_spend_limit = None, None),
        ("a window counting calls: both", "4321+13125550199", |p| p.calling_window = Some(CallingWindow { start: None, end: None, calls_per_cld: Some(3) }), Some((Some(day), Some("+13125550199")))),
        ("a window counting calls only", "4321+13125550199", |p| { p.daily_spend_limit = None; p.calling_window = Some(CallingWindow { start: None, end: None, calls_per_cld: Some(3) }) }, Some((None, Some("+13125550199")))),
        ("a window counting nothing: spend only", "4321+13125550199", |p| p.calling_window = Some(CallingWindow { start: None, end: None, calls_per_cld: None }), Some((Some(day), None))),
        ("an emergency call: nothing", "4321911", |p| p.calling_window = Some(CallingWindow { start: None, end: None, calls_per_cld: Some(3) }), None),
    ];
    for (case, dialed, edit, expected) in table {
        let config: Config = platform_with(|_, profiles, _| profiles.iter_mut().for_each(edit));
        let msg = invite(dialed, "+13125550100", "");
        let facts = CallFacts::of(&msg, ip("192.0.2.30"));
        let mut trace = Trace::new();
        let Identification::Identified(identified) =
            identify(&config, &facts, &realm(), &mut ReplayGuard::default(), NOON, &mut trace)
        else {
            panic!("{case}: not identified: {trace:#?}");
        };
        let reads = usage_reads(&config, &facts, identified, NOON);
        let named = reads.as_ref().map(|r| (r.spend_day, r.calls_to.as_ref().map(|n| n.as_str().to_owned())));
        assert_eq!(named, expected.map(|(s, c)| (s, c.map(str::to_owned))), "{case}");

        let recorder = Recorder::default();
        let req =
            OutboundRequest { message: &msg, facts: &facts, identified, usage: &recorder, rotation: 0, now: NOON };
        let _ = decide(&config, &req, &mut trace);
        let spend_read: Vec<_> = recorder.spend.into_inner().unwrap();
        let calls_read: Vec<_> = recorder.calls_to.into_inner().unwrap();
        let profile = |r: &trunking::outbound::UsageReads| r.profile_id.to_string();
        // Spend is read whenever the profile applies; it matters (and is fetched) with a limit.
        let spend_named: Vec<_> = reads.iter().filter_map(|r| r.spend_day.map(|d| (profile(r), d))).collect::<Vec<_>>();
        for read in &spend_named {
            assert!(spend_read.contains(read), "{case}: {read:?} named but not read ({spend_read:?})");
        }
        let calls_named: Vec<_> = reads
            .iter()
            .filter_map(|r| r.calls_to.as_ref().map(|n| (profile(r), n.as_str().to_owned())))
            .collect::<Vec<_>>();
        assert_eq!(calls_named, calls_read, "{case}: calls-to reads");
    }
}
