//! `/v2/credential_connections`: SIP connections whose devices authenticate with a user name
//! and password (digest), registering or sending calls with them. Follows the contract's
//! `CredentialConnection` field for field; the shared fields, rules and handlers are in
//! [`crate::connections_common`]:
//!
//! - Create answers 201, delete 200 with the deleted connection. `connection_name`,
//!   `user_name` and `password` are required on create.
//! - `user_name`: 4 to 32 letters and digits with a letter among the first five, unique on the
//!   platform across accounts and regardless of case (422 at `/user_name` when taken; freed
//!   when the connection is deleted or renamed). It is kept as written; the digest uses it so.
//! - `password`: 8 to 128 characters, never stored: the document keeps only the SIP digest
//!   HA1 (MD5 and SHA-256 of `user_name:realm:password`, with the user name and realm it was
//!   made for) in the private `_digest`, never shown; the registrar authenticates from it. The
//!   contract's `CredentialConnection` has `password`: the response to the request that sets
//!   it (create, or a PATCH with a new one) shows it, later ones cannot. A new `user_name`
//!   needs the password again (422 at `/password`), since the digest is made of both.
//! - `webhook_api_version` `texml` is accepted on create only (the update schema lists `1` and
//!   `2`), and only with `outbound.call_parking_enabled` true.
//! - `POST /v2/credential_connections/{id}/actions/check_registration_status` is served by
//!   [`crate::registration_status`], from the registrar's stored bindings.

use axum::Router;
use serde_json::Value;

use crate::ApiState;
use crate::connections_common::{self as cc, ConnectionType, Spec, Specs};
use crate::fields::Fields;

const INBOUND: Specs = &[cc::INBOUND, &[cc::SIMULTANEOUS_RINGING]];
const OUTBOUND: Specs = &[cc::OUTBOUND];
const OWN: &[Spec] = &[
    Spec::object("inbound", INBOUND),
    Spec::object("outbound", OUTBOUND),
    cc::SIP_URI_CALLING_PREFERENCE,
    cc::USER_NAME.required(),
    cc::PASSWORD.required(),
];

/// The credential connection type for the generic handlers.
pub static CREDENTIAL_CONNECTION: ConnectionType = ConnectionType {
    kind: "credential_connection",
    create_fields: &[cc::CONNECTION, OWN, &[cc::WEBHOOK_API_VERSION_TEXML]],
    update_fields: &[cc::CONNECTION, OWN],
    rules,
    unique: cc::sip_user_name_claims,
    unique_pointers: &[(cc::SIP_USER_NAME_SCOPE, "/user_name")],
};

fn rules(f: &mut Fields, doc: &mut Value) {
    cc::set_sip_digest(f, doc);
}

pub fn routes() -> Router<ApiState> {
    cc::routes(&CREDENTIAL_CONNECTION, "/credential_connections")
}
