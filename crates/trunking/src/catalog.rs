//! The response-code catalog: every code of the product documentation's troubleshooting tables
//! (D, P, R, PE, T and B series, "Response Codes") as one entry, plus the few responses the
//! documentation names without a code (a `407` challenge, the `503` that lets a customer fail
//! over from a spoofed international call, `404 Invalid Destination`). The engine never writes a
//! reason phrase by hand: it answers with [`Reason::response`].
//!
//! Where the documentation gives one meaning to a range (`D10-D17`, `D25-D29`, `PE1-PE6`), each
//! code is its own entry with the range's description, and the table says which specific
//! condition of ours answers with it; codes of a range we have no condition for yet stay in the
//! catalog (an operator may see them from a peer) but nothing decides them.

use serde::Serialize;

/// A SIP response as the product answers it: status and reason phrase (the code at its end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Response {
    pub status: u16,
    pub phrase: &'static str,
}

macro_rules! catalog {
    ($( $variant:ident = ($code:literal, $status:literal, $phrase:literal, $description:literal); )*) => {
        /// A product reason: one row of the response-code tables.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        pub enum Reason { $( $variant, )* }

        /// Every row, in the documentation's order.
        pub const CATALOG: &[Entry] = &[ $( Entry {
            reason: Reason::$variant,
            code: $code,
            status: $status,
            phrase: if $code.is_empty() { $phrase } else { concat!($phrase, " ", $code) },
            description: $description,
        }, )* ];
    };
}

/// One row of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub reason: Reason,
    /// The product code (`D1`, `PE1`, ...); empty for the documented responses without a code.
    pub code: &'static str,
    pub status: u16,
    /// The full reason phrase, the code at its end.
    pub phrase: &'static str,
    /// What it means, for the API, the CDR and logs.
    pub description: &'static str,
}

catalog! {
    // D1X: account and connection.
    D1 = ("D1", 403, "User channel limit exceeded", "Concurrent outbound calls exceed the account's limit");
    D10 = ("D10", 403, "Account disabled", "The account is disabled");
    D11 = ("D11", 403, "Outbound voice profile disabled", "The connection's outbound voice profile is disabled");
    D12 = ("D12", 403, "Connection outbound forbidden", "The connection is not allowed to place outbound calls");
    D13 = ("D13", 403, "Forbidden", "Connection, profile, or account disabled/forbidden");
    D14 = ("D14", 403, "Forbidden", "Connection, profile, or account disabled/forbidden");
    D15 = ("D15", 403, "Forbidden", "Connection, profile, or account disabled/forbidden");
    D16 = ("D16", 403, "Forbidden", "Connection, profile, or account disabled/forbidden");
    D17 = ("D17", 403, "Outside calling window", "The outbound voice profile's calling window does not allow calls now");
    D18 = ("D18", 404, "SIP connection inactive", "The SIP connection is inactive");
    D19 = ("D19", 404, "Daily spend limit reached", "Account blocked for billing: the profile's daily spend limit is reached (resets 00:00:00 UTC)");
    // D2X: profile and channel limits.
    D2 = ("D2", 403, "Outbound profile channel limit exceeded", "Outbound voice profile concurrent call limit exceeded");
    D21 = ("D21", 480, "No destination number", "No destination/forwarding number associated");
    D22 = ("D22", 403, "Calls per destination limit exceeded", "Channel limit exceeded (DID, connection, or profile): calls to this number within the calling window");
    D24 = ("D24", 403, "Rate exceeds maximum destination rate", "Rate per minute exceeds the profile's max_destination_rate");
    D25 = ("D25", 403, "Authentication failed", "Digest credentials did not verify");
    D26 = ("D26", 403, "IP authentication token mismatch", "Source IP matches but X-Telnyx-Token is missing or wrong, or the token belongs to a connection of another IP");
    D27 = ("D27", 403, "Unknown source", "No connection matches the source address, and no credentials were offered");
    D28 = ("D28", 403, "P-Charge-Info number not assigned", "P-Charge-Info is missing, malformed or names a number not assigned to the connection");
    D29 = ("D29", 403, "Ambiguous connection", "Several connections match the request and nothing tells them apart");
    // D3X: connection and URI.
    D3 = ("D3", 403, "Connection channel limit exceeded", "Connection concurrent call limit exceeded");
    D30 = ("D30", 403, "Invalid SIP URI", "Invalid SIP URI");
    D31 = ("D31", 403, "Invalid subdomain", "Invalid SIP subdomain");
    D35 = ("D35", 403, "Caller Origination Number is Invalid", "Invalid caller ID format");
    D36 = ("D36", 403, "Caller Origination Number belongs to another account", "Using another account's number as caller ID");
    D38 = ("D38", 403, "No outbound voice profile", "No outbound voice profile assigned to the connection");
    // D4X: routing and destination.
    D40 = ("D40", 404, "No route available", "Destination exists but no route is available");
    D41 = ("D41", 403, "Destination forbidden", "Dialed destination not allowed by the outbound voice profile (fraud prevention)");
    D42 = ("D42", 405, "REFER not allowed", "SIP REFER not allowed");
    D49 = ("D49", 403, "Origination number lacks LRN", "NANPA origination number lacks valid LRN");
    // D5X: channel billing and verification.
    D5 = ("D5", 486, "Channel billing limit exceeded", "Legacy channel billing limit exceeded");
    D51 = ("D51", 403, "Number not verified", "Non-platform number not verified");
    D52 = ("D52", 403, "Restricted origination number", "Restricted origination number");
    D53 = ("D53", 403, "Restricted origination number", "Restricted origination number");
    D54 = ("D54", 403, "Restricted origination number", "Restricted origination number");
    D56 = ("D56", 486, "Global channel billing limit exceeded", "Global channel billing limit exceeded");
    D57 = ("D57", 403, "HD voice disabled", "HD voice disabled for phone number");
    D59 = ("D59", 404, "Number unsupported in region", "Special/short number unsupported by region");
    // D6X: account tier.
    D60 = ("D60", 403, "Verified numbers required", "Account tier requires verified numbers");
    D61 = ("D61", 403, "Verified numbers required", "Account tier requires verified numbers");
    D63 = ("D63", 403, "Number port pending", "Number port pending");
    D64 = ("D64", 403, "Regulatory requirement pending", "Regulatory requirement pending");
    D65 = ("D65", 403, "Regulatory requirement pending", "Regulatory requirement pending");
    // D7X-D9X: additional restrictions.
    D7 = ("D7", 403, "No outbound voice profile", "No outbound voice profile assigned");
    D8 = ("D8", 404, "Missing E911 caller ID", "Missing E911 caller ID");
    D9 = ("D9", 403, "International rate limit reached", "International destination rate limit reached");
    // P: protocol.
    P01 = ("P01", 403, "Invalid Request-URI", "Invalid Request-URI");
    P02 = ("P02", 403, "CANCEL without matching INVITE", "CANCEL without matching INVITE");
    P04 = ("P04", 403, "REGISTER with To tag", "REGISTER with To tag");
    P05 = ("P05", 403, "CPS limit exceeded", "Calls per second limit exceeded");
    P06 = ("P06", 403, "Message too large", "Message size exceeded");
    P14 = ("P14", 403, "Contact header too long", "Contact header length violation");
    P15 = ("P15", 403, "Contact header too long", "Contact header length violation");
    P16 = ("P16", 403, "Contact header too long", "Contact header length violation");
    P18 = ("P18", 403, "Empty destination", "Empty destination in Request-URI or To");
    P29 = ("P29", 500, "REGISTER processing failure", "REGISTER processing failure");
    P51 = ("P51", 403, "Contact header exceeds 512 bytes", "Contact header exceeds 512 bytes");
    P81 = ("P81", 403, "Invalid username", "Username validation issue");
    P82 = ("P82", 403, "Invalid username", "Username validation issue");
    P83 = ("P83", 403, "Invalid username", "Username validation issue");
    P93 = ("P93", 403, "Hop count exceeded", "Hop count exceeded (routing loop)");
    // R: registration and authentication.
    R14 = ("R14", 403, "Empty authentication username", "Empty authentication username");
    R16 = ("R16", 403, "Invalid username", "Invalid username");
    R17 = ("R17", 403, "Username too short", "Username too short");
    R18 = ("R18", 403, "Username mismatch", "Authentication username does not match the connection");
    R47 = ("R47", 403, "Multiple Contact addresses", "Multiple Contact addresses in REGISTER");
    RG1 = ("RG1", 480, "User not registered", "User not registered (credential connection)");
    // PE: routing failures.
    PE1 = ("PE1", 503, "No routes found", "No carrier terminates the destination");
    PE2 = ("PE2", 503, "No routes found", "Every route failed");
    PE3 = ("PE3", 503, "No routes found", "No routes found");
    PE4 = ("PE4", 503, "No routes found", "No routes found");
    PE5 = ("PE5", 503, "No routes found", "No routes found");
    PE6 = ("PE6", 503, "No routes found", "No routes found");
    // T: termination.
    TV1 = ("TV1", 503, "Downstream carrier termination issue", "Downstream carrier termination issue");
    TM1 = ("TM1", 403, "No rates for destination prefix", "No rates for the destination prefix");
    // B: media.
    B3 = ("B3", 488, "SRTP mismatch", "SRTP mismatch: encrypted media expected");
    // Documented responses without a code.
    ProxyAuthenticationRequired = ("", 407, "Proxy Authentication Required", "Credentials needed: a digest challenge, or a missing or wrong tech prefix");
    SpoofedInternational = ("", 503, "Service Unavailable", "International destination with a caller ID the account does not own: rejected so the customer can fail over");
    InvalidDestination = ("", 404, "Invalid Destination", "The dialed number is not a valid number");
}

impl Reason {
    /// This reason's catalog row.
    pub fn entry(self) -> &'static Entry {
        // The table lists the variants in declaration order.
        &CATALOG[self as usize]
    }

    /// The SIP response to answer with.
    pub fn response(self) -> Response {
        let e = self.entry();
        Response { status: e.status, phrase: e.phrase }
    }

    /// The product code (`D1`), empty for coded-less responses.
    pub fn code(self) -> &'static str {
        self.entry().code
    }

    /// The reason of a product code, as written in the tables (`"D1"`, `"PE1"`).
    pub fn from_code(code: &str) -> Option<Reason> {
        CATALOG.iter().find(|e| !e.code.is_empty() && e.code == code).map(|e| e.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_indexed_by_variant() {
        for (i, e) in CATALOG.iter().enumerate() {
            assert_eq!(e.reason as usize, i);
            assert_eq!(e.reason.entry(), e);
        }
    }

    #[test]
    fn phrases_end_with_their_code() {
        assert_eq!(Reason::D1.response(), Response { status: 403, phrase: "User channel limit exceeded D1" });
        assert_eq!(Reason::D35.response().phrase, "Caller Origination Number is Invalid D35");
        for e in CATALOG {
            if !e.code.is_empty() {
                assert!(e.phrase.ends_with(&format!(" {}", e.code)), "{e:?}");
                assert_eq!(Reason::from_code(e.code), Some(e.reason));
            }
            assert!((100..700).contains(&e.status));
        }
    }
}
