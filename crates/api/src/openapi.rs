//! `GET /v2/openapi.json`: the API's own OpenAPI document, served without authentication.
//!
//! It is the public contract cut down to the paths and operations opentrunk implements
//! (`crates/api/openapi/contract.json`, derived from the contract by `scripts/derive-openapi`
//! and embedded in the binary, so it serves without `../shared`), with the operator's own
//! resources merged in: accounts, carriers, phone numbers, rate decks, the webhook public key and
//! call detail records, tagged [`OPERATOR_TAG`], under the same Bearer security scheme. The
//! document is built once, on the first request, and served as the same JSON text after that.
//!
//! The operator part is built with utoipa's builder API ([`operator_extensions`]). The
//! contract part is kept as JSON and merged at the JSON level: utoipa's typed model cannot
//! read the contract (its parameters omit `required`, which utoipa's `Parameter` demands) and
//! would drop what it does not model, while the served contract must stay exactly the
//! contract, field for field (clients and schemathesis validate responses against it).

use std::sync::LazyLock;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, RefOr, Required,
    ResponseBuilder,
};

use crate::ApiState;

/// The derived contract document (see `scripts/derive-openapi`).
pub const CONTRACT_JSON: &str = include_str!("../openapi/contract.json");

/// The tag on every operator extension operation (not in the public contract).
pub const OPERATOR_TAG: &str = "Operator";

/// The security scheme name the contract uses (`Authorization: Bearer <key>`).
const BEARER: &str = "bearerAuth";

static DOCUMENT: LazyLock<String> = LazyLock::new(|| document().to_string());

/// The route: `GET /openapi.json` (under `/v2`).
pub fn routes() -> Router<ApiState> {
    Router::new().route("/openapi.json", get(serve))
}

async fn serve() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

/// The whole document: the embedded contract with the operator extensions merged in (what
/// the contract has wins; the operator part only adds paths, components and tags).
pub fn document() -> Value {
    let mut doc: Value = serde_json::from_str(CONTRACT_JSON).expect("crates/api/openapi/contract.json is JSON");
    let ext = serde_json::to_value(operator_extensions()).expect("the operator extensions serialize");
    merge_absent(&mut doc["paths"], &ext["paths"]);
    if let Some(kinds) = ext["components"].as_object() {
        for (kind, entries) in kinds {
            let target = &mut doc["components"][kind];
            if target.is_null() {
                *target = json!({});
            }
            merge_absent(target, entries);
        }
    }
    if let (Some(tags), Some(more)) = (doc["tags"].as_array_mut(), ext["tags"].as_array()) {
        tags.extend(more.iter().cloned());
    }
    doc
}

/// Adds `from`'s keys missing in `into` (both objects).
fn merge_absent(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in from {
            into.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

// ----- schema helpers -----

fn typed(t: Type, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(t).description(Some(description)).into()
}

fn nullable(t: Type, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(SchemaType::Array(vec![t, Type::Null])).description(Some(description)).into()
}

fn enumerated(values: &[&str], description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .into()
}

fn array_of(items: RefOr<Schema>, description: &str) -> RefOr<Schema> {
    ArrayBuilder::new().items(items).description(Some(description)).into()
}

/// A free-form object (other keys allowed) with the given documented properties.
fn object(description: &str, props: Vec<(&str, RefOr<Schema>)>, required: &[&str]) -> RefOr<Schema> {
    let mut b = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(true)));
    for (name, schema) in props {
        b = b.property(name, schema);
    }
    for r in required {
        b = b.required(*r);
    }
    b.into()
}

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name(name))
}

/// `{"data": <schema>}`.
fn data_of(schema: RefOr<Schema>) -> RefOr<Schema> {
    object("", vec![("data", schema)], &["data"])
}

/// `{"data": [<schema>], "meta": {...}}`.
fn list_of(schema: RefOr<Schema>) -> RefOr<Schema> {
    object(
        "",
        vec![
            ("data", array_of(schema, "")),
            (
                "meta",
                object(
                    "Paging.",
                    vec![
                        ("page_number", typed(Type::Integer, "")),
                        ("page_size", typed(Type::Integer, "")),
                        ("total_pages", typed(Type::Integer, "")),
                        ("total_results", typed(Type::Integer, "")),
                    ],
                    &[],
                ),
            ),
        ],
        &["data"],
    )
}

fn timestamps(mut props: Vec<(&'static str, RefOr<Schema>)>) -> Vec<(&'static str, RefOr<Schema>)> {
    props.insert(0, ("id", typed(Type::String, "The resource id.")));
    props.push(("created_at", typed(Type::String, "ISO 8601 creation time.")));
    props.push(("updated_at", typed(Type::String, "ISO 8601 time of the last change.")));
    props
}

// ----- operator resources -----

fn account_fields() -> Vec<(&'static str, RefOr<Schema>)> {
    vec![
        ("name", typed(Type::String, "1 to 255 characters; required on create.")),
        (
            "concurrent_call_limit",
            typed(Type::Integer, "Account-wide concurrent call limit, 0 to 1000000 (default 10)."),
        ),
        ("verification_level", typed(Type::String, "The account's verification level (default `level_2`).")),
        ("rate_deck_id", nullable(Type::String, "The rate deck that prices the account's calls.")),
        ("enabled", typed(Type::Boolean, "Whether the account is enabled (default true).")),
    ]
}

fn carrier_fields() -> Vec<(&'static str, RefOr<Schema>)> {
    let gateway = object(
        "A gateway of the carrier.",
        vec![
            ("host", typed(Type::String, "Hostname or IPv4/IPv6 literal.")),
            ("port", typed(Type::Integer, "1 to 65535; default 5060 (5061 for TLS).")),
            ("transport", enumerated(&["UDP", "TCP", "TLS"], "Default UDP.")),
            ("priority", typed(Type::Integer, "0 to 65535, lowest tried first; default 1.")),
            ("weight", typed(Type::Integer, "1 to 65535; default 1.")),
        ],
        &["host"],
    );
    vec![
        ("name", typed(Type::String, "1 to 255 characters; required on create.")),
        ("gateways", array_of(gateway, "1 to 64 gateways; a PATCH replaces the whole list.")),
        ("routing", enumerated(&["sequential", "round-robin"], "How calls spread over the gateways.")),
        ("priority", typed(Type::Integer, "0 to 65535, default 1: carriers are tried lowest first.")),
        ("prefixes", array_of(typed(Type::String, "1 to 15 digits."), "Destination prefixes; empty means all.")),
        ("inbound_ips", array_of(typed(Type::String, "IPv4/IPv6 address or CIDR block."), "Origination sources.")),
        ("username", nullable(Type::String, "Digest username toward the carrier (a pair with `password`).")),
        ("password", nullable(Type::String, "Digest password; write only, never returned.")),
        ("tech_prefix", nullable(Type::String, "1 to 10 digits put before the destination.")),
        ("enabled", typed(Type::Boolean, "Default true.")),
    ]
}

fn phone_number_fields() -> Vec<(&'static str, RefOr<Schema>)> {
    vec![
        ("phone_number", typed(Type::String, "E.164; required on create, unique on the platform.")),
        ("account_id", typed(Type::String, "The owning account; required on create (operator only).")),
        ("connection_id", nullable(Type::String, "A connection of the number's account; null detaches.")),
        ("tags", array_of(typed(Type::String, ""), "Tags.")),
        ("customer_reference", nullable(Type::String, "Customer reference.")),
    ]
}

fn rate_fields() -> Vec<(&'static str, RefOr<Schema>)> {
    vec![
        ("prefix", typed(Type::String, "1 to 15 digits, unique within the deck.")),
        ("rate", typed(Type::String, "Per-minute rate as a decimal string (`0.0100`).")),
    ]
}

fn rate_deck_fields() -> Vec<(&'static str, RefOr<Schema>)> {
    vec![
        ("name", typed(Type::String, "1 to 255 characters, unique regardless of case.")),
        ("billing_increment", typed(Type::String, "`initial/subsequent` seconds, each 1 to 3600 (default `60/60`).")),
    ]
}

fn with_record_type(
    kind: &'static str,
    mut props: Vec<(&'static str, RefOr<Schema>)>,
) -> Vec<(&'static str, RefOr<Schema>)> {
    props.insert(0, ("record_type", enumerated(&[kind], "")));
    props
}

fn operator_schemas() -> Vec<(&'static str, RefOr<Schema>)> {
    let mut account = with_record_type("account", timestamps(account_fields()));
    account.push(("api_key", typed(Type::String, "The account's first API key, only in the create response.")));
    let mut number = with_record_type("phone_number", timestamps(phone_number_fields()));
    number.extend([
        ("status", typed(Type::String, "`active`.")),
        ("connection_name", nullable(Type::String, "The name of its connection.")),
        ("purchased_at", typed(Type::String, "When the operator added it.")),
        ("call_forwarding_enabled", typed(Type::Boolean, "Voice settings summary.")),
        ("call_recording_enabled", typed(Type::Boolean, "Voice settings summary.")),
        ("cnam_listing_enabled", typed(Type::Boolean, "Voice settings summary.")),
        ("caller_id_name_enabled", typed(Type::Boolean, "Voice settings summary.")),
        ("t38_fax_gateway_enabled", typed(Type::Boolean, "Voice settings summary.")),
        ("emergency_enabled", typed(Type::Boolean, "Voice settings summary.")),
    ]);
    let error = object(
        "One error.",
        vec![
            ("code", typed(Type::String, "")),
            ("title", typed(Type::String, "")),
            ("detail", typed(Type::String, "")),
            ("source", object("", vec![("pointer", typed(Type::String, "JSON pointer of the field at fault."))], &[])),
        ],
        &[],
    );
    let mut deck = rate_deck_fields();
    deck.push(("rates", array_of(reference("OperatorRate"), "The rates (on create).")));
    vec![
        ("OperatorAccount", object("An account (tenant).", account, &[])),
        ("OperatorAccountRequest", object("Account fields to set.", account_fields(), &[])),
        (
            "OperatorCarrier",
            object("An upstream carrier.", with_record_type("carrier", timestamps(carrier_fields())), &[]),
        ),
        ("OperatorCarrierRequest", object("Carrier fields to set.", carrier_fields(), &[])),
        ("OperatorPhoneNumber", object("A phone number assigned to an account.", number, &[])),
        ("OperatorPhoneNumberRequest", object("Phone number fields to set.", phone_number_fields(), &[])),
        (
            "OperatorRate",
            object("A rate of a deck.", with_record_type("rate_deck_rate", rate_fields()), &["prefix", "rate"]),
        ),
        (
            "OperatorRateDeck",
            object("A rate deck.", with_record_type("rate_deck", timestamps(rate_deck_fields())), &[]),
        ),
        ("OperatorRateDeckRequest", object("Rate deck fields (JSON; CSV uploads also accepted).", deck, &[])),
        ("OperatorErrors", object("The contract's error body.", vec![("errors", array_of(error, ""))], &["errors"])),
        (
            "OperatorPublicKey",
            object(
                "The public half of the operator's webhook signing key.",
                vec![(
                    "public_key",
                    typed(
                        Type::String,
                        "Standard base64 of the 32-byte Ed25519 public key. It verifies each webhook's \
                         `telnyx-signature-ed25519` header: the signature of `{telnyx-timestamp}|{raw body}`.",
                    ),
                )],
                &["public_key"],
            ),
        ),
        ("OperatorDetailRecord", object("A call detail record (CDR).", detail_record_fields(), &[])),
        (
            "OperatorRatesRequest",
            object("All the rates of a deck.", vec![("rates", array_of(reference("OperatorRate"), ""))], &["rates"]),
        ),
    ]
}

struct Op {
    method: HttpMethod,
    id: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    /// Status and schema (`{"data": <ref>}`, or a list of `<ref>` when `list`).
    status: &'static str,
    response: &'static str,
    list: bool,
}

fn op(method: HttpMethod, id: &'static str, summary: &'static str, status: &'static str, response: &'static str) -> Op {
    Op { method, id, summary, request: None, status, response, list: false }
}

fn build_op(path_params: &[&str], o: Op) -> utoipa::openapi::path::Operation {
    let json_body = |schema: RefOr<Schema>| ContentBuilder::new().schema(Some(schema)).build();
    let error = || {
        ResponseBuilder::new()
            .description("An error, in the contract's error body.")
            .content("application/json", json_body(reference("OperatorErrors")))
    };
    let body = if o.list { list_of(reference(o.response)) } else { data_of(reference(o.response)) };
    let mut b = OperationBuilder::new()
        .tag(OPERATOR_TAG)
        .operation_id(Some(o.id))
        .summary(Some(o.summary))
        .security(SecurityRequirement::new(BEARER, Vec::<String>::new()))
        .response(o.status, ResponseBuilder::new().description(o.summary).content("application/json", json_body(body)))
        .response("401", error())
        .response("403", error())
        .response("422", error());
    for p in path_params {
        b = b.parameter(
            ParameterBuilder::new()
                .name(*p)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(typed(Type::String, "The resource id."))),
        );
        b = b.response("404", error());
    }
    if o.list {
        for (name, d) in [
            ("page[number]", "Page number, from 1."),
            ("page[size]", "Page size, 1 to 250 (default 20)."),
            ("sort", "Sort field, `-` for descending."),
        ] {
            b = b.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Query)
                    .required(Required::False)
                    .schema(Some(typed(if name == "sort" { Type::String } else { Type::Integer }, d))),
            );
        }
    }
    if let Some(req) = o.request {
        b = b.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content("application/json", json_body(reference(req)))
                .build(),
        ));
    }
    b.build()
}

fn path_item(path_params: &[&str], ops: Vec<Op>) -> PathItem {
    let mut item = PathItem::default();
    for o in ops {
        let method = o.method.clone();
        let operation = build_op(path_params, o);
        match method {
            HttpMethod::Get => item.get = Some(operation),
            HttpMethod::Post => item.post = Some(operation),
            HttpMethod::Put => item.put = Some(operation),
            HttpMethod::Patch => item.patch = Some(operation),
            HttpMethod::Delete => item.delete = Some(operation),
            _ => unreachable!("no other methods here"),
        }
    }
    item
}

/// The CRUD pair for a resource: `/{name}` (list, create) and `/{name}/{id}` (show, update,
/// delete).
fn crud(
    paths: PathsBuilder,
    name: &str,
    what: &'static str,
    schema: &'static str,
    request: &'static str,
    ids: [&'static str; 5],
) -> PathsBuilder {
    use HttpMethod::*;
    let mut list = op(Get, ids[0], "", "200", schema);
    list.list = true;
    list.summary = ids[0];
    let mut create = op(Post, ids[1], "", "201", schema);
    create.request = Some(request);
    let mut update = op(Patch, ids[3], "", "200", schema);
    update.request = Some(request);
    let mut ops_coll = vec![list, create];
    let mut ops_item = vec![op(Get, ids[2], "", "200", schema), update, op(Delete, ids[4], "", "200", schema)];
    for o in ops_coll.iter_mut().chain(ops_item.iter_mut()) {
        o.summary = summary_for(o.id, what);
    }
    paths
        .path(format!("/{name}"), path_item(&[], ops_coll))
        .path(format!("/{name}/{{id}}"), path_item(&["id"], ops_item))
}

fn summary_for(id: &str, what: &'static str) -> &'static str {
    let verb = id.split('_').next().unwrap_or_default();
    let s = match verb {
        "list" => format!("List {what}s (operator extension)."),
        "create" => format!("Create a {what} (operator extension)."),
        "get" => format!("Show a {what} (operator extension)."),
        "update" => format!("Update a {what}: the fields given change (operator extension)."),
        "delete" => format!("Delete a {what}; answers the deleted one (operator extension)."),
        _ => format!("{what} (operator extension)."),
    };
    Box::leak(s.into_boxed_str())
}

fn detail_record_fields() -> Vec<(&'static str, RefOr<Schema>)> {
    let time = |d: &str| typed(Type::String, d);
    let attempt = object(
        "One try of one route: a carrier's gateway.",
        vec![
            ("carrier_id", typed(Type::String, "The carrier.")),
            ("gateway", typed(Type::String, "The gateway's host as configured.")),
            ("port", typed(Type::Integer, "")),
            ("transport", enumerated(&["UDP", "TCP", "TLS"], "")),
            ("target", nullable(Type::String, "The address the INVITE went to; null when the host did not resolve.")),
            ("outcome", enumerated(&["response", "timeout", "transport_error"], "How the try ended.")),
            ("sip_response_code", typed(Type::Integer, "The final response's status, with outcome `response`.")),
            ("started_at", time("")),
            ("ended_at", time("")),
        ],
        &[],
    );
    vec![
        ("record_type", enumerated(&[crate::detail_records::RECORD_TYPE], "")),
        ("id", typed(Type::String, "The record id (a UUID).")),
        ("account_id", typed(Type::String, "The account billed.")),
        ("connection_id", typed(Type::String, "The connection the call came in on or went out to.")),
        ("outbound_voice_profile_id", nullable(Type::String, "The outbound voice profile that applied.")),
        ("direction", enumerated(&["outbound", "inbound"], "")),
        ("a_leg_call_id", typed(Type::String, "SIP Call-ID of the caller's leg.")),
        ("b_leg_call_id", nullable(Type::String, "SIP Call-ID of the leg toward the callee; null when none.")),
        ("from_received", typed(Type::String, "The caller as the caller's leg carried it.")),
        ("to_received", typed(Type::String, "The callee as the caller's leg carried it.")),
        ("from_sent", nullable(Type::String, "The caller as sent on; null when nothing was sent.")),
        ("to_sent", nullable(Type::String, "The callee as sent on; null when nothing was sent.")),
        ("started_at", time("When the INVITE arrived: UTC with milliseconds, `2026-01-02T03:04:05.678Z`.")),
        ("answered_at", nullable(Type::String, "When the call was answered; null when it was not.")),
        ("ended_at", time("When the call ended.")),
        ("call_sec", typed(Type::Integer, "Seconds from answer to end.")),
        ("billed_sec", typed(Type::Integer, "Seconds billed, after the billing increments.")),
        ("rate", nullable(Type::String, "Per-minute rate, a decimal string; null when not rated.")),
        ("cost", nullable(Type::String, "The call's cost, a decimal string; null when not rated.")),
        ("currency", enumerated(&[crate::detail_records::CURRENCY], "")),
        ("sip_response_code", typed(Type::Integer, "The final SIP status the caller got.")),
        ("reason_code", nullable(Type::String, "The product's reason code (`D1`, `PE1`, ...).")),
        ("hangup_source", enumerated(&["caller", "callee", "system"], "Which side ended the call.")),
        ("route_attempts", array_of(attempt, "Every route tried, in order (operator only).")),
        (
            "trace",
            array_of(typed(Type::Object, "A rule: `rule`, `verdict`, `facts`."), "Decision trace (operator only)."),
        ),
    ]
}

/// `GET /detail_records` with its filters, and `GET /detail_records/{id}`.
fn detail_record_paths(paths: PathsBuilder) -> PathsBuilder {
    let mut list = op(
        HttpMethod::Get,
        "list_detail_records",
        "List call detail records, newest first: an account's own, every account's for the operator, who alone \
         sees route attempts and traces (extension).",
        "200",
        "OperatorDetailRecord",
    );
    list.list = true;
    let mut list = build_op(&[], list);
    let query = |name: &str, t: Type, d: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .schema(Some(typed(t, d)))
            .build()
            .into()
    };
    let params = list.parameters.get_or_insert_with(Vec::new);
    params.retain(|p| !matches!(p, RefOr::T(p) if p.name == "sort"));
    params.extend([
        query("filter[record_type]", Type::String, "`sip-trunking` (the default; any other value is refused)."),
        query("filter[date_range]", Type::String, "`today`, `yesterday` (UTC days), `last_7_days` or `last_30_days`."),
        query("filter[started_at][gte]", Type::String, "RFC 3339 date-time: started at or after (inclusive)."),
        query("filter[started_at][lte]", Type::String, "RFC 3339 date-time: started at or before (inclusive)."),
        query("filter[connection_id]", Type::String, "One connection's records."),
        query("filter[sip_response_code]", Type::Integer, "Final SIP status, 100 to 699."),
        query("filter[account_id]", Type::String, "One account's records (the operator)."),
    ]);
    let show = build_op(
        &["id"],
        op(
            HttpMethod::Get,
            "get_detail_record",
            "Show a call detail record; another account's is 404 (extension).",
            "200",
            "OperatorDetailRecord",
        ),
    );
    let (mut items, mut item) = (PathItem::default(), PathItem::default());
    items.get = Some(list);
    item.get = Some(show);
    paths.path("/detail_records", items).path("/detail_records/{id}", item)
}

/// The operator's own resources (not in the public contract), in the contract's style.
pub fn operator_extensions() -> OpenApi {
    use HttpMethod::*;
    let mut paths = PathsBuilder::new();
    paths = crud(
        paths,
        "accounts",
        "account",
        "OperatorAccount",
        "OperatorAccountRequest",
        ["list_accounts", "create_account", "get_account", "update_account", "delete_account"],
    );
    paths = crud(
        paths,
        "carriers",
        "carrier",
        "OperatorCarrier",
        "OperatorCarrierRequest",
        ["list_carriers", "create_carrier", "get_carrier", "update_carrier", "delete_carrier"],
    );
    paths = crud(
        paths,
        "phone_numbers",
        "phone number",
        "OperatorPhoneNumber",
        "OperatorPhoneNumberRequest",
        ["list_phone_numbers", "create_phone_number", "get_phone_number", "update_phone_number", "delete_phone_number"],
    );
    paths = crud(
        paths,
        "rate_decks",
        "rate deck",
        "OperatorRateDeck",
        "OperatorRateDeckRequest",
        ["list_rate_decks", "create_rate_deck", "get_rate_deck", "update_rate_deck", "delete_rate_deck"],
    );
    let mut list_rates = op(
        Get,
        "list_rate_deck_rates",
        "List a rate deck's rates by prefix (operator extension).",
        "200",
        "OperatorRate",
    );
    list_rates.list = true;
    let mut put_rates = op(
        Put,
        "replace_rate_deck_rates",
        "Replace every rate of a deck at once (operator extension).",
        "200",
        "OperatorRateDeck",
    );
    put_rates.request = Some("OperatorRatesRequest");
    paths = paths.path("/rate_decks/{id}/rates", path_item(&["id"], vec![list_rates, put_rates]));
    paths = paths.path(
        "/public_key",
        path_item(
            &[],
            vec![op(
                Get,
                "get_public_key",
                "Show the public key that verifies webhook signatures; any valid API key may read it (operator \
                 extension).",
                "200",
                "OperatorPublicKey",
            )],
        ),
    );

    paths = detail_record_paths(paths);

    let mut components = ComponentsBuilder::new().security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("`Authorization: Bearer <API key>`"))
                .build(),
        ),
    );
    for (name, schema) in operator_schemas() {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .paths(paths)
        .components(Some(components.build()))
        .security(Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]))
        .tags(Some(vec![
            TagBuilder::new()
                .name(OPERATOR_TAG)
                .description(Some(
                    "The operator's own resources (accounts, carriers, phone numbers, rate decks, the webhook public \
                     key) and call detail records: not in the public contract, designed in its style. Only the \
                     operator's key may use most of them.",
                ))
                .build(),
        ]))
        .build()
}

/// The served document, parsed back (for tests and tools).
pub fn document_json() -> Value {
    serde_json::from_str(&DOCUMENT).expect("the served document is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    const CONTRACT_PATHS: &[&str] = &[
        "/connections",
        "/connections/{id}",
        "/connections/{connection_id}/active_calls",
        "/calls/{call_control_id}",
        "/credential_connections",
        "/credential_connections/{id}",
        "/credential_connections/{id}/actions/check_registration_status",
        "/ip_connections",
        "/ip_connections/{id}",
        "/fqdn_connections",
        "/fqdn_connections/{id}",
        "/uac_connections",
        "/uac_connections/{id}",
        "/uac_connections/{id}/actions/check_registration_status",
        "/sip_registration_status",
        "/ips",
        "/ips/{id}",
        "/fqdns",
        "/fqdns/{id}",
        "/outbound_voice_profiles",
        "/outbound_voice_profiles/{id}",
        "/phone_numbers/voice",
        "/phone_numbers/{id}/voice",
        "/dynamic_emergency_addresses",
        "/dynamic_emergency_addresses/{id}",
        "/dynamic_emergency_endpoints",
        "/dynamic_emergency_endpoints/{id}",
    ];

    const OPERATOR_PATHS: &[&str] = &[
        "/accounts",
        "/accounts/{id}",
        "/carriers",
        "/carriers/{id}",
        "/phone_numbers",
        "/phone_numbers/{id}",
        "/rate_decks",
        "/rate_decks/{id}",
        "/rate_decks/{id}/rates",
        "/public_key",
        "/detail_records",
        "/detail_records/{id}",
    ];

    #[test]
    fn document_has_contract_and_operator_paths() {
        let doc = document_json();
        assert_eq!(doc["servers"], json!([{"url": "/v2"}]));
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for p in CONTRACT_PATHS.iter().chain(OPERATOR_PATHS) {
            assert!(paths.contains_key(*p), "missing path {p}");
        }
        assert_eq!(paths.len(), CONTRACT_PATHS.len() + OPERATOR_PATHS.len());
        for p in OPERATOR_PATHS {
            for (_, o) in paths[*p].as_object().unwrap() {
                assert_eq!(o["tags"], json!([OPERATOR_TAG]), "{p}");
            }
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
        // Every local reference resolves.
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|x| refs(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        for r in all {
            assert!(doc.pointer(r.trim_start_matches('#')).is_some(), "dangling {r}");
        }
    }

    #[test]
    fn detail_records_list_their_filters() {
        let doc = document_json();
        let list = &doc["paths"]["/detail_records"]["get"];
        let names: Vec<&str> =
            list["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "page[number]",
                "page[size]",
                "filter[record_type]",
                "filter[date_range]",
                "filter[started_at][gte]",
                "filter[started_at][lte]",
                "filter[connection_id]",
                "filter[sip_response_code]",
                "filter[account_id]"
            ]
        );
        let record = &doc["components"]["schemas"]["OperatorDetailRecord"]["properties"];
        assert_eq!(record["record_type"]["enum"], json!(["sip-trunking"]));
        assert!(record["route_attempts"]["items"]["properties"]["outcome"].is_object());
        assert!(doc["paths"]["/detail_records/{id}"]["get"]["responses"]["404"].is_object());
    }

    /// The contract part survives the trip through utoipa's types unchanged.
    #[test]
    fn contract_part_is_unchanged() {
        let contract: Value = serde_json::from_str(CONTRACT_JSON).unwrap();
        let served = document_json();
        for (path, item) in contract["paths"].as_object().unwrap() {
            assert_eq!(&served["paths"][path], item, "path {path} changed");
        }
        for (kind, entries) in contract["components"].as_object().unwrap() {
            for (name, c) in entries.as_object().unwrap() {
                assert_eq!(&served["components"][kind][name], c, "components/{kind}/{name} changed");
            }
        }
    }

    #[tokio::test]
    async fn serves_openapi_json_without_auth() {
        let dir = std::env::temp_dir().join(format!("opentrunk-openapi-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = store::Store::open(&format!("sqlite://{}", dir.join("db.sqlite").display())).await.unwrap();
        let app = crate::router(ApiState::new(std::sync::Arc::new(store)));
        let res = app.oneshot(Request::get("/v2/openapi.json").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["paths"]["/accounts"].is_object());
        assert!(v["paths"]["/ips"].is_object());
        assert_eq!(v, document_json());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
