//! SIP digest authentication (RFC 3261 section 22, RFC 2617, RFC 7616, RFC 8760): algorithms
//! MD5 and SHA-256 with `qop=auth`, for both sides of a trunk.
//!
//! Server side ([`DigestRealm`]): a customer's PBX sends an INVITE without credentials, we
//! answer `407` with [`DigestRealm::challenges`], and the retried request's `Proxy-Authorization`
//! is checked by [`DigestRealm::verify`] against the connection's [`StoredDigest`] (HA1 values,
//! never the password). Nonces are stateless: each one carries its issue time and an
//! HMAC-SHA256 tag over (issue time, sequence, realm), so any node holding the key recognises its
//! own nonces, and a forged or altered one fails without a lookup. Only the nonce counts already
//! accepted are state, kept in a bounded [`ReplayGuard`].
//!
//! Client side ([`authorization`]): an upstream carrier challenges us, and we answer with the
//! `Authorization`/`Proxy-Authorization` value for the trunk's user name and password.
//!
//! Everything here is pure: time, keys and client nonces come in as values. Verification does not
//! allocate, except for a parameter holding backslash escapes and the replay guard's growth.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sip::headers::{Auth, unquote};
use sip::scan::trim_lws;

use crate::time::Timestamp;
use crate::trace::{Trace, Value};

/// How long a nonce we issue stays usable: five minutes, long enough for a PBX to answer a
/// challenge and to reuse the nonce (with increasing `nc`) for a few follow-up requests.
pub const DEFAULT_NONCE_LIFETIME_MS: u64 = 300_000;

/// Default bound of a [`ReplayGuard`]: nonces it remembers at most (about 64 bytes each, so about
/// 4 MiB when full).
pub const DEFAULT_REPLAY_CAPACITY: usize = 65_536;

/// A connection's stored digest credentials: HA1 = H(`user:realm:password`) per algorithm, in
/// lowercase hex, as the API computes them on create/update (`_digest`). The password itself is
/// never kept. `Debug` hides the HA1 values: each is as good as the password for this realm.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDigest {
    pub realm: String,
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

impl StoredDigest {
    /// The digest of `user` with `password` in `realm` (what the API stores; for tests and tools).
    pub fn from_password(user: &str, realm: &str, password: &str) -> StoredDigest {
        StoredDigest {
            realm: realm.to_owned(),
            ha1_md5: ha1(DigestAlgorithm::Md5, user, realm, password),
            ha1_sha256: ha1(DigestAlgorithm::Sha256, user, realm, password),
        }
    }

    /// The HA1 for an algorithm.
    pub fn ha1(&self, algorithm: DigestAlgorithm) -> &str {
        match algorithm {
            DigestAlgorithm::Md5 => &self.ha1_md5,
            DigestAlgorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

impl fmt::Debug for StoredDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredDigest").field("realm", &self.realm).finish_non_exhaustive()
    }
}

/// A digest hash algorithm we speak (the `-sess` variants and SHA-512-256 are not offered).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

impl DigestAlgorithm {
    /// The `algorithm` token.
    pub const fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// An `algorithm` parameter's value (case-insensitive, already unquoted); `None` when unknown.
    /// An absent parameter means MD5 (RFC 2617 section 3.2.1); callers handle that.
    pub fn parse(s: &str) -> Option<DigestAlgorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(DigestAlgorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(DigestAlgorithm::Sha256)
        } else {
            None
        }
    }

    /// Length of a hash of this algorithm in hex.
    pub const fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Md5 => 32,
            DigestAlgorithm::Sha256 => 64,
        }
    }
}

/// HA1 = H(`user:realm:password`) in lowercase hex.
pub fn ha1(algorithm: DigestAlgorithm, user: &str, realm: &str, password: &str) -> String {
    fn run<D: Digest>(user: &str, realm: &str, password: &str) -> String {
        let mut h = D::new();
        for part in [user.as_bytes(), b":", realm.as_bytes(), b":", password.as_bytes()] {
            h.update(part);
        }
        let mut out = [0u8; 64];
        let n = hex_lower(&h.finalize(), &mut out);
        String::from_utf8_lossy(&out[..n]).into_owned()
    }
    match algorithm {
        DigestAlgorithm::Md5 => run::<Md5>(user, realm, password),
        DigestAlgorithm::Sha256 => run::<Sha256>(user, realm, password),
    }
}

/// Why credentials were refused. Each is answered with a new challenge (or a `403` when the
/// caller decides the client is misbehaving); the name goes into the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestFault {
    /// The scheme is not `Digest`.
    WrongScheme,
    /// A parameter the computation needs is absent or empty (`username`, `realm`, `nonce`,
    /// `uri`, `response`; `cnonce` and `nc` with a `qop`).
    MissingParameter(&'static str),
    /// A parameter is present but unusable: `nc` not 8 hex digits, a directive given twice, a
    /// control character in a value we would send.
    MalformedParameter(&'static str),
    /// The nonce is not one of ours: forged, altered, or minted with another key or realm.
    UnknownNonce,
    /// The credentials (or the stored digest) are for another realm.
    RealmMismatch,
    /// An `algorithm` other than MD5 and SHA-256.
    UnsupportedAlgorithm,
    /// A `qop` other than `auth` (such as `auth-int`), or a challenge offering no `auth`.
    UnsupportedQop,
    /// The stored credentials hold no usable HA1 for the chosen algorithm (not hex of the right
    /// length): a provisioning problem, not the client's.
    NoStoredDigest,
    /// The response does not match: wrong password (or user name, method, URI).
    WrongResponse,
    /// A nonce count not greater than one already accepted for this nonce, or a second use of a
    /// nonce without `qop`.
    Replay,
}

impl DigestFault {
    /// A stable snake_case name for traces and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DigestFault::WrongScheme => "wrong_scheme",
            DigestFault::MissingParameter(_) => "missing_parameter",
            DigestFault::MalformedParameter(_) => "malformed_parameter",
            DigestFault::UnknownNonce => "unknown_nonce",
            DigestFault::RealmMismatch => "realm_mismatch",
            DigestFault::UnsupportedAlgorithm => "unsupported_algorithm",
            DigestFault::UnsupportedQop => "unsupported_qop",
            DigestFault::NoStoredDigest => "no_stored_digest",
            DigestFault::WrongResponse => "wrong_response",
            DigestFault::Replay => "replay",
        }
    }

    /// The parameter concerned, for the two faults about one.
    pub const fn parameter(self) -> Option<&'static str> {
        match self {
            DigestFault::MissingParameter(p) | DigestFault::MalformedParameter(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Display for DigestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parameter() {
            Some(p) => write!(f, "{} ({p})", self.as_str()),
            None => f.write_str(self.as_str()),
        }
    }
}

/// The outcome of checking credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestVerdict {
    /// Authenticated.
    Valid,
    /// The right password with a nonce that is ours but expired (or no longer tracked): challenge
    /// again with `stale=true`, so the client retries with the new nonce without asking its user
    /// (RFC 2617 section 3.2.1).
    Stale,
    /// Refused.
    Invalid(DigestFault),
}

impl DigestVerdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            DigestVerdict::Valid => "valid",
            DigestVerdict::Stale => "stale",
            DigestVerdict::Invalid(_) => "invalid",
        }
    }

    /// Records the verdict as rule `digest.verify` (pass when valid, fail otherwise).
    pub fn record(self, trace: &mut Trace) {
        let mut facts = vec![("result", Value::Static(self.as_str()))];
        if let DigestVerdict::Invalid(fault) = self {
            facts.push(("fault", Value::Static(fault.as_str())));
            if let Some(p) = fault.parameter() {
                facts.push(("parameter", Value::Static(p)));
            }
        }
        if self == DigestVerdict::Valid {
            trace.pass("digest.verify", facts);
        } else {
            trace.fail("digest.verify", facts);
        }
    }
}

/// The user name of `Digest` credentials (to find the stored digest before [`DigestRealm::verify`]);
/// `None` for another scheme or without a non-empty `username`. `username*` (RFC 7616 section
/// 3.4.4) is not supported.
pub fn username<'a>(credentials: &Auth<'a>) -> Option<Cow<'a, str>> {
    if !credentials.scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    credentials.param("username").filter(|u| !u.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Server side.

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a nonce before its tag: issue time (ms, u64) and a sequence number (u32), big endian.
const NONCE_PAYLOAD: usize = 12;
/// Bytes of the nonce's HMAC-SHA256 tag kept (128 bits: forging one is out of reach).
const NONCE_TAG: usize = 16;
/// A nonce in hex.
const NONCE_HEX: usize = 2 * (NONCE_PAYLOAD + NONCE_TAG);
/// Separates our nonce tags from any other use of the key.
const NONCE_DOMAIN: &[u8] = b"opentrunk/sip-digest-nonce/v1\0";

/// The server side of digest authentication for one realm: issues challenges and verifies
/// credentials. Holds the nonce key (shared by every node of a cluster, so any node verifies any
/// node's nonces) and a sequence that makes nonces issued in the same millisecond distinct.
pub struct DigestRealm {
    realm: String,
    /// HMAC keyed once and fed the nonce context (domain, realm) up to a block boundary, so a
    /// nonce costs two SHA-256 blocks: its payload, then the outer hash.
    mac: HmacSha256,
    lifetime_ms: u64,
    opaque: Option<String>,
    sequence: AtomicU32,
    /// The algorithms challenges offer, in order.
    algorithms: Vec<DigestAlgorithm>,
}

impl fmt::Debug for DigestRealm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestRealm")
            .field("realm", &self.realm)
            .field("lifetime_ms", &self.lifetime_ms)
            .field("opaque", &self.opaque)
            .finish_non_exhaustive()
    }
}

impl DigestRealm {
    /// A realm with its nonce key (32 random bytes the caller draws) and nonce lifetime in ms
    /// ([`DEFAULT_NONCE_LIFETIME_MS`] recommended).
    pub fn new(realm: impl Into<String>, key: [u8; 32], nonce_lifetime_ms: u64) -> DigestRealm {
        // HMAC pads a key shorter than the block (64 bytes) with zeros: the same MAC as keying
        // with the 32 bytes, without a fallible constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&key);
        let realm = realm.into();
        let mut mac = HmacSha256::new(&block.into());
        // MAC input: domain, realm length, realm, zeros to a block boundary, then the payload
        // (fixed length, last): unambiguous, and everything before the payload hashed once here.
        let mut context = Vec::with_capacity(128);
        context.extend_from_slice(NONCE_DOMAIN);
        context.extend_from_slice(&(realm.len() as u64).to_be_bytes());
        context.extend_from_slice(realm.as_bytes());
        context.resize(context.len().div_ceil(64) * 64, 0);
        mac.update(&context);
        DigestRealm {
            realm,
            mac,
            lifetime_ms: nonce_lifetime_ms,
            opaque: None,
            sequence: AtomicU32::new(0),
            algorithms: vec![DigestAlgorithm::Md5, DigestAlgorithm::Sha256],
        }
    }

    /// Offers these algorithms, in this order (none: the default, MD5 then SHA-256). Some
    /// deployed stacks (baresip's libre 1.x among them) give up on a 401 that offers any
    /// algorithm they do not know, even beside MD5: an operator with such devices offers MD5
    /// alone.
    pub fn with_algorithms(mut self, algorithms: &[DigestAlgorithm]) -> DigestRealm {
        if !algorithms.is_empty() {
            self.algorithms = algorithms.to_vec();
        }
        self
    }

    /// Sends `opaque` in challenges. Clients echo it; it is not checked, since the nonce already
    /// carries all the state we need.
    pub fn with_opaque(mut self, opaque: impl Into<String>) -> DigestRealm {
        self.opaque = Some(opaque.into());
        self
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn nonce_lifetime_ms(&self) -> u64 {
        self.lifetime_ms
    }

    /// A fresh nonce issued at `now`.
    pub fn nonce(&self, now: Timestamp) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut raw = [0u8; NONCE_PAYLOAD + NONCE_TAG];
        raw[..8].copy_from_slice(&now.as_millis().to_be_bytes());
        raw[8..NONCE_PAYLOAD].copy_from_slice(&sequence.to_be_bytes());
        let tag = self.nonce_mac(&raw[..NONCE_PAYLOAD]).finalize().into_bytes();
        raw[NONCE_PAYLOAD..].copy_from_slice(&tag[..NONCE_TAG]);
        let mut out = [0u8; NONCE_HEX];
        hex_lower(&raw, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The `Proxy-Authenticate` (or `WWW-Authenticate`) values for a `407` (`401`): one per
    /// algorithm offered ([`DigestRealm::with_algorithms`]; by default MD5 first then SHA-256), sharing one nonce so a client that reads either
    /// header (or both glued together) answers it. `stale` tells the client its password was
    /// right and only the nonce was old.
    ///
    /// MD5 comes first although RFC 8760 section 2.4 orders by preference: many deployed
    /// PBXes and test tools (SIPp among them) read only the first challenge and give up on an
    /// algorithm they do not know, and every carrier's customers must be able to register.
    pub fn challenges(&self, now: Timestamp, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now);
        self.algorithms.iter().map(|a| self.challenge(*a, &nonce, stale)).collect()
    }

    /// One challenge value for `algorithm` with a given nonce (from [`DigestRealm::nonce`]).
    pub fn challenge(&self, algorithm: DigestAlgorithm, nonce: &str, stale: bool) -> String {
        let mut out = String::with_capacity(160);
        out.push_str("Digest realm=");
        push_quoted(&mut out, &self.realm);
        out.push_str(", nonce=");
        push_quoted(&mut out, nonce);
        if let Some(opaque) = &self.opaque {
            out.push_str(", opaque=");
            push_quoted(&mut out, opaque);
        }
        if stale {
            out.push_str(", stale=true");
        }
        out.push_str(", algorithm=");
        out.push_str(algorithm.as_str());
        out.push_str(", qop=\"auth\"");
        out
    }

    /// Checks `Digest` credentials (a parsed `Proxy-Authorization`/`Authorization`) for a request
    /// with `method` against the stored digest of the user they name (see [`username`]).
    ///
    /// The hash covers the `uri` parameter as the client wrote it (never recomputed from the
    /// request); a caller wanting RFC 2617's "uri matches the Request-URI" check compares it
    /// itself. An absent `algorithm` means MD5; a quoted one is accepted. Without `qop`
    /// (RFC 2069 clients) the nonce is good for one request.
    ///
    /// Order: form (scheme, parameters, algorithm, qop), realm, nonce authenticity, response
    /// (constant time), freshness, replay, so that only a client knowing the password learns
    /// that its nonce is stale, and only correct responses consume nonce counts.
    pub fn verify(
        &self,
        credentials: &Auth<'_>,
        method: &str,
        stored: &StoredDigest,
        now: Timestamp,
        guard: &mut ReplayGuard,
    ) -> DigestVerdict {
        match self.check(credentials, method, stored, now, guard) {
            Ok(verdict) => verdict,
            Err(fault) => DigestVerdict::Invalid(fault),
        }
    }

    fn check(
        &self,
        credentials: &Auth<'_>,
        method: &str,
        stored: &StoredDigest,
        now: Timestamp,
        guard: &mut ReplayGuard,
    ) -> Result<DigestVerdict, DigestFault> {
        if !credentials.scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestFault::WrongScheme);
        }
        let p = Directives::parse(credentials.params)?;
        let _username = required(&p.username, "username")?;
        let realm = required(&p.realm, "realm")?;
        let nonce = required(&p.nonce, "nonce")?;
        let uri = required(&p.uri, "uri")?;
        let response = required(&p.response, "response")?;
        let algorithm = p.algorithm()?;
        let qop = match &p.qop {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc = required(&p.nc, "nc")?;
                let cnonce = required(&p.cnonce, "cnonce")?;
                let count = parse_nc(nc).ok_or(DigestFault::MalformedParameter("nc"))?;
                Some((QopAuth { nc, cnonce, qop: q }, count))
            }
            Some(_) => return Err(DigestFault::UnsupportedQop),
        };
        if realm != self.realm || stored.realm != self.realm {
            return Err(DigestFault::RealmMismatch);
        }
        let issued = self.open_nonce(nonce).ok_or(DigestFault::UnknownNonce)?;

        let mut ha1 = [0u8; 64];
        let ha1 = lower_hex_of_len(stored.ha1(algorithm), algorithm.hex_len(), &mut ha1)
            .ok_or(DigestFault::NoStoredDigest)?;
        let mut expected = [0u8; 64];
        let expected = response_hex(algorithm, ha1, nonce, qop.as_ref().map(|q| &q.0), method, uri, &mut expected);
        if !ct_eq_hex(expected, response.as_bytes()) {
            return Err(DigestFault::WrongResponse);
        }

        let expires = issued.nonce.plus_millis(self.lifetime_ms);
        if now >= expires {
            return Ok(DigestVerdict::Stale);
        }
        match guard.admit(issued.key, issued.nonce, expires, qop.map(|q| q.1), now) {
            Admission::Fresh => Ok(DigestVerdict::Valid),
            Admission::Replay => Err(DigestFault::Replay),
            Admission::Forgotten => Ok(DigestVerdict::Stale),
        }
    }

    fn nonce_mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac
    }

    /// The issue time and replay key of one of our nonces; `None` when it is not ours.
    fn open_nonce(&self, nonce: &str) -> Option<IssuedNonce> {
        let mut raw = [0u8; NONCE_PAYLOAD + NONCE_TAG];
        if nonce.len() != NONCE_HEX || !hex_decode(nonce.as_bytes(), &mut raw) {
            return None;
        }
        let (payload, tag) = raw.split_at(NONCE_PAYLOAD);
        self.nonce_mac(payload).verify_truncated_left(tag).ok()?;
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&payload[..8]);
        let mut key = [0u8; 16];
        key.copy_from_slice(tag);
        Some(IssuedNonce { nonce: Timestamp(u64::from_be_bytes(issued)), key: u128::from_be_bytes(key) })
    }
}

struct IssuedNonce {
    /// When the nonce was issued.
    nonce: Timestamp,
    /// Its tag: unique per nonce, the replay guard's key.
    key: u128,
}

/// `nc`, `cnonce` and `qop` of a `qop=auth` response, as the client wrote them.
struct QopAuth<'s> {
    nc: &'s str,
    cnonce: &'s str,
    qop: &'s str,
}

/// The directives of a digest header we use, read in one pass.
#[derive(Default)]
struct Directives<'a> {
    username: Option<Cow<'a, str>>,
    realm: Option<Cow<'a, str>>,
    nonce: Option<Cow<'a, str>>,
    uri: Option<Cow<'a, str>>,
    response: Option<Cow<'a, str>>,
    algorithm: Option<Cow<'a, str>>,
    qop: Option<Cow<'a, str>>,
    nc: Option<Cow<'a, str>>,
    cnonce: Option<Cow<'a, str>>,
    opaque: Option<Cow<'a, str>>,
}

impl<'a> Directives<'a> {
    /// The algorithm named, MD5 when none is (RFC 2617).
    fn algorithm(&self) -> Result<DigestAlgorithm, DigestFault> {
        match &self.algorithm {
            None => Ok(DigestAlgorithm::Md5),
            Some(a) => DigestAlgorithm::parse(a).ok_or(DigestFault::UnsupportedAlgorithm),
        }
    }

    /// Reads `name=value, ...` in one pass (values are tokens or quoted-strings); unknown
    /// directives are skipped. A repeated directive is refused (RFC 7616 section 3.4: each
    /// appears at most once), so no reader can be fooled into taking another copy than we did;
    /// so is text that is not a parameter list.
    fn parse(params: &'a str) -> Result<Directives<'a>, DigestFault> {
        const MALFORMED: DigestFault = DigestFault::MalformedParameter("parameters");
        let is_lws = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        let b = params.as_bytes();
        let mut d = Directives::default();
        let mut i = 0;
        loop {
            while i < b.len() && (is_lws(b[i]) || b[i] == b',') {
                i += 1;
            }
            if i == b.len() {
                return Ok(d);
            }
            let name_start = i;
            while i < b.len() && !is_lws(b[i]) && !matches!(b[i], b'=' | b',' | b'"') {
                i += 1;
            }
            let name = &params[name_start..i];
            while i < b.len() && is_lws(b[i]) {
                i += 1;
            }
            if name.is_empty() || b.get(i) != Some(&b'=') {
                return Err(MALFORMED);
            }
            i += 1;
            while i < b.len() && is_lws(b[i]) {
                i += 1;
            }
            let value = if b.get(i) == Some(&b'"') {
                // Every split point is an ASCII byte, so slicing there is on a char boundary.
                // Fast path (memchr): the first `"` closes the string when no `\` precedes it.
                let start = i + 1;
                let rest = &params[start..];
                let mut escaped = false;
                i = match rest.find('"') {
                    Some(close) if !rest[..close].contains('\\') => start + close,
                    _ => {
                        escaped = true;
                        let mut j = start;
                        while j < b.len() && b[j] != b'"' {
                            j += if b[j] == b'\\' { 2 } else { 1 };
                        }
                        j
                    }
                };
                if i >= b.len() {
                    return Err(MALFORMED);
                }
                let inner = &params[start..i];
                i += 1;
                while i < b.len() && is_lws(b[i]) {
                    i += 1;
                }
                if i < b.len() && b[i] != b',' {
                    return Err(MALFORMED);
                }
                if escaped { unquote(inner) } else { Cow::Borrowed(inner) }
            } else {
                let start = i;
                while i < b.len() && b[i] != b',' {
                    if b[i] == b'"' {
                        return Err(MALFORMED);
                    }
                    i += 1;
                }
                Cow::Borrowed(trim_lws(&params[start..i]))
            };
            let (slot, label) = match name.len() {
                2 if name.eq_ignore_ascii_case("nc") => (&mut d.nc, "nc"),
                3 if name.eq_ignore_ascii_case("uri") => (&mut d.uri, "uri"),
                3 if name.eq_ignore_ascii_case("qop") => (&mut d.qop, "qop"),
                5 if name.eq_ignore_ascii_case("realm") => (&mut d.realm, "realm"),
                5 if name.eq_ignore_ascii_case("nonce") => (&mut d.nonce, "nonce"),
                6 if name.eq_ignore_ascii_case("cnonce") => (&mut d.cnonce, "cnonce"),
                6 if name.eq_ignore_ascii_case("opaque") => (&mut d.opaque, "opaque"),
                8 if name.eq_ignore_ascii_case("username") => (&mut d.username, "username"),
                8 if name.eq_ignore_ascii_case("response") => (&mut d.response, "response"),
                9 if name.eq_ignore_ascii_case("algorithm") => (&mut d.algorithm, "algorithm"),
                _ => continue,
            };
            if slot.is_some() {
                return Err(DigestFault::MalformedParameter(label));
            }
            *slot = Some(value);
        }
    }
}

fn required<'s>(v: &'s Option<Cow<'_, str>>, name: &'static str) -> Result<&'s str, DigestFault> {
    match v.as_deref() {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(DigestFault::MissingParameter(name)),
    }
}

/// `nc`: exactly 8 hex digits (RFC 2617 `nonce-count = "nc" "=" nc-value`, `nc-value = 8LHEX`).
fn parse_nc(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// `s` as lowercase hex in `buf` when it is exactly `len` hex digits.
fn lower_hex_of_len<'b>(s: &str, len: usize, buf: &'b mut [u8; 64]) -> Option<&'b [u8]> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    for (o, b) in buf.iter_mut().zip(s.bytes()) {
        *o = b.to_ascii_lowercase();
    }
    Some(&buf[..len])
}

/// The request-digest (RFC 2617 section 3.2.2.1) in lowercase hex:
/// H(HA1 `:` nonce `:` nc `:` cnonce `:` qop `:` HA2) with `qop`, H(HA1 `:` nonce `:` HA2)
/// without, where HA2 = H(method `:` uri).
fn response_hex<'o>(
    algorithm: DigestAlgorithm,
    ha1: &[u8],
    nonce: &str,
    qop: Option<&QopAuth<'_>>,
    method: &str,
    uri: &str,
    out: &'o mut [u8; 64],
) -> &'o [u8] {
    fn run<D: Digest>(
        ha1: &[u8],
        nonce: &str,
        qop: Option<&QopAuth<'_>>,
        method: &str,
        uri: &str,
        out: &mut [u8; 64],
    ) -> usize {
        let mut h = D::new();
        h.update(method.as_bytes());
        h.update(b":");
        h.update(uri.as_bytes());
        let mut ha2 = [0u8; 64];
        let ha2_len = hex_lower(&h.finalize(), &mut ha2);
        let mut h = D::new();
        h.update(ha1);
        h.update(b":");
        h.update(nonce.as_bytes());
        if let Some(q) = qop {
            for part in [q.nc, q.cnonce, q.qop] {
                h.update(b":");
                h.update(part.as_bytes());
            }
        }
        h.update(b":");
        h.update(&ha2[..ha2_len]);
        hex_lower(&h.finalize(), out)
    }
    let n = match algorithm {
        DigestAlgorithm::Md5 => run::<Md5>(ha1, nonce, qop, method, uri, out),
        DigestAlgorithm::Sha256 => run::<Sha256>(ha1, nonce, qop, method, uri, out),
    };
    &out[..n]
}

/// Compares our lowercase hex with the client's hex (any case) in time independent of where
/// they differ. Lengths are public (fixed by the algorithm).
fn ct_eq_hex(expected: &[u8], given: &[u8]) -> bool {
    if expected.len() != given.len() {
        return false;
    }
    let diff = expected.iter().zip(given).fold(0u8, |acc, (e, g)| acc | (e ^ g.to_ascii_lowercase()));
    std::hint::black_box(diff) == 0
}

/// Writes `bytes` as lowercase hex into `out`; returns the length written.
fn hex_lower(bytes: &[u8], out: &mut [u8]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut n = 0;
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
        n += 2;
    }
    n
}

/// Decodes hex (any case) into `out`, which must be exactly half as long.
fn hex_decode(hex: &[u8], out: &mut [u8]) -> bool {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    if hex.len() != out.len() * 2 {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => *o = (hi << 4) | lo,
            _ => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Replay protection.

/// The nonce counts already accepted, per nonce, so a captured request cannot be sent again.
///
/// Bounded memory, pure: it learns the time only from the `now` it is given.
/// - An entry lives as long as its nonce (issue time + lifetime); once the nonce is expired,
///   verification answers `Stale` before asking the guard, so forgetting it is safe.
/// - At most `capacity` entries: when full, the oldest entry is evicted even if its nonce is
///   still alive. To stay safe, the guard then remembers the latest issue time it evicted, and
///   treats any unknown nonce issued at or before it as forgotten: verification answers `Stale`
///   and the client retries with a fresh nonce. So a flood costs extra round trips, never a
///   replay.
///
/// Keys are the nonces' HMAC tags, which only authentic nonces reach and nobody can choose, so
/// a cheap hash of them is safe from collision floods. One guard per node: a request replayed to
/// another node within the nonce lifetime is not detected (the nonce is still authentic there).
#[derive(Debug)]
pub struct ReplayGuard {
    entries: HashMap<u128, GuardEntry, BuildHasherDefault<TagHasher>>,
    /// Keys in insertion order, oldest first (each key exactly once, as in `entries`).
    order: VecDeque<u128>,
    capacity: usize,
    /// Latest issue time among entries evicted while still alive.
    evicted_through: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug)]
struct GuardEntry {
    issued: Timestamp,
    expires: Timestamp,
    /// The highest `nc` accepted; `None` after a use without `qop` (single use).
    last_nc: Option<u32>,
}

/// What the guard says about one use of a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admission {
    /// First use of this count: accepted and recorded.
    Fresh,
    /// Already used with this count (or single-use and used).
    Replay,
    /// Possibly used, but evicted under memory pressure: ask for a fresh nonce.
    Forgotten,
}

impl Default for ReplayGuard {
    fn default() -> ReplayGuard {
        ReplayGuard::new(DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` nonces (at least one).
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            entries: HashMap::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            evicted_through: None,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Nonces currently remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets nonces expired at `now` (done on every use too; this is for an idle node).
    pub fn prune(&mut self, now: Timestamp) {
        while let Some(&oldest) = self.order.front() {
            match self.entries.get(&oldest) {
                Some(e) if e.expires > now => break,
                _ => {
                    self.order.pop_front();
                    self.entries.remove(&oldest);
                }
            }
        }
    }

    fn admit(
        &mut self,
        key: u128,
        issued: Timestamp,
        expires: Timestamp,
        nc: Option<u32>,
        now: Timestamp,
    ) -> Admission {
        self.prune(now);
        if let Some(e) = self.entries.get_mut(&key) {
            return match (nc, e.last_nc) {
                (Some(n), Some(last)) if n > last => {
                    e.last_nc = Some(n);
                    Admission::Fresh
                }
                _ => Admission::Replay,
            };
        }
        if self.evicted_through.is_some_and(|t| issued <= t) {
            return Admission::Forgotten;
        }
        while self.entries.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(e) = self.entries.remove(&oldest)
                && e.expires > now
            {
                self.evicted_through = Some(self.evicted_through.map_or(e.issued, |t| t.max(e.issued)));
            }
        }
        self.entries.insert(key, GuardEntry { issued, expires, last_nc: nc });
        self.order.push_back(key);
        Admission::Fresh
    }
}

/// Hashes a nonce tag (already uniformly random) by folding it to 64 bits.
#[derive(Default)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }
}

impl fmt::Debug for TagHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TagHasher")
    }
}

// ---------------------------------------------------------------------------------------------
// Client side.

/// The `Authorization`/`Proxy-Authorization` value answering an upstream carrier's `challenge`
/// (`WWW-Authenticate`/`Proxy-Authenticate`) for a request with `method` and Request-URI `uri`.
///
/// MD5 or SHA-256 as the challenge asks (absent means MD5); `qop=auth` with `cnonce` and `nc`
/// when the challenge offers `auth`, otherwise the RFC 2069 form. `cnonce` is the caller's random
/// value and `nc` the count of requests it has sent with this nonce (1 for the first). Values
/// are quoted as RFC 3261 section 25.1 asks (`nc`, `qop`, `algorithm` are tokens); `opaque` is
/// echoed. Values with control characters are refused rather than written into a header.
pub fn authorization(
    challenge: &Auth<'_>,
    method: &str,
    uri: &str,
    user: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> Result<String, DigestFault> {
    if !challenge.scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestFault::WrongScheme);
    }
    let c = Directives::parse(challenge.params)?;
    let realm = c.realm.as_deref().ok_or(DigestFault::MissingParameter("realm"))?;
    let nonce = required(&c.nonce, "nonce")?;
    let algorithm = c.algorithm()?;
    let offers_auth = match &c.qop {
        None => false,
        Some(q) if q.split(',').any(|o| trim_lws(o).eq_ignore_ascii_case("auth")) => true,
        Some(_) => return Err(DigestFault::UnsupportedQop),
    };
    if offers_auth && cnonce.is_empty() {
        return Err(DigestFault::MissingParameter("cnonce"));
    }
    for (value, name) in [
        (user, "username"),
        (realm, "realm"),
        (nonce, "nonce"),
        (uri, "uri"),
        (cnonce, "cnonce"),
        (c.opaque.as_deref().unwrap_or(""), "opaque"),
    ] {
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(DigestFault::MalformedParameter(name));
        }
    }

    let mut nc_hex = [0u8; 8];
    hex_lower(&nc.to_be_bytes(), &mut nc_hex);
    let nc_text = std::str::from_utf8(&nc_hex).unwrap_or("00000001");
    let qop = offers_auth.then_some(QopAuth { nc: nc_text, cnonce, qop: "auth" });
    let ha1 = ha1(algorithm, user, realm, password);
    let mut response = [0u8; 64];
    let response = response_hex(algorithm, ha1.as_bytes(), nonce, qop.as_ref(), method, uri, &mut response);

    let mut out = String::with_capacity(256);
    out.push_str("Digest username=");
    push_quoted(&mut out, user);
    out.push_str(", realm=");
    push_quoted(&mut out, realm);
    out.push_str(", nonce=");
    push_quoted(&mut out, nonce);
    out.push_str(", uri=");
    push_quoted(&mut out, uri);
    out.push_str(", response=\"");
    out.push_str(std::str::from_utf8(response).unwrap_or_default());
    out.push('"');
    if c.algorithm.is_some() {
        out.push_str(", algorithm=");
        out.push_str(algorithm.as_str());
    }
    if let Some(q) = &qop {
        out.push_str(", cnonce=");
        push_quoted(&mut out, q.cnonce);
        out.push_str(", qop=auth, nc=");
        out.push_str(q.nc);
    }
    if let Some(opaque) = &c.opaque {
        out.push_str(", opaque=");
        push_quoted(&mut out, opaque);
    }
    Ok(out)
}

/// Appends `s` as a quoted-string, escaping `"` and `\`.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn rfc2617_request_digest() {
        // RFC 2617 section 3.5.
        let ha1 = ha1(DigestAlgorithm::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(ha1, "939e7578ed9e3c518a452acee763bce9");
        let qop = QopAuth { nc: "00000001", cnonce: "0a4f113b", qop: "auth" };
        let mut out = [0u8; 64];
        let r = response_hex(
            DigestAlgorithm::Md5,
            ha1.as_bytes(),
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(&qop),
            "GET",
            "/dir/index.html",
            &mut out,
        );
        assert_eq!(r, b"6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_request_digests() {
        // RFC 7616 section 3.9.1.
        let (realm, nonce) = ("http-auth@example.org", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v");
        let qop = QopAuth { nc: "00000001", cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop: "auth" };
        for (alg, want) in [
            (DigestAlgorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (DigestAlgorithm::Sha256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ] {
            let ha1 = ha1(alg, "Mufasa", realm, "Circle of Life");
            let mut out = [0u8; 64];
            let r = response_hex(alg, ha1.as_bytes(), nonce, Some(&qop), "GET", "/dir/index.html", &mut out);
            assert_eq!(r, want.as_bytes(), "{alg:?}");
        }
    }

    #[test]
    fn nonce_is_hex_authentic_and_distinct() {
        let r = DigestRealm::new("sip.example", KEY, DEFAULT_NONCE_LIFETIME_MS);
        let now = Timestamp(1_700_000_000_000);
        let a = r.nonce(now);
        let b = r.nonce(now);
        assert_eq!(a.len(), NONCE_HEX);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b, "same millisecond, distinct nonces");
        assert_eq!(r.open_nonce(&a).unwrap().nonce, now);
        // Another key or another realm does not recognise it.
        assert!(DigestRealm::new("sip.example", [8; 32], 1).open_nonce(&a).is_none());
        assert!(DigestRealm::new("sip.other", KEY, 1).open_nonce(&a).is_none());
        // Moving the issue time forward breaks the tag.
        let mut forged = a.clone().into_bytes();
        forged[15] = if forged[15] == b'f' { b'e' } else { b'f' };
        assert!(r.open_nonce(std::str::from_utf8(&forged).unwrap()).is_none());
    }

    #[test]
    fn guard_counts_and_single_use() {
        let mut g = ReplayGuard::new(8);
        let (t, exp) = (Timestamp(1000), Timestamp(2000));
        assert_eq!(g.admit(1, t, exp, Some(1), t), Admission::Fresh);
        assert_eq!(g.admit(1, t, exp, Some(1), t), Admission::Replay);
        assert_eq!(g.admit(1, t, exp, Some(3), t), Admission::Fresh);
        assert_eq!(g.admit(1, t, exp, Some(2), t), Admission::Replay);
        assert_eq!(g.admit(1, t, exp, None, t), Admission::Replay);
        assert_eq!(g.admit(2, t, exp, None, t), Admission::Fresh);
        assert_eq!(g.admit(2, t, exp, None, t), Admission::Replay);
        assert_eq!(g.admit(2, t, exp, Some(9), t), Admission::Replay);
        assert_eq!(g.len(), 2);
        g.prune(exp);
        assert!(g.is_empty());
    }

    #[test]
    fn guard_evicts_oldest_and_forgets_safely() {
        let mut g = ReplayGuard::new(2);
        let now = Timestamp(100);
        let exp = |t: u64| Timestamp(t + 1000);
        assert_eq!(g.admit(10, Timestamp(10), exp(10), Some(1), now), Admission::Fresh);
        assert_eq!(g.admit(20, Timestamp(20), exp(20), Some(1), now), Admission::Fresh);
        // Full: the nonce issued at 10 is evicted while alive.
        assert_eq!(g.admit(30, Timestamp(30), exp(30), Some(1), now), Admission::Fresh);
        assert_eq!(g.len(), 2);
        // Its replay is not accepted: it is forgotten, so the client must take a fresh nonce.
        assert_eq!(g.admit(10, Timestamp(10), exp(10), Some(1), now), Admission::Forgotten);
        // A nonce issued after the eviction point is still admitted.
        assert_eq!(g.admit(40, Timestamp(40), exp(40), Some(1), now), Admission::Fresh);
        // Entries still tracked keep their counts.
        assert_eq!(g.admit(40, Timestamp(40), exp(40), Some(1), now), Admission::Replay);
    }

    #[test]
    fn guard_expired_entries_go_first_and_do_not_raise_the_floor() {
        let mut g = ReplayGuard::new(1);
        assert_eq!(g.admit(1, Timestamp(0), Timestamp(10), Some(1), Timestamp(5)), Admission::Fresh);
        assert_eq!(g.admit(2, Timestamp(20), Timestamp(30), Some(1), Timestamp(20)), Admission::Fresh);
        assert_eq!(g.evicted_through, None);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn helpers() {
        assert_eq!(parse_nc("0000000a"), Some(10));
        assert_eq!(parse_nc("FFFFFFFF"), Some(u32::MAX));
        assert_eq!(parse_nc("1"), None);
        assert_eq!(parse_nc("+0000001"), None);
        assert!(ct_eq_hex(b"abcdef", b"ABCdef"));
        assert!(!ct_eq_hex(b"abcdef", b"abcdee"));
        assert!(!ct_eq_hex(b"abcdef", b"abcde"));
        let mut s = String::new();
        push_quoted(&mut s, r#"a"b\c"#);
        assert_eq!(s, r#""a\"b\\c""#);
        let mut raw = [0u8; 2];
        assert!(hex_decode(b"0aFf", &mut raw) && raw == [0x0a, 0xff]);
        assert!(!hex_decode(b"0g00", &mut raw));
    }

    #[test]
    fn directives() {
        let d = Directives::parse(
            " username = \"a\\\"b\" ,, realm=\"r, with comma\",nc=00000001 ,X-ext=\"q\", algorithm=\"MD5\",uri=sip:a b ",
        )
        .unwrap();
        assert_eq!(d.username.as_deref(), Some("a\"b"));
        assert_eq!(d.realm.as_deref(), Some("r, with comma"));
        assert_eq!(d.nc.as_deref(), Some("00000001"));
        assert_eq!(d.algorithm.as_deref(), Some("MD5"));
        assert_eq!(d.uri.as_deref(), Some("sip:a b"));
        assert!(d.nonce.is_none());
        assert!(Directives::parse("").is_ok());
        for bad in ["realm", "realm=\"x", "realm=\"x\"y", "realm=x\"y\"", "=x", "\"a\"=b", "realm=\"x\\\""] {
            assert_eq!(Directives::parse(bad).err(), Some(DigestFault::MalformedParameter("parameters")), "{bad}");
        }
        assert_eq!(Directives::parse("nc=1, NC=2").err(), Some(DigestFault::MalformedParameter("nc")));
    }

    #[test]
    fn verdict_trace() {
        let mut t = Trace::new();
        DigestVerdict::Invalid(DigestFault::MissingParameter("nc")).record(&mut t);
        let s = t.failed().unwrap();
        assert_eq!(s.rule, "digest.verify");
        assert_eq!(s.fact("fault"), Some(&Value::Static("missing_parameter")));
        assert_eq!(s.fact("parameter"), Some(&Value::Static("nc")));
        let mut t = Trace::new();
        DigestVerdict::Valid.record(&mut t);
        assert!(t.failed().is_none());
    }

    #[test]
    fn stored_digest_debug_hides_ha1() {
        let d = StoredDigest::from_password("alice", "r", "secret");
        assert!(!format!("{d:?}").contains(&d.ha1_md5));
    }
}
