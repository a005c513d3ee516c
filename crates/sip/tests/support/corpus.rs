//! The RFC 4475/5118 corpus in `../shared/conformance` and the outcome the switch must give each
//! message. Shared by the parser's conformance test and the over-the-wire test of
//! `opentrunk serve` (included with `#[path]`), so both hold the switch to one table.
#![allow(dead_code)]

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Accepted as well formed.
    Accept,
    /// Answered with this status.
    Reject(u16),
    /// Dropped without an answer.
    Drop,
}
use Outcome::*;

pub const EXPECTED: &[(&str, Outcome)] = &[
    // RFC 4475 section 3.1.1: valid messages.
    ("wsinv.sip", Accept),
    ("intmeth.sip", Reject(501)), // parses; the unknown method gets 501 with Allow
    ("esc01.sip", Accept),
    ("escnull.sip", Accept),
    ("esc02.sip", Reject(501)), // RE%47IST%45R is an unknown method, not REGISTER
    ("lwsdisp.sip", Accept),
    ("longreq.sip", Accept),
    ("dblreq.sip", Accept),
    ("semiuri.sip", Accept),
    ("transports.sip", Accept),
    ("mpart01.sip", Accept),
    ("unreason.sip", Accept),
    ("noreason.sip", Accept),
    // Section 3.1.2: invalid messages.
    ("badinv01.sip", Reject(400)),
    ("clerr.sip", Reject(400)),
    ("ncl.sip", Reject(400)),
    ("scalar02.sip", Reject(400)),
    ("scalarlg.sip", Drop),
    ("quotbal.sip", Reject(400)),
    ("ltgtruri.sip", Reject(400)),
    ("lwsruri.sip", Reject(400)),
    ("lwsstart.sip", Reject(400)),
    ("trws.sip", Reject(400)),
    ("escruri.sip", Reject(400)),
    ("baddate.sip", Accept), // Date is not used by the switch: ignored
    ("regbadct.sip", Reject(400)),
    ("badaspec.sip", Reject(400)),
    ("baddn.sip", Reject(400)),
    ("badvers.sip", Reject(505)),
    ("mismatch01.sip", Reject(400)),
    ("mismatch02.sip", Reject(501)),
    ("bigcode.sip", Drop),
    // Sections 3.2-3.4.
    ("badbranch.sip", Accept), // RFC 2543 matching fallback
    ("insuf.sip", Reject(400)),
    ("unkscm.sip", Reject(416)),
    ("novelsc.sip", Reject(416)),
    ("unksm2.sip", Reject(400)), // registrar: To must be a SIP AOR
    ("bext01.sip", Reject(420)),
    ("invut.sip", Reject(415)),
    ("regaut01.sip", Accept), // the registrar answers 401 later; the message is fine
    ("multi01.sip", Reject(400)),
    ("mcl01.sip", Reject(400)),
    ("bcast.sip", Accept), // well formed; the transport refuses the broadcast Via
    ("zeromf.sip", Reject(483)),
    ("cparam01.sip", Accept),
    ("cparam02.sip", Accept),
    ("regescrt.sip", Accept),
    ("sdp01.sip", Reject(406)),
    ("inv2543.sip", Accept),
    ("test.sip", Drop),
    // RFC 5118.
    ("ipv6-good.sip", Accept),
    ("ipv6-bad.sip", Reject(400)),
    ("port-ambiguous.sip", Accept),
    ("port-unambiguous.sip", Accept),
    ("via-received-param-with-delim.sip", Accept),
    ("via-received-param-no-delim.sip", Accept),
    ("ipv6-in-sdp.sip", Accept),
    ("mult-ip-in-header.sip", Accept),
    ("mult-ip-in-sdp.sip", Accept),
    ("ipv4-mapped-ipv6.sip", Accept),
    ("ipv6-bug-abnf-3-colons.sip", Accept),
    ("ipv6-correct-abnf-2-colons.sip", Accept),
];

/// The conformance folder, or `None` (after one line saying so) when it is absent and not
/// required. `OPENTRUNK_CONFORMANCE_DIR` overrides the default `../shared/conformance`;
/// `OPENTRUNK_REQUIRE_CONFORMANCE=1` (set by CI) turns absence into a failure.
pub fn conformance_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("OPENTRUNK_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"));
    if dir.join("rfc4475/manifest.tsv").is_file() {
        return Some(dir);
    }
    if std::env::var("OPENTRUNK_REQUIRE_CONFORMANCE").is_ok_and(|v| v == "1") {
        panic!("conformance corpus required but not found at {}", dir.display());
    }
    println!("skipped: conformance corpus not found at {}", dir.display());
    None
}

pub struct Row {
    pub suite: &'static str,
    pub file: String,
    pub expect: String,
    pub action: String,
    pub bytes: Vec<u8>,
}

pub fn rows(dir: &std::path::Path) -> Vec<Row> {
    let mut out = Vec::new();
    for suite in ["rfc4475", "rfc5118"] {
        let manifest = std::fs::read_to_string(dir.join(suite).join("manifest.tsv")).expect("manifest");
        for line in manifest.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split('\t').collect();
            let file = cols[0].to_owned();
            let bytes = std::fs::read(dir.join(suite).join(&file)).expect("message file");
            out.push(Row { suite, file, expect: cols[2].to_owned(), action: cols[3].to_owned(), bytes });
        }
    }
    out
}
