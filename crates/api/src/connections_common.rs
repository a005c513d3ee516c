//! What every SIP connection type shares (credential, IP, FQDN and UAC connections): their
//! fields as declarative [`Spec`] tables (validation, contract default, what null means), the
//! nested `inbound`/`outbound`/`rtcp_settings`/`jitter_buffer`/`noise_suppression_details`
//! objects, the rules across fields, the owner and outbound voice profile checks, the list
//! with the contract's `filter`/`sort`/`page`, SIP digest credentials, and generic handlers
//! that turn one [`ConnectionType`] value into the five routes of a resource.
//!
//! # Writing a connection type
//!
//! A connection type module is a few tables and a `routes()`:
//!
//! ```text
//! const INBOUND: Specs = &[cc::INBOUND, &[cc::SIP_REGION, cc::SIP_SUBDOMAIN, /* ... */]];
//! const OUTBOUND: Specs = &[cc::OUTBOUND, &[Spec::one_of("t38_reinvite_source", cc::T38_REINVITE_SOURCES, Some("customer"))]];
//! const OWN: &[Spec] = &[Spec::object("inbound", INBOUND), Spec::object("outbound", OUTBOUND), cc::TRANSPORT_PROTOCOL];
//! pub static IP: ConnectionType = ConnectionType {
//!     kind: "ip_connection",
//!     create_fields: &[cc::CONNECTION, OWN],
//!     update_fields: &[cc::CONNECTION, OWN],
//!     rules: |_, _| {},
//!     unique: |_| Vec::new(),
//!     unique_pointers: &[],
//! };
//! pub fn routes() -> Router<ApiState> { cc::routes(&IP, "/ip_connections") }
//! ```
//!
//! Spec tables are lists of slices; a later spec with the same name replaces an earlier one,
//! so a type takes the shared table and overrides only the fields whose contract default or
//! range differ for it (e.g. `OutboundIp.localization` has no default, `InboundFqdn.channel_limit`
//! is nullable). Each spec's default is the contract schema's `default`; fields without one
//! are absent from the document until set.
//!
//! # What a request does to a field
//!
//! - absent: unchanged (on create: the default); a `required()` field is a fault on create.
//! - null: nullable fields store null; required fields are a fault; any other field returns to
//!   its contract default (or is removed when it has none); an object returns to its defaults.
//! - a value: validated (enums 10032, anything else 10015, each fault with its JSON pointer);
//!   objects are merged key by key into the stored one.
//!
//! A request with any fault stores nothing: the handlers validate everything, then write once.
//!
//! # References
//!
//! `outbound.outbound_voice_profile_id` names a profile of the connection's own account; it is
//! locked while a connection naming it is written, and a profile any connection uses cannot be
//! deleted ([`delete_profile_unless_used`], one transaction with the count). Deleting a
//! connection of any type detaches its phone numbers (their stored `connection_id` becomes
//! null).
//! Documents may hold private fields whose names start with `_` (e.g. `_digest`); [`present`]
//! never shows them.

use std::cmp::Ordering;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Map, Value, json};
use store::{Repository, Resource, StoreError};

use crate::fields::Fields;
use crate::query::Query;
use crate::{ApiError, ApiState, Caller, ErrorObject, new_id, now_timestamp};

// ---------------------------------------------------------------------------------------------
// Enumerations, as the contract lists them.

/// `AnchorsiteOverride`: where media is anchored; `Latency` picks the nearest site.
pub const ANCHORSITES: &[&str] = &[
    "Latency",
    "Chicago, IL",
    "Ashburn, VA",
    "San Jose, CA",
    "Sydney, Australia",
    "Amsterdam, Netherlands",
    "London, UK",
    "Toronto, Canada",
    "Vancouver, Canada",
    "Frankfurt, Germany",
];
/// `DtmfType`: how DTMF is sent to the connection.
pub const DTMF_TYPES: &[&str] = &["RFC 2833", "Inband", "SIP INFO"];
/// `EncryptedMedia` (or null).
pub const ENCRYPTED_MEDIA_VALUES: &[&str] = &["SRTP"];
/// `ConnectionNoiseSuppression`.
pub const NOISE_SUPPRESSION_VALUES: &[&str] = &["inbound", "outbound", "both", "disabled"];
/// `ConnectionNoiseSuppressionDetails.engine`.
pub const NOISE_SUPPRESSION_ENGINES: &[&str] = &[
    "denoiser",
    "deep_filter_net",
    "deep_filter_net_large",
    "krisp_viva_tel",
    "krisp_viva_tel_lite",
    "krisp_viva_promodel",
    "krisp_viva_ss",
    "quail_voice_focus",
];
/// `ConnectionRtcpSettings.port`.
pub const RTCP_PORTS: &[&str] = &["rtcp-mux", "rtp+1"];
/// `webhook_api_version` on responses and updates.
pub const WEBHOOK_API_VERSIONS: &[&str] = &["1", "2"];
/// `webhook_api_version` on create for credential and UAC connections (`texml` needs
/// `outbound.call_parking_enabled` true; see [`connection_rules`]).
pub const WEBHOOK_API_VERSIONS_TEXML: &[&str] = &["1", "2", "texml"];
/// `sip_uri_calling_preference` (credential and UAC connections).
pub const SIP_URI_CALLING_PREFERENCES: &[&str] = &["disabled", "unrestricted", "internal"];
/// `transport_protocol` (IP and FQDN connections).
pub const TRANSPORT_PROTOCOLS: &[&str] = &["UDP", "TCP", "TLS"];
/// `inbound.ani_number_format`.
pub const ANI_NUMBER_FORMATS: &[&str] = &["+E.164", "E.164", "+E.164-national", "E.164-national"];
/// `inbound.dnis_number_format`.
pub const DNIS_NUMBER_FORMATS: &[&str] = &["+e164", "e164", "national", "sip_username"];
/// `inbound.default_routing_method`.
pub const ROUTING_METHODS: &[&str] = &["sequential", "round-robin"];
/// `inbound.simultaneous_ringing`.
pub const SIMULTANEOUS_RINGING_VALUES: &[&str] = &["disabled", "enabled"];
/// `inbound.sip_region`.
pub const SIP_REGIONS: &[&str] = &["US", "Europe", "Australia"];
/// `inbound.sip_subdomain_receive_settings`.
pub const SIP_SUBDOMAIN_RECEIVE_VALUES: &[&str] = &["only_my_connections", "from_anyone"];
/// `outbound.ani_override_type`.
pub const ANI_OVERRIDE_TYPES: &[&str] = &["always", "normal", "emergency"];
/// `outbound.t38_reinvite_source`.
pub const T38_REINVITE_SOURCES: &[&str] =
    &["telnyx", "customer", "disabled", "passthru", "caller-passthru", "callee-passthru"];
/// Codec names `inbound.codecs` accepts: the contract's default list plus VP8 and AMR-WB.
pub const CODECS: &[&str] = &["G722", "G711U", "G711A", "G729", "OPUS", "H.264", "VP8", "AMR-WB"];
/// The contract's default `inbound.codecs`, in priority order.
pub const DEFAULT_CODECS: &[&str] = &["G722", "G711U", "G711A", "G729", "OPUS", "H.264"];

// ---------------------------------------------------------------------------------------------
// Field specs.

/// How a field is validated.
#[derive(Clone, Copy)]
pub enum Kind {
    /// true or false.
    Bool,
    /// true, false or null.
    NullableBool,
    /// One of the strings (10032 otherwise).
    Enum(&'static [&'static str]),
    /// One of the strings, or null.
    NullableEnum(&'static [&'static str]),
    /// An integer in `min..=max` that is a multiple of `step`.
    Int { min: i64, max: i64, step: i64, nullable: bool },
    /// A string of `min..=max` characters that `valid` accepts (`detail` is the fault).
    Text { min: usize, max: usize, valid: fn(&str) -> bool, detail: &'static str, nullable: bool },
    /// An array of at least `min_items` strings, each accepted by `valid`.
    List { valid: fn(&str) -> bool, detail: &'static str, min_items: usize },
    /// A nested object with fields of its own, merged key by key on update.
    Object(Specs),
}

/// A field's value in a new document.
#[derive(Clone, Copy)]
pub enum Init {
    /// Absent until set (the contract gives no default).
    Absent,
    Null,
    Bool(bool),
    Int(i64),
    Str(&'static str),
    List(&'static [&'static str]),
    /// An object: the defaults of its own fields.
    Defaults,
}

/// One field: its name, validation, default and whether create needs it.
#[derive(Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub kind: Kind,
    pub init: Init,
    pub required: bool,
}

/// A table of field specs, as slices; a later spec with the same name replaces an earlier one.
pub type Specs = &'static [&'static [Spec]];

impl Spec {
    const fn new(name: &'static str, kind: Kind, init: Init) -> Spec {
        Spec { name, kind, init, required: false }
    }
    /// A boolean with its default.
    pub const fn bool(name: &'static str, default: bool) -> Spec {
        Spec::new(name, Kind::Bool, Init::Bool(default))
    }
    /// A boolean that may be null; `default` None means null.
    pub const fn nullable_bool(name: &'static str, default: Option<bool>) -> Spec {
        let init = match default {
            Some(b) => Init::Bool(b),
            None => Init::Null,
        };
        Spec::new(name, Kind::NullableBool, init)
    }
    /// An enumeration; `default` None: absent until set.
    pub const fn one_of(name: &'static str, allowed: &'static [&'static str], default: Option<&'static str>) -> Spec {
        let init = match default {
            Some(s) => Init::Str(s),
            None => Init::Absent,
        };
        Spec::new(name, Kind::Enum(allowed), init)
    }
    /// An enumeration or null, null by default.
    pub const fn nullable_one_of(name: &'static str, allowed: &'static [&'static str]) -> Spec {
        Spec::new(name, Kind::NullableEnum(allowed), Init::Null)
    }
    /// An integer in `min..=max`; `default` None: absent until set.
    pub const fn int(name: &'static str, min: i64, max: i64, default: Option<i64>) -> Spec {
        let init = match default {
            Some(n) => Init::Int(n),
            None => Init::Absent,
        };
        Spec::new(name, Kind::Int { min, max, step: 1, nullable: false }, init)
    }
    /// An integer in `min..=max` or null, null by default.
    pub const fn nullable_int(name: &'static str, min: i64, max: i64) -> Spec {
        Spec::new(name, Kind::Int { min, max, step: 1, nullable: true }, Init::Null)
    }
    /// A string of `min..=max` characters accepted by `valid`; `default` None: absent.
    pub const fn text(
        name: &'static str,
        min: usize,
        max: usize,
        valid: fn(&str) -> bool,
        detail: &'static str,
        default: Option<&'static str>,
    ) -> Spec {
        let init = match default {
            Some(s) => Init::Str(s),
            None => Init::Absent,
        };
        Spec::new(name, Kind::Text { min, max, valid, detail, nullable: false }, init)
    }
    /// Like [`Spec::text`], and null is a value; `default` None means null.
    pub const fn nullable_text(
        name: &'static str,
        min: usize,
        max: usize,
        valid: fn(&str) -> bool,
        detail: &'static str,
        default: Option<&'static str>,
    ) -> Spec {
        let init = match default {
            Some(s) => Init::Str(s),
            None => Init::Null,
        };
        Spec::new(name, Kind::Text { min, max, valid, detail, nullable: true }, init)
    }
    /// An array of strings (at least `min_items`), each accepted by `valid`.
    pub const fn list(
        name: &'static str,
        valid: fn(&str) -> bool,
        detail: &'static str,
        min_items: usize,
        default: &'static [&'static str],
    ) -> Spec {
        Spec::new(name, Kind::List { valid, detail, min_items }, Init::List(default))
    }
    /// A nested object of `fields`, present by default with their defaults.
    pub const fn object(name: &'static str, fields: Specs) -> Spec {
        Spec::new(name, Kind::Object(fields), Init::Defaults)
    }
    /// This field must be given on create, and may never be null.
    pub const fn required(mut self) -> Spec {
        self.required = true;
        self
    }
    /// For integers: the value must also be a multiple of `step`.
    pub const fn multiple_of(mut self, step: i64) -> Spec {
        if let Kind::Int { min, max, nullable, .. } = self.kind {
            self.kind = Kind::Int { min, max, step, nullable };
        }
        self
    }
    fn nullable(&self) -> bool {
        match self.kind {
            Kind::NullableBool | Kind::NullableEnum(_) => true,
            Kind::Int { nullable, .. } | Kind::Text { nullable, .. } => nullable,
            _ => false,
        }
    }
    /// The value in a new document, `None` when absent.
    fn initial(&self) -> Option<Value> {
        match (self.init, self.kind) {
            (Init::Absent, _) => None,
            (Init::Null, _) => Some(Value::Null),
            (Init::Bool(b), _) => Some(json!(b)),
            (Init::Int(n), _) => Some(json!(n)),
            (Init::Str(s), _) => Some(json!(s)),
            (Init::List(l), _) => Some(json!(l)),
            (Init::Defaults, Kind::Object(fields)) => Some(defaults(fields)),
            (Init::Defaults, _) => None,
        }
    }
}

// Validators for `Kind::Text` and `Kind::List`.

/// Any string.
pub fn any_text(_: &str) -> bool {
    true
}

/// Printable ASCII without spaces, or empty (e.g. `outbound.ani_override`).
pub fn is_token_or_blank(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

/// A UUID in its hyphenated form (`6a09cdc3-8948-47f0-aa62-74ac943d6c58`).
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An `http://` or `https://` URL with a host, printable ASCII, or empty (no webhook).
pub fn is_webhook_url_or_blank(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    let Some(rest) = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://")) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    s.bytes().all(|b| b.is_ascii_graphic())
        && !host.is_empty()
        && !host.starts_with(':')
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

/// A DNS label: letters, digits and hyphens, not at either end.
pub fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An ISO 3166-1 alpha-2 country code, or empty (`outbound.localization`).
pub fn is_country_or_blank(s: &str) -> bool {
    s.is_empty() || crate::outbound_voice_profiles::is_country(s)
}

/// One of [`CODECS`].
pub fn is_codec(s: &str) -> bool {
    CODECS.contains(&s)
}

/// A tag: 1 to 255 characters.
pub fn is_tag(s: &str) -> bool {
    (1..=255).contains(&s.chars().count())
}

/// A SIP credential user name: 4 to 32 ASCII letters and digits, with a letter among the first
/// five (the contract's `CredentialConnection.user_name`).
pub fn is_sip_user_name(s: &str) -> bool {
    (4..=32).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
        && s.bytes().take(5).any(|b| b.is_ascii_alphabetic())
}

// Shared field specs. Defaults are the contract's.

pub const ACTIVE: Spec = Spec::bool("active", true);
pub const ANCHORSITE_OVERRIDE: Spec = Spec::one_of("anchorsite_override", ANCHORSITES, Some("Latency"));
pub const ANDROID_PUSH_CREDENTIAL_ID: Spec =
    Spec::nullable_text("android_push_credential_id", 1, 64, is_uuid, "Must be a UUID or null.", None);
pub const IOS_PUSH_CREDENTIAL_ID: Spec =
    Spec::nullable_text("ios_push_credential_id", 1, 64, is_uuid, "Must be a UUID or null.", None);
pub const CALL_COST_IN_WEBHOOKS: Spec = Spec::bool("call_cost_in_webhooks", false);
/// Required on create; 1 to 255 characters.
pub const CONNECTION_NAME: Spec = Spec::text("connection_name", 1, 255, any_text, "", None).required();
/// The request schemas' default (false); the response schema says true.
pub const DEFAULT_ON_HOLD_COMFORT_NOISE_ENABLED: Spec = Spec::bool("default_on_hold_comfort_noise_enabled", false);
pub const DTMF_TYPE: Spec = Spec::one_of("dtmf_type", DTMF_TYPES, Some("RFC 2833"));
pub const ENCODE_CONTACT_HEADER_ENABLED: Spec = Spec::bool("encode_contact_header_enabled", false);
pub const ENCRYPTED_MEDIA: Spec = Spec::nullable_one_of("encrypted_media", ENCRYPTED_MEDIA_VALUES);
/// The contract gives no default: absent until set.
pub const NOISE_SUPPRESSION: Spec = Spec::one_of("noise_suppression", NOISE_SUPPRESSION_VALUES, None);
pub const ONNET_T38_PASSTHROUGH_ENABLED: Spec = Spec::bool("onnet_t38_passthrough_enabled", false);
pub const TAGS: Spec = Spec::list("tags", is_tag, "Must be a string of 1 to 255 characters.", 0, &[]);
pub const WEBHOOK_API_VERSION: Spec = Spec::one_of("webhook_api_version", WEBHOOK_API_VERSIONS, Some("1"));
/// Replaces [`WEBHOOK_API_VERSION`] in the create table of credential and UAC connections.
pub const WEBHOOK_API_VERSION_TEXML: Spec = Spec::one_of("webhook_api_version", WEBHOOK_API_VERSIONS_TEXML, Some("1"));
const URL_DETAIL: &str = "Must be an http:// or https:// URL, or empty.";
pub const WEBHOOK_EVENT_URL: Spec = Spec::text("webhook_event_url", 0, 2048, is_webhook_url_or_blank, URL_DETAIL, None);
pub const WEBHOOK_EVENT_FAILOVER_URL: Spec =
    Spec::nullable_text("webhook_event_failover_url", 0, 2048, is_webhook_url_or_blank, URL_DETAIL, Some(""));
pub const WEBHOOK_TIMEOUT_SECS: Spec = Spec::nullable_int("webhook_timeout_secs", 0, 30);
/// Credential and UAC connections. The contract gives no default; the product docs say SIP URI
/// calling "is disabled by default".
pub const SIP_URI_CALLING_PREFERENCE: Spec =
    Spec::one_of("sip_uri_calling_preference", SIP_URI_CALLING_PREFERENCES, Some("disabled"));
/// IP and FQDN connections.
pub const TRANSPORT_PROTOCOL: Spec = Spec::one_of("transport_protocol", TRANSPORT_PROTOCOLS, Some("UDP"));
/// SIP credentials (credential and UAC connections); mark `.required()` where create needs them.
pub const USER_NAME: Spec = Spec::text(
    "user_name",
    4,
    32,
    is_sip_user_name,
    "Must be 4 to 32 letters and digits, with a letter among the first 5 characters.",
    None,
);
pub const PASSWORD: Spec = Spec::text("password", 8, 128, any_text, "", None);

/// `ConnectionRtcpSettings`.
pub const RTCP_SETTINGS_FIELDS: &[Spec] = &[
    Spec::bool("capture_enabled", false),
    Spec::one_of("port", RTCP_PORTS, Some("rtp+1")),
    Spec::int("report_frequency_secs", 5, 3000, Some(5)),
];
/// `ConnectionJitterBuffer` (40 to 400 ms; min <= max is checked by [`connection_rules`]).
pub const JITTER_BUFFER_FIELDS: &[Spec] = &[
    Spec::bool("enable_jitter_buffer", false),
    Spec::int("jitterbuffer_msec_max", 40, 400, Some(200)),
    Spec::int("jitterbuffer_msec_min", 40, 400, Some(60)),
];
/// `ConnectionNoiseSuppressionDetails`; `attenuation_limit` (0 to 100 in steps of 10) defaults
/// by engine, filled in by [`connection_rules`].
pub const NOISE_SUPPRESSION_DETAILS_FIELDS: &[Spec] = &[
    Spec::one_of("engine", NOISE_SUPPRESSION_ENGINES, Some("denoiser")),
    Spec::int("attenuation_limit", 0, 100, None).multiple_of(10),
];

/// The top-level fields every connection type has (`CredentialConnection`, `IpConnection`,
/// `FqdnConnection`, `UacConnection` all carry them), `connection_name` required on create.
/// Add the type's own `inbound`/`outbound` objects and fields.
pub const CONNECTION: &[Spec] = &[
    ACTIVE,
    ANCHORSITE_OVERRIDE,
    ANDROID_PUSH_CREDENTIAL_ID,
    CALL_COST_IN_WEBHOOKS,
    CONNECTION_NAME,
    DEFAULT_ON_HOLD_COMFORT_NOISE_ENABLED,
    DTMF_TYPE,
    ENCODE_CONTACT_HEADER_ENABLED,
    ENCRYPTED_MEDIA,
    IOS_PUSH_CREDENTIAL_ID,
    Spec::object("jitter_buffer", &[JITTER_BUFFER_FIELDS]),
    NOISE_SUPPRESSION,
    Spec::object("noise_suppression_details", &[NOISE_SUPPRESSION_DETAILS_FIELDS]),
    ONNET_T38_PASSTHROUGH_ENABLED,
    Spec::object("rtcp_settings", &[RTCP_SETTINGS_FIELDS]),
    TAGS,
    WEBHOOK_API_VERSION,
    WEBHOOK_EVENT_FAILOVER_URL,
    WEBHOOK_EVENT_URL,
    WEBHOOK_TIMEOUT_SECS,
];

/// The `inbound` fields the four types share (`CredentialInbound`, `InboundIp`, `InboundFqdn`,
/// `UacInbound`). Add the type's own: [`SIMULTANEOUS_RINGING`], [`SIP_REGION`],
/// [`SIP_SUBDOMAIN`], [`SIP_SUBDOMAIN_RECEIVE_SETTINGS`], default IP/FQDN ids.
pub const INBOUND: &[Spec] = &[
    Spec::one_of("ani_number_format", ANI_NUMBER_FORMATS, Some("E.164-national")),
    Spec::nullable_int("channel_limit", 0, 1_000_000),
    Spec::list(
        "codecs",
        is_codec,
        "Must be a codec name: G722, G711U, G711A, G729, OPUS, H.264, VP8 or AMR-WB.",
        1,
        DEFAULT_CODECS,
    ),
    Spec::one_of("default_routing_method", ROUTING_METHODS, None),
    Spec::one_of("dnis_number_format", DNIS_NUMBER_FORMATS, Some("e164")),
    Spec::bool("generate_ringback_tone", false),
    Spec::bool("isup_headers_enabled", false),
    Spec::bool("prack_enabled", false),
    Spec::bool("shaken_stir_enabled", false),
    Spec::bool("sip_compact_headers_enabled", true),
    Spec::int("timeout_1xx_secs", 1, 120, Some(3)),
    Spec::int("timeout_2xx_secs", 1, 600, Some(90)),
];
pub const SIMULTANEOUS_RINGING: Spec =
    Spec::one_of("simultaneous_ringing", SIMULTANEOUS_RINGING_VALUES, Some("disabled"));
pub const SIP_REGION: Spec = Spec::one_of("sip_region", SIP_REGIONS, Some("US"));
/// A DNS label; its uniqueness is the IP/FQDN types' to claim.
pub const SIP_SUBDOMAIN: Spec =
    Spec::text("sip_subdomain", 1, 63, is_dns_label, "Must be letters, digits and inner hyphens (a DNS label).", None);
pub const SIP_SUBDOMAIN_RECEIVE_SETTINGS: Spec =
    Spec::one_of("sip_subdomain_receive_settings", SIP_SUBDOMAIN_RECEIVE_VALUES, None);

/// The `outbound` fields the four types share (`CredentialOutbound`, `OutboundIp`,
/// `OutboundFqdn`, `UacOutbound`) with `CredentialOutbound`'s defaults; override what differs.
/// `outbound_voice_profile_id` must name a profile of the same account, checked by
/// [`check_outbound_voice_profile`]; null clears it.
pub const OUTBOUND: &[Spec] = &[
    Spec::text("ani_override", 0, 64, is_token_or_blank, "Must be printable characters without spaces.", Some("")),
    Spec::one_of("ani_override_type", ANI_OVERRIDE_TYPES, Some("always")),
    Spec::nullable_bool("call_parking_enabled", Some(false)),
    Spec::nullable_int("channel_limit", 0, 1_000_000),
    Spec::bool("generate_ringback_tone", false),
    Spec::bool("instant_ringback_enabled", true),
    Spec::text(
        "localization",
        0,
        2,
        is_country_or_blank,
        "Must be an ISO 3166-1 alpha-2 country code, such as \"US\", or empty.",
        Some("US"),
    ),
    Spec::text("outbound_voice_profile_id", 1, 64, any_text, "", None),
    Spec::one_of("t38_reinvite_source", T38_REINVITE_SOURCES, Some("telnyx")),
];

// ---------------------------------------------------------------------------------------------
// Building documents from specs.

fn resolve(specs: Specs) -> Vec<&'static Spec> {
    let mut out: Vec<&'static Spec> = Vec::new();
    for spec in specs.iter().flat_map(|s| s.iter()) {
        match out.iter_mut().find(|s| s.name == spec.name) {
            Some(slot) => *slot = spec,
            None => out.push(spec),
        }
    }
    out
}

/// A new document: every field of `specs` with its contract default (fields without one are
/// left out; objects hold their own defaults).
pub fn defaults(specs: Specs) -> Value {
    let mut doc = Map::new();
    for spec in resolve(specs) {
        if let Some(v) = spec.initial() {
            doc.insert(spec.name.to_owned(), v);
        }
    }
    Value::Object(doc)
}

/// Reads, validates and merges into `doc` every field of `specs` the request names (see the
/// module documentation for absent, null and values). Faults go to `f.errors`, nested ones
/// under `/object/field`. `creating` makes `required()` fields mandatory.
pub fn apply(f: &mut Fields, specs: Specs, doc: &mut Value, creating: bool) {
    if !doc.is_object() {
        *doc = defaults(specs);
    }
    for spec in resolve(specs) {
        let name = spec.name;
        let pointer = format!("/{name}");
        if !f.has(name) {
            if creating && spec.required {
                f.errors.push(ErrorObject::required(&pointer));
            }
            continue;
        }
        if f.is_null(name) {
            if spec.required {
                f.errors.push(ErrorObject::required(&pointer));
            } else if spec.nullable() {
                doc[name] = Value::Null;
            } else if let Some(v) = spec.initial() {
                doc[name] = v;
            } else if let Some(o) = doc.as_object_mut() {
                o.remove(name);
            }
            continue;
        }
        if let Kind::Object(fields) = spec.kind {
            if let Some(Some(mut inner)) = f.object(name) {
                if !doc[name].is_object() {
                    doc[name] = defaults(fields);
                }
                apply(&mut inner, fields, &mut doc[name], creating);
                f.absorb(name, inner);
            }
        } else if let Some(v) = read(f, spec) {
            doc[name] = v;
        }
    }
}

/// One scalar or list field, validated; `None` on a fault (recorded in `f.errors`).
fn read(f: &mut Fields, spec: &Spec) -> Option<Value> {
    let name = spec.name;
    let pointer = format!("/{name}");
    let before = f.errors.len();
    let value = match spec.kind {
        Kind::Bool | Kind::NullableBool => f.boolean(name, None).map(Value::from),
        Kind::Enum(allowed) | Kind::NullableEnum(allowed) => f.one_of(name, allowed, None).map(Value::from),
        Kind::Int { min, max, step, .. } => match f.integer(name, min, max, None, false) {
            Some(Some(n)) if n % step == 0 => Some(json!(n)),
            Some(Some(_)) => {
                f.errors.push(ErrorObject::invalid_value(&pointer, format!("Must be a multiple of {step}.")));
                None
            }
            _ => None,
        },
        Kind::Text { min, max, valid, detail, .. } => match f.string(name, false, min, max) {
            Some(s) if valid(&s) => Some(Value::String(s)),
            Some(_) => {
                f.errors.push(ErrorObject::invalid_value(&pointer, detail));
                None
            }
            None => None,
        },
        Kind::List { valid, detail, min_items } => match f.string_list(name, None, valid, detail) {
            Some(items) if items.len() >= min_items => Some(json!(items)),
            Some(_) => {
                f.errors.push(ErrorObject::invalid_value(&pointer, format!("Must list at least {min_items} item(s).")));
                None
            }
            None => None,
        },
        Kind::Object(_) => None,
    };
    if f.errors.len() > before { None } else { value }
}

/// The noise suppression `attenuation_limit` default of an engine, as the contract gives it.
pub fn default_attenuation_limit(engine: &str) -> i64 {
    match engine {
        "denoiser" => 0,
        "quail_voice_focus" => 100,
        _ => 80,
    }
}

/// Rules across the shared fields, on the document as it would be stored (run after
/// [`apply`]; the generic handlers do):
/// - `jitter_buffer.jitterbuffer_msec_min` may not exceed `jitterbuffer_msec_max`;
/// - `noise_suppression_details.attenuation_limit` takes the engine's default when never set,
///   and again when a request names an `engine` without an `attenuation_limit`;
/// - `webhook_api_version` `texml` needs `outbound.call_parking_enabled` true.
pub fn connection_rules(f: &mut Fields, doc: &mut Value) {
    let jb = &doc["jitter_buffer"];
    if let (Some(min), Some(max)) = (jb["jitterbuffer_msec_min"].as_i64(), jb["jitterbuffer_msec_max"].as_i64())
        && min > max
    {
        f.errors.push(ErrorObject::invalid_value(
            "/jitter_buffer/jitterbuffer_msec_min",
            format!("Must not be greater than jitterbuffer_msec_max ({max})."),
        ));
    }

    let sent = f.value("noise_suppression_details");
    let sent_engine_only = sent.and_then(|v| v.get("engine")).is_some_and(|e| !e.is_null())
        && sent.and_then(|v| v.get("attenuation_limit")).is_none_or(Value::is_null);
    if let Some(details) = doc.get_mut("noise_suppression_details").filter(|d| d.is_object())
        && (sent_engine_only || details.get("attenuation_limit").is_none_or(Value::is_null))
    {
        let limit = default_attenuation_limit(details["engine"].as_str().unwrap_or("denoiser"));
        details["attenuation_limit"] = json!(limit);
    }

    if doc["webhook_api_version"] == "texml" && doc["outbound"]["call_parking_enabled"] != true {
        let pointer =
            if f.has("webhook_api_version") { "/webhook_api_version" } else { "/outbound/call_parking_enabled" };
        f.errors.push(ErrorObject::invalid_value(
            pointer,
            "webhook_api_version texml needs outbound.call_parking_enabled set to true.",
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Checks against the store, and presentation.

/// The owning account of a new resource. The operator must name it with the body field
/// `account_id` (an operator extension, not in the contract) and it must exist; an account's
/// key creates in its own account and may send `account_id` only as its own id. Faults go to
/// `f.errors` (at `/account_id`).
pub async fn owner_for_create(
    store: &dyn Repository,
    caller: &Caller,
    f: &mut Fields,
) -> Result<Option<String>, ApiError> {
    match caller {
        Caller::Operator => {
            let Some(id) = f.string("account_id", true, 1, 64) else { return Ok(None) };
            if store.get_resource("account", &id).await?.is_none() {
                f.errors.push(ErrorObject::invalid_value("/account_id", "No account has this id."));
                return Ok(None);
            }
            Ok(Some(id))
        }
        Caller::Account(own) => {
            if let Some(Some(given)) = f.nullable_string("account_id")
                && given != *own
            {
                f.errors.push(ErrorObject::invalid_value("/account_id", "Only the operator may name another account."));
            }
            Ok(Some(own.clone()))
        }
    }
}

/// On update: `account_id`, when sent, must be the current owner's.
pub fn check_owner_unchanged(f: &mut Fields, account_id: &str) {
    if let Some(Some(given)) = f.nullable_string("account_id")
        && given != account_id
    {
        f.errors.push(ErrorObject::invalid_value("/account_id", "The owning account cannot be changed."));
    }
}

/// `outbound.outbound_voice_profile_id`, when set or changed (compared with `base`, the stored
/// document on update), must name an outbound voice profile of `account_id`; another account's
/// profile is refused like a missing one. Fault at `/outbound/outbound_voice_profile_id`.
pub async fn check_outbound_voice_profile(
    store: &dyn Repository,
    f: &mut Fields,
    account_id: &str,
    doc: &Value,
    base: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(id) = profile_of(doc) else { return Ok(()) };
    if base.is_some_and(|b| profile_of(b) == Some(id)) {
        return Ok(());
    }
    let owned = store.get_resource(PROFILE_KIND, id).await?.is_some_and(|r| r.account_id == account_id);
    if !owned {
        f.errors.push(ErrorObject::invalid_value("/outbound/outbound_voice_profile_id", NO_SUCH_PROFILE));
    }
    Ok(())
}

/// A store failure as the API answers it; a unique value already held answers 422 at the
/// pointer `pointers` gives for its scope (e.g. `("sip_user_name", "/user_name")`).
pub fn unique_error(e: StoreError, pointers: &[(&str, &str)]) -> ApiError {
    if let StoreError::Conflict { scope } = &e
        && let Some((_, pointer)) = pointers.iter().find(|(s, _)| s == scope)
    {
        let field = pointer.rsplit('/').next().unwrap_or(pointer);
        return ApiError::conflict(format!("This {field} is already in use."), pointer);
    }
    e.into()
}

/// The document as the API shows it: without private `_` fields; the operator also sees the
/// owning `account_id` (an operator extension).
pub fn present(mut doc: Value, account_id: &str, caller: &Caller) -> Value {
    if let Some(o) = doc.as_object_mut() {
        o.retain(|k, _| !k.starts_with('_'));
        if *caller == Caller::Operator {
            o.insert("account_id".into(), json!(account_id));
        }
    }
    omit_unset(&mut doc, UNSET_IN_RESPONSES);
    doc
}

/// Fields whose unset value cannot be written in the contract's own response type
/// (`channel_limit: {type: integer, default: null}`, `webhook_event_failover_url: {format:
/// uri, default: ""}`, an IP connection's `inbound.default_*_ip_id: {type: string}` once its
/// IP is gone, ...). Unset, they are left out of responses, which the schema allows (none is
/// required), rather than sent as a value the schema refuses; stored documents keep them, so a
/// later read or PATCH sees the same defaults. Fields the contract types as nullable (an FQDN
/// connection's `inbound.default_*_fqdn_id`) are not listed: their null is shown.
pub const UNSET_IN_RESPONSES: &[&str] = &[
    "/webhook_event_failover_url",
    "/inbound/channel_limit",
    "/inbound/default_primary_ip_id",
    "/inbound/default_secondary_ip_id",
    "/inbound/default_tertiary_ip_id",
    "/outbound/channel_limit",
    "/outbound/ip_authentication_token",
    "/outbound/localization",
];

/// Removes each field at a JSON pointer in `paths` whose value is null, or, for a URL field
/// (`..._url`, a `format: uri` in the contract), an empty string, which no URI can be. Any other
/// empty string is a value the user set and stays.
pub fn omit_unset(doc: &mut Value, paths: &[&str]) {
    for path in paths {
        let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
        let empty_url = key.ends_with("_url") && doc.pointer(path).and_then(Value::as_str) == Some("");
        let unset = empty_url || doc.pointer(path).is_some_and(Value::is_null);
        if unset && let Some(o) = doc.pointer_mut(parent).and_then(Value::as_object_mut) {
            o.remove(key);
        }
    }
}

pub use crate::fetch;

// ---------------------------------------------------------------------------------------------
// The list: `connections_FilterConsolidated`, `connections_PageConsolidated`,
// `connections_SortConnection`.

/// `sort` values (the contract's enumeration, each also descending with `-`).
pub const SORTS: &[&str] = &["created_at", "-created_at", "connection_name", "-connection_name", "active", "-active"];

fn compare(a: &Value, b: &Value, field: &str) -> Ordering {
    match field {
        "active" => a[field].as_bool().cmp(&b[field].as_bool()),
        "connection_name" => {
            let (x, y) = (a[field].as_str().unwrap_or_default(), b[field].as_str().unwrap_or_default());
            x.to_lowercase().cmp(&y.to_lowercase()).then_with(|| x.cmp(y))
        }
        _ => a[field].as_str().cmp(&b[field].as_str()),
    }
}

/// One page of the connections of `kinds` this caller sees (`/v2/connections` passes every
/// kind), as the contract's list envelope. Query: `page[number]`, `page[size]` (1 to 250,
/// default 250); `filter[connection_name][contains]` (3 characters or more, not
/// case-sensitive); `filter[fqdn]` (exact); `filter[outbound_voice_profile_id]` (also as
/// `filter[outbound.outbound_voice_profile_id]`); `sort` (default `-created_at`, as the
/// contract's description says); the operator may narrow with `filter[account_id]`. Errors
/// answer 400, the contract's code for these lists.
pub async fn list_connections(
    store: &dyn Repository,
    caller: &Caller,
    kinds: &[&str],
    raw_query: Option<&str>,
) -> Result<Value, ApiError> {
    list_connections_matching(store, caller, kinds, raw_query, false).await
}

/// The list behind [`list_connections`] and [`list_connections_with_fqdn_records`]: with
/// `fqdn_records`, `filter[fqdn]` also matches connections through their FQDN records.
async fn list_connections_matching(
    store: &dyn Repository,
    caller: &Caller,
    kinds: &[&str],
    raw_query: Option<&str>,
    fqdn_records: bool,
) -> Result<Value, ApiError> {
    let q = Query::parse(raw_query);
    let page = q.page(250, 250)?;
    let (field, descending) = q.sort(SORTS, "-created_at")?;
    let name = q.get("filter[connection_name][contains]").map(str::to_lowercase);
    if name.as_ref().is_some_and(|n| n.chars().count() < 3) {
        return Err(ApiError::bad_request("filter[connection_name][contains] needs at least three characters."));
    }
    let fqdn = q.get("filter[fqdn]");
    let profile =
        q.get("filter[outbound_voice_profile_id]").or_else(|| q.get("filter[outbound.outbound_voice_profile_id]"));
    let account_filter = q.get("filter[account_id]");
    let scope = match caller {
        Caller::Account(a) => Some(a.as_str()),
        Caller::Operator => account_filter,
    };
    // Connections that have an FQDN record (`/v2/fqdns`) equal to `filter[fqdn]`.
    let mut with_record = std::collections::HashSet::new();
    if let (true, Some(f)) = (fqdn_records, fqdn) {
        for r in store.list_resources(FQDN_RECORD_KIND, scope).await? {
            if let Ok(doc) = serde_json::from_str::<Value>(&r.body)
                && doc["fqdn"].as_str() == Some(f)
                && let Some(c) = doc["connection_id"].as_str()
            {
                with_record.insert(c.to_owned());
            }
        }
    }
    let mut items: Vec<(Value, String)> = Vec::new();
    for kind in kinds {
        for r in store.list_resources(kind, scope).await? {
            if !caller.sees(&r.account_id) || account_filter.is_some_and(|a| r.account_id != a) {
                continue;
            }
            let Ok(doc) = serde_json::from_str::<Value>(&r.body) else { continue };
            let keep = name
                .as_ref()
                .is_none_or(|n| doc["connection_name"].as_str().is_some_and(|c| c.to_lowercase().contains(n.as_str())))
                && fqdn.is_none_or(|f| doc["fqdn"].as_str() == Some(f) || with_record.contains(&r.id))
                && profile.is_none_or(|p| doc["outbound"]["outbound_voice_profile_id"].as_str() == Some(p));
            if keep {
                items.push((doc, r.account_id));
            }
        }
    }
    items.sort_by(|(a, _), (b, _)| {
        let o = compare(a, b, field);
        if descending { o.reverse() } else { o }
    });
    let items = items.into_iter().map(|(doc, account)| present(doc, &account, caller)).collect();
    Ok(page.envelope(items))
}

// ---------------------------------------------------------------------------------------------
// Generic handlers.

/// One connection type, as the generic handlers need it.
pub struct ConnectionType {
    /// The stored kind, also the `record_type` shown (`credential_connection`).
    pub kind: &'static str,
    /// The fields a create accepts (`required()` ones must be given) and an update accepts.
    pub create_fields: Specs,
    pub update_fields: Specs,
    /// The type's own rules and derived private fields, run after [`apply`] and
    /// [`connection_rules`] on the document as it would be stored.
    pub rules: fn(&mut Fields, &mut Value),
    /// The unique values the document claims, `(scope, value)`.
    pub unique: fn(&Value) -> Vec<(&'static str, String)>,
    /// Unique scope -> JSON pointer of the field holding it, for the 422 on a conflict.
    pub unique_pointers: &'static [(&'static str, &'static str)],
}

/// The list, create, show, update and delete routes of a connection type at `path`
/// (`/credential_connections` and `/credential_connections/{id}`). Add type-specific actions
/// to the router it returns.
pub fn routes(t: &'static ConnectionType, path: &str) -> Router<ApiState> {
    Router::new()
        .route(
            path,
            get(move |State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery| async move {
                list_connections(&*s.store, &caller, &[t.kind], q.as_deref()).await.map(Json)
            })
            .post(move |State(s): State<ApiState>, caller: Caller, body: Bytes| async move {
                create(t, &s, &caller, &body).await
            }),
        )
        .route(
            &format!("{path}/{{id}}"),
            get(move |State(s): State<ApiState>, caller: Caller, Path(id): Path<String>| async move {
                show(t, &s, &caller, &id).await
            })
            .patch(move |State(s): State<ApiState>, caller: Caller, Path(id): Path<String>, body: Bytes| async move {
                update(t, &s, &caller, &id, &body).await
            })
            .delete(move |State(s): State<ApiState>, caller: Caller, Path(id): Path<String>| async move {
                remove(t, &s, &caller, &id).await
            }),
        )
}

/// Validates a document: [`apply`], [`connection_rules`], the type's rules and the outbound
/// voice profile check. `base` is the stored document on update.
async fn validate(
    t: &ConnectionType,
    store: &dyn Repository,
    f: &mut Fields,
    account_id: Option<&str>,
    base: Option<&Value>,
) -> Result<Value, ApiError> {
    let (fields, mut doc) = match base {
        None => (t.create_fields, defaults(t.create_fields)),
        Some(b) => (t.update_fields, b.clone()),
    };
    apply(f, fields, &mut doc, base.is_none());
    connection_rules(f, &mut doc);
    (t.rules)(f, &mut doc);
    if let Some(a) = account_id {
        check_outbound_voice_profile(store, f, a, &doc, base).await?;
    }
    Ok(doc)
}

/// Create: 201 with the new connection.
pub async fn create(
    t: &ConnectionType,
    s: &ApiState,
    caller: &Caller,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create_connection(t, None, s, caller, body).await
}

/// Show.
pub async fn show(t: &ConnectionType, s: &ApiState, caller: &Caller, id: &str) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&*s.store, caller, t.kind, id).await?;
    Ok(Json(json!({ "data": present(doc, &r.account_id, caller) })))
}

/// PATCH: the fields given change (objects key by key), the others stay.
pub async fn update(
    t: &ConnectionType,
    s: &ApiState,
    caller: &Caller,
    id: &str,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    update_connection(t, None, s, caller, id, body).await
}

/// DELETE: 200 with the deleted connection; its unique values are free again and its phone
/// numbers detached.
pub async fn remove(t: &ConnectionType, s: &ApiState, caller: &Caller, id: &str) -> Result<Json<Value>, ApiError> {
    remove_connection(t, &[], s, caller, id).await
}

/// How many times a create picks another platform-assigned value ([`Reassign`]) after a
/// conflict before it gives up.
const REASSIGN_ATTEMPTS: u32 = 8;

/// Every create: validation, the store rules of `with` (when given), then one insert. A
/// conflict in the scope of `with`'s [`Reassign`] picks another value and inserts again.
async fn create_connection(
    t: &ConnectionType,
    with: Option<&ConnectionTypeWithStore>,
    s: &ApiState,
    caller: &Caller,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Fields::parse(body)?;
    let owner = owner_for_create(&*s.store, caller, &mut f).await?;
    let mut doc = validate(t, &*s.store, &mut f, owner.as_deref(), None).await?;
    if let (Some(w), Some(o)) = (with, owner.as_deref()) {
        (w.store_rules)(&*s.store, &mut f, o, None, &mut doc).await?;
    }
    f.finish()?;
    let owner = owner.ok_or_else(ApiError::internal)?;
    let id = new_id()?;
    let now = now_timestamp();
    doc["id"] = json!(id);
    doc["record_type"] = json!(t.kind);
    doc["created_at"] = json!(now);
    doc["updated_at"] = json!(now);
    let password = take_password(&mut doc);
    let mut r = Resource {
        kind: t.kind.into(),
        id,
        account_id: owner,
        name: doc["connection_name"].as_str().unwrap_or_default().to_owned(),
        body: String::new(),
        created_at: now.clone(),
        updated_at: now,
    };
    let reassign = with.and_then(|w| w.reassign.as_ref());
    let mut attempts = 0;
    loop {
        r.body = doc.to_string();
        match (write_connection(t, &*s.store, &r, &doc, None).await, reassign) {
            (Ok(true), _) => break,
            (Ok(false), _) => return Err(profile_gone()),
            (Err(StoreError::Conflict { scope }), Some(a)) if a.scope == scope && attempts < REASSIGN_ATTEMPTS => {
                attempts += 1;
                (a.pick)(&*s.store, &mut doc).await?;
            }
            (Err(e), _) => return Err(unique_error(e, t.unique_pointers)),
        }
    }
    let mut shown = present(doc, &r.account_id, caller);
    if let Some(p) = password {
        shown["password"] = p;
    }
    Ok((StatusCode::CREATED, Json(json!({ "data": shown }))))
}

/// Every PATCH: validation, the store rules of `with` (when given), then one write.
async fn update_connection(
    t: &ConnectionType,
    with: Option<&ConnectionTypeWithStore>,
    s: &ApiState,
    caller: &Caller,
    id: &str,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let (mut r, base) = fetch(&*s.store, caller, t.kind, id).await?;
    let mut f = Fields::parse(body)?;
    check_owner_unchanged(&mut f, &r.account_id);
    let mut doc = validate(t, &*s.store, &mut f, Some(&r.account_id), Some(&base)).await?;
    if let Some(w) = with {
        (w.store_rules)(&*s.store, &mut f, &r.account_id, Some(&base), &mut doc).await?;
    }
    f.finish()?;
    let now = now_timestamp();
    doc["updated_at"] = json!(now);
    let password = take_password(&mut doc);
    r.name = doc["connection_name"].as_str().unwrap_or_default().to_owned();
    r.body = doc.to_string();
    r.updated_at = now;
    if !write_connection(t, &*s.store, &r, &doc, Some(&base)).await.map_err(|e| unique_error(e, t.unique_pointers))? {
        // Deleted meanwhile, or its new outbound voice profile was.
        return Err(match s.store.get_resource(t.kind, id).await? {
            None => ApiError::not_found(),
            Some(_) => profile_gone(),
        });
    }
    let mut shown = present(doc, &r.account_id, caller);
    if let Some(p) = password {
        shown["password"] = p;
    }
    Ok(Json(json!({ "data": shown })))
}

/// Stores a connection document (`r`, its body `doc`): inserted when `base` is `None`, else
/// updated, with the type's unique claims. An outbound voice profile set or changed (compared
/// with `base`) is locked while it is written, so a concurrent delete of that profile either
/// counts this connection or makes this write fail: `Ok(false)` when the profile is gone (or,
/// on update, the connection is). An unchanged one needs no lock: a profile in use is never
/// deleted.
async fn write_connection(
    t: &ConnectionType,
    store: &dyn Repository,
    r: &Resource,
    doc: &Value,
    base: Option<&Value>,
) -> Result<bool, StoreError> {
    let unique = (t.unique)(doc);
    let unique: Vec<(&str, &str)> = unique.iter().map(|(s, v)| (*s, v.as_str())).collect();
    let profile = profile_of(doc).filter(|p| base.is_none_or(|b| profile_of(b) != Some(p)));
    let refs: Vec<(&str, &str)> = profile.map(|p| (PROFILE_KIND, p)).into_iter().collect();
    match base {
        None => store.insert_resource_referencing(r, &unique, &refs).await,
        Some(_) => store.update_resource_referencing(r, &unique, &refs).await,
    }
}

/// Every DELETE: the connection, then its `children` (see [`ConnectionTypeWithStore`]), then
/// its phone numbers are detached. The connection goes first, so a child created or a number
/// attached meanwhile is either found here or, checking its parent when it is stored, finds it
/// gone.
async fn remove_connection(
    t: &ConnectionType,
    children: &[(&str, &str)],
    s: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<Json<Value>, ApiError> {
    let (r, doc) = fetch(&*s.store, caller, t.kind, id).await?;
    if !s.store.delete_resource(t.kind, id).await? {
        return Err(ApiError::not_found());
    }
    delete_children(&*s.store, &r.account_id, id, children).await?;
    crate::phone_numbers::detach_connection(&*s.store, &r.account_id, id).await?;
    Ok(Json(json!({ "data": present(doc, &r.account_id, caller) })))
}

// ---------------------------------------------------------------------------------------------
// Outbound voice profiles in use: connections of every type name theirs at
// `outbound.outbound_voice_profile_id` (of their own account, see
// [`check_outbound_voice_profile`]). A profile shows how many do (`connections_count`), and
// cannot be deleted while any does.

/// The kind outbound voice profiles are stored as.
pub const PROFILE_KIND: &str = "outbound_voice_profile";
/// Where a connection's document names its outbound voice profile.
pub const PROFILE_PATH: &[&str] = &["outbound", "outbound_voice_profile_id"];
const NO_SUCH_PROFILE: &str = "No outbound voice profile of this account has this id.";

fn profile_of(doc: &Value) -> Option<&str> {
    doc["outbound"]["outbound_voice_profile_id"].as_str()
}

/// The fault of a connection whose outbound voice profile was deleted while it was written.
fn profile_gone() -> ApiError {
    ApiError::invalid(vec![ErrorObject::invalid_value("/outbound/outbound_voice_profile_id", NO_SUCH_PROFILE)])
}

/// How many connections of `account_id`, of any type, use outbound voice profile `profile_id`.
pub async fn connections_using_profile(
    store: &dyn Repository,
    account_id: &str,
    profile_id: &str,
) -> Result<u64, ApiError> {
    Ok(connections_per_profile(store, Some(account_id)).await?.get(profile_id).copied().unwrap_or(0))
}

/// For every outbound voice profile in use (of `account_id`, or of every account): how many
/// connections use it.
pub async fn connections_per_profile(
    store: &dyn Repository,
    account_id: Option<&str>,
) -> Result<std::collections::HashMap<String, u64>, ApiError> {
    Ok(store.reference_counts(crate::connections::KINDS, PROFILE_PATH, account_id).await?)
}

/// Deletes outbound voice profile `profile_id` unless a connection uses it, in one
/// transaction with the count. `Ok(false)` when it does not exist; 422 naming how many
/// connections use it, and nothing deleted, when any does.
pub async fn delete_profile_unless_used(store: &dyn Repository, profile_id: &str) -> Result<bool, ApiError> {
    match store.delete_resource_unreferenced(PROFILE_KIND, profile_id, crate::connections::KINDS, PROFILE_PATH).await? {
        Ok(deleted) => Ok(deleted),
        Err(n) => {
            let (count, verb) =
                if n == 1 { ("1 connection".to_owned(), "uses") } else { (format!("{n} connections"), "use") };
            Err(ApiError::invalid(vec![ErrorObject {
                code: "10015",
                title: "Outbound voice profile in use".into(),
                detail: format!(
                    "{count} {verb} this outbound voice profile; point them at another profile \
                     (outbound.outbound_voice_profile_id) or delete them first."
                ),
                pointer: None,
            }]))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SIP credentials.

/// The unique scope of SIP user names: one per platform, across accounts and across every
/// connection type that authenticates by user name, claimed in lowercase so names differing
/// only in case collide.
pub const SIP_USER_NAME_SCOPE: &str = "sip_user_name";

/// The claim of a document's `user_name` in [`SIP_USER_NAME_SCOPE`] (none without one).
pub fn sip_user_name_claims(doc: &Value) -> Vec<(&'static str, String)> {
    doc["user_name"].as_str().map(|u| (SIP_USER_NAME_SCOPE, u.to_ascii_lowercase())).into_iter().collect()
}

/// Stores the SIP digest of the document's `user_name` and `password` in the private field
/// `_digest` (`{"realm", "ha1_md5", "ha1_sha256"}`), which the API never shows; the registrar
/// answers digest challenges from it.
pub fn set_sip_digest(f: &mut Fields, doc: &mut Value) {
    let user = doc["user_name"].as_str().map(str::to_owned);
    match (user, doc["password"].as_str()) {
        (Some(user), Some(password)) => doc["_digest"] = digest::credentials(&user, digest::REALM, password),
        // The digest is made of user name and password, and only the digest is kept: a new
        // user name needs the password again.
        // (On create there is no digest yet, and a password that was given but refused is
        // already a fault of its own.)
        (Some(user), None)
            if doc["_digest"].is_object()
                && doc["_digest"]["user_name"].as_str() != Some(user.as_str())
                && !f.errors.iter().any(|e| e.pointer.as_deref() == Some("/password")) =>
        {
            f.errors
                .push(crate::ErrorObject::invalid_value("/password", "The password is required to change user_name."));
        }
        _ => {}
    }
}

/// Takes the plain password out of a document before it is stored: only the digest is kept
/// (`_digest`). Returns it so the response to the request that set it can still show it, as
/// the contract's `CredentialConnection` does.
pub fn take_password(doc: &mut Value) -> Option<Value> {
    doc.as_object_mut().and_then(|o| o.remove("password"))
}

/// The contract's `Registration Status` for a connection nothing has registered for: status
/// `Not Registered`, no contact details. The registrar will report real registrations.
pub fn not_registered(sip_username: &str) -> Value {
    json!({
        "record_type": "registration_status",
        "sip_username": sip_username,
        "status": "Not Registered",
    })
}

/// SIP digest HA1 values (RFC 2617 MD5, RFC 7616 SHA-256) of `user:realm:password`.
pub mod digest {
    use serde_json::{Value, json};

    /// The realm opentrunk challenges with. A constant for now; it will become a platform
    /// setting, and each stored digest records the realm it was made for.
    pub const REALM: &str = "sip.opentrunk.local";

    /// `{"user_name", "realm", "ha1_md5", "ha1_sha256"}` for `user` in `realm` with `password`.
    pub fn credentials(user: &str, realm: &str, password: &str) -> Value {
        let a1 = format!("{user}:{realm}:{password}");
        json!({ "user_name": user, "realm": realm, "ha1_md5": md5_hex(a1.as_bytes()), "ha1_sha256": sha256_hex(&a1) })
    }

    /// SHA-256 in lowercase hex (the store's hash, which is exactly that).
    pub fn sha256_hex(data: &str) -> String {
        store::hash_api_key(data)
    }

    /// MD5 (RFC 1321) in lowercase hex. Only for SIP digest, which is defined with it.
    pub fn md5_hex(data: &[u8]) -> String {
        use md5::Digest;
        md5::Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Connection types with rules against the store and resources of their own (first used by IP
// connections: `inbound.default_*_ip_id` must name an IP of the connection, the platform gives
// the tech prefix, and deleting the connection deletes its IPs).

/// The future a [`StoreRules`] function returns.
pub type StoreCheck<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ApiError>> + Send + 'a>>;

/// A connection type's rules that need the store: called with the store, the request's fields,
/// the owning account, the stored document (`None` on create) and the document as it would be
/// stored, after [`connection_rules`], the type's `rules` and the outbound voice profile check,
/// before anything is written. Faults go to `f.errors`; it may set derived fields in the
/// document. Not called on create when the owner is unknown (that is a fault already).
pub type StoreRules =
    for<'a> fn(&'a dyn Repository, &'a mut Fields, &'a str, Option<&'a Value>, &'a mut Value) -> StoreCheck<'a>;

/// A [`ConnectionType`] with [`StoreRules`] and the resources it owns: `children` lists
/// `(kind, field)`, the resources of the connection's account whose document's `field` holds
/// the connection's id (e.g. `("ip", "connection_id")`), deleted with the connection.
/// `reassign` names a unique value the platform gives on create, if any.
pub struct ConnectionTypeWithStore {
    pub connection: &'static ConnectionType,
    pub store_rules: StoreRules,
    pub children: &'static [(&'static str, &'static str)],
    pub reassign: Option<Reassign>,
}

/// A unique value the platform gives a new connection (not one the client chooses), such as
/// an IP connection's tech prefix. The store rules put one in the document; when the insert's
/// claim of it in `scope` conflicts (another connection holds it, or took it meanwhile),
/// `pick` puts another in the document and the insert is tried again, a few times at most.
#[derive(Clone, Copy)]
pub struct Reassign {
    pub scope: &'static str,
    pub pick: for<'a> fn(&'a dyn Repository, &'a mut Value) -> StoreCheck<'a>,
}

impl ConnectionTypeWithStore {
    /// The list, create, show, update and delete routes at `path`, like [`routes`], with the
    /// store rules on create and update and the children deleted with the connection.
    pub fn routes(&'static self, path: &str) -> Router<ApiState> {
        let t = self;
        let kind = t.connection.kind;
        Router::new()
            .route(
                path,
                get(move |State(s): State<ApiState>, caller: Caller, RawQuery(q): RawQuery| async move {
                    list_connections(&*s.store, &caller, &[kind], q.as_deref()).await.map(Json)
                })
                .post(move |State(s): State<ApiState>, caller: Caller, body: Bytes| async move {
                    t.create(&s, &caller, &body).await
                }),
            )
            .route(
                &format!("{path}/{{id}}"),
                get(move |State(s): State<ApiState>, caller: Caller, Path(id): Path<String>| async move {
                    show(t.connection, &s, &caller, &id).await
                })
                .patch(
                    move |State(s): State<ApiState>, caller: Caller, Path(id): Path<String>, body: Bytes| async move {
                        t.update(&s, &caller, &id, &body).await
                    },
                )
                .delete(
                    move |State(s): State<ApiState>, caller: Caller, Path(id): Path<String>| async move {
                        t.remove(&s, &caller, &id).await
                    },
                ),
            )
    }

    /// Create: 201 with the new connection, as [`create`] with the store rules.
    pub async fn create(
        &self,
        s: &ApiState,
        caller: &Caller,
        body: &[u8],
    ) -> Result<(StatusCode, Json<Value>), ApiError> {
        create_connection(self.connection, Some(self), s, caller, body).await
    }

    /// PATCH, as [`update`] with the store rules.
    pub async fn update(&self, s: &ApiState, caller: &Caller, id: &str, body: &[u8]) -> Result<Json<Value>, ApiError> {
        update_connection(self.connection, Some(self), s, caller, id, body).await
    }

    /// DELETE: 200 with the deleted connection; then its children are deleted and its phone
    /// numbers detached.
    pub async fn remove(&self, s: &ApiState, caller: &Caller, id: &str) -> Result<Json<Value>, ApiError> {
        remove_connection(self.connection, self.children, s, caller, id).await
    }
}

/// Sets the `inbound` fields among `fields` of connection `connection_id` (of type `t`) that
/// name `id` back to null: the resource they named (an IP connection's IP, an FQDN
/// connection's FQDN record) was deleted or moved to another connection. The connection's
/// `updated_at` changes with them; nothing happens when no field names `id` or the connection
/// is gone. Both types store null, as a PATCH with null does; a response shows it where the
/// contract types the field as nullable and leaves it out where it does not
/// ([`UNSET_IN_RESPONSES`]).
pub async fn forget_default_reference(
    store: &dyn Repository,
    t: &ConnectionType,
    connection_id: &str,
    fields: &[&str],
    id: &str,
) -> Result<(), ApiError> {
    let Some(mut r) = store.get_resource(t.kind, connection_id).await? else { return Ok(()) };
    let Ok(mut doc) = serde_json::from_str::<Value>(&r.body) else { return Ok(()) };
    let Some(inbound) = doc["inbound"].as_object_mut() else { return Ok(()) };
    let mut changed = false;
    for field in fields {
        if let Some(v) = inbound.get_mut(*field).filter(|v| v.as_str() == Some(id)) {
            *v = Value::Null;
            changed = true;
        }
    }
    if !changed {
        return Ok(());
    }
    let now = now_timestamp();
    doc["updated_at"] = json!(now);
    r.body = doc.to_string();
    r.updated_at = now;
    let unique = (t.unique)(&doc);
    let unique: Vec<(&str, &str)> = unique.iter().map(|(s, v)| (*s, v.as_str())).collect();
    store.update_resource(&r, &unique).await?;
    Ok(())
}

/// Deletes the resources of `account_id` of each `(kind, field)` whose document's `field` is
/// `parent_id`.
pub async fn delete_children(
    store: &dyn Repository,
    account_id: &str,
    parent_id: &str,
    children: &[(&str, &str)],
) -> Result<(), ApiError> {
    for (kind, field) in children {
        for child in store.list_resources(kind, Some(account_id)).await? {
            let belongs =
                serde_json::from_str::<Value>(&child.body).is_ok_and(|d| d[*field].as_str() == Some(parent_id));
            if belongs {
                store.delete_resource(kind, &child.id).await?;
            }
        }
    }
    Ok(())
}

/// The unique scope of SIP subdomains (`inbound.sip_subdomain` of IP and FQDN connections):
/// one per platform, across accounts and connection types, claimed in lowercase (DNS names
/// ignore case).
pub const SIP_SUBDOMAIN_SCOPE: &str = "sip_subdomain";

/// The claim of a document's `inbound.sip_subdomain` in [`SIP_SUBDOMAIN_SCOPE`] (none without
/// one).
pub fn sip_subdomain_claims(doc: &Value) -> Vec<(&'static str, String)> {
    doc["inbound"]["sip_subdomain"]
        .as_str()
        .map(|d| (SIP_SUBDOMAIN_SCOPE, d.to_ascii_lowercase()))
        .into_iter()
        .collect()
}

/// The unique scope of tech prefixes (`outbound.tech_prefix` of IP and FQDN connections): one
/// per platform, across accounts and both types. The platform gives IP connections theirs
/// (see [`crate::ip_connections`]); FQDN connections choose theirs. Per source IP address,
/// `/v2/ips` claims each connection's prefix again ([`crate::ips::SCOPE`]).
pub const TECH_PREFIX_SCOPE: &str = "tech_prefix";

/// The claim of a document's `outbound.tech_prefix` in [`TECH_PREFIX_SCOPE`] (none without
/// one).
pub fn tech_prefix_claims(doc: &Value) -> Vec<(&'static str, String)> {
    doc["outbound"]["tech_prefix"].as_str().map(|p| (TECH_PREFIX_SCOPE, p.to_owned())).into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Optional SIP credentials, and lists whose `filter[fqdn]` looks at FQDN records (first used by
// FQDN and UAC connections and `/v2/connections`).

/// For types whose `user_name` and `password` are optional (FQDN and UAC connections): the
/// digest as [`set_sip_digest`] keeps it, and the two go together: a `password` without a
/// `user_name` is a fault at `/user_name`, a `user_name` without a digest (none stored, none
/// made by this request) a fault at `/password`; a `user_name` set to null removes the digest
/// with it (its unique claim goes too).
pub fn set_optional_sip_digest(f: &mut Fields, doc: &mut Value) {
    set_sip_digest(f, doc);
    let faulted = |f: &Fields, pointer: &str| f.errors.iter().any(|e| e.pointer.as_deref() == Some(pointer));
    if doc["user_name"].is_string() {
        if !doc["_digest"].is_object() && !faulted(f, "/password") {
            f.errors.push(ErrorObject::invalid_value("/password", "A password is required with user_name."));
        }
    } else {
        if doc["password"].is_string() && !faulted(f, "/user_name") {
            f.errors.push(ErrorObject::invalid_value("/user_name", "A user_name is required with password."));
        }
        if let Some(o) = doc.as_object_mut() {
            o.remove("_digest");
        }
    }
}

/// The kind `/v2/fqdns` records are stored as; each names its FQDN connection in
/// `connection_id` and is owned by that connection's account.
pub const FQDN_RECORD_KIND: &str = "fqdn";

/// [`list_connections`], except that `filter[fqdn]` also matches a connection that has an FQDN
/// record (`/v2/fqdns`) whose `fqdn` equals the value (besides a connection whose own `fqdn`
/// does). Matching is case-sensitive and on the full string, as the contract says. Used by
/// `/v2/fqdn_connections` and `/v2/connections`; the same query parameters and errors.
pub async fn list_connections_with_fqdn_records(
    store: &dyn Repository,
    caller: &Caller,
    kinds: &[&str],
    raw_query: Option<&str>,
) -> Result<Value, ApiError> {
    list_connections_matching(store, caller, kinds, raw_query, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_rfc1321_vectors() {
        for (input, hex) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            assert_eq!(digest::md5_hex(input.as_bytes()), hex, "{input:?}");
        }
    }

    #[test]
    fn ha1_both_variants() {
        let d = digest::credentials("myusername123", digest::REALM, "my123secure456password789");
        assert_eq!(
            d,
            json!({
                "user_name": "myusername123",
                "realm": "sip.opentrunk.local",
                "ha1_md5": "b046f88fafa33d8bbbb99323db59792b",
                "ha1_sha256": "b453a5d8c98b27a3e6d81c0f7980421062006ff6d194d302a1c85b2dcc9d48bf",
            })
        );
    }

    #[test]
    fn validators() {
        for ok in ["myusername123", "abcd", "1234a", "A1B2", "x".repeat(32).as_str()] {
            assert!(is_sip_user_name(ok), "{ok}");
        }
        for bad in ["abc", "12345abc", "user_name", "user name", "üser", "", "x".repeat(33).as_str()] {
            assert!(!is_sip_user_name(bad), "{bad}");
        }
        for ok in ["", "https://example.com", "http://10.0.0.1:8080/hook?x=1", "HTTPS://EXAMPLE.COM", "https://[::1]/"]
        {
            assert!(is_webhook_url_or_blank(ok), "{ok}");
        }
        for bad in
            ["example.com", "ftp://example.com", "https://", "https:///path", "https://exa mple.com", "https://:80"]
        {
            assert!(!is_webhook_url_or_blank(bad), "{bad}");
        }
        assert!(is_dns_label("acme-1") && !is_dns_label("-acme") && !is_dns_label("a.b") && !is_dns_label(""));
        assert!(is_uuid("06b09dfd-7154-4980-8b75-cebf7a9d4f8e") && !is_uuid("06b09dfd71544980"));
        assert!(is_country_or_blank("") && is_country_or_blank("GB") && !is_country_or_blank("gb"));
    }

    #[test]
    fn later_specs_override_earlier_ones() {
        const A: &[Spec] = &[Spec::bool("x", false), Spec::int("n", 0, 9, Some(1))];
        const B: &[Spec] = &[Spec::bool("x", true), Spec::one_of("e", &["a"], None)];
        assert_eq!(defaults(&[A, B]), json!({"x": true, "n": 1}));
        let mut f = Fields::parse(br#"{"x": null, "n": 10, "e": "b"}"#).unwrap();
        let mut doc = json!({"x": false, "n": 3, "e": "a"});
        apply(&mut f, &[A, B], &mut doc, false);
        let faults: Vec<_> = f.errors.iter().map(|e| (e.code, e.pointer.clone().unwrap())).collect();
        assert_eq!(faults, [("10015", "/n".to_owned()), ("10032", "/e".to_owned())]);
        assert_eq!(doc["x"], json!(true), "null resets to the default");
    }

    #[test]
    fn shared_defaults() {
        let d = defaults(&[CONNECTION]);
        assert_eq!(
            d["jitter_buffer"],
            json!({"enable_jitter_buffer": false, "jitterbuffer_msec_max": 200, "jitterbuffer_msec_min": 60})
        );
        assert_eq!(d["rtcp_settings"], json!({"capture_enabled": false, "port": "rtp+1", "report_frequency_secs": 5}));
        assert_eq!(d["noise_suppression_details"], json!({"engine": "denoiser"}));
        assert!(d.get("connection_name").is_none() && d.get("noise_suppression").is_none());
        assert_eq!(default_attenuation_limit("krisp_viva_ss"), 80);
    }

    #[test]
    fn unset_fields_are_left_out_and_set_ones_kept() {
        let mut doc = json!({
            "webhook_event_failover_url": "",
            "webhook_event_url": null,
            "inbound": {"channel_limit": null, "codecs": []},
            "outbound": {"channel_limit": 0, "ip_authentication_token": null, "localization": "GB"}
        });
        omit_unset(&mut doc, UNSET_IN_RESPONSES);
        assert_eq!(
            doc,
            json!({
                "webhook_event_url": null,
                "inbound": {"codecs": []},
                "outbound": {"channel_limit": 0, "localization": "GB"}
            }),
            "only the listed fields, and only when null or empty"
        );
        let mut doc = json!({"webhook_event_failover_url": "https://failover.example.com", "outbound": null});
        omit_unset(&mut doc, UNSET_IN_RESPONSES);
        assert_eq!(doc, json!({"webhook_event_failover_url": "https://failover.example.com", "outbound": null}));
        // An IP connection's default IPs are plain strings in the contract: null is left out.
        // An FQDN connection's default FQDNs are nullable there: null is shown.
        let mut doc = json!({"inbound": {
            "default_primary_ip_id": null,
            "default_secondary_ip_id": "1",
            "default_primary_fqdn_id": null
        }});
        omit_unset(&mut doc, UNSET_IN_RESPONSES);
        assert_eq!(doc, json!({"inbound": {"default_secondary_ip_id": "1", "default_primary_fqdn_id": null}}));
        // An empty string the user set is a value, except where a URI is required.
        let mut doc = json!({"outbound": {"localization": ""}});
        omit_unset(&mut doc, UNSET_IN_RESPONSES);
        assert_eq!(doc, json!({"outbound": {"localization": ""}}));
    }
}
