-- One call detail record (CDR) per call the switch handled: who (account, connection, outbound
-- voice profile), the two legs' Call-IDs, the parties as received and as sent, the times, what
-- it cost, how it ended, every route tried and the decision trace. Records are financial
-- history: nothing here references a resource, so a record outlives the connection or account
-- it names.
--
-- Times are RFC 3339 UTC text with milliseconds, always 24 characters
-- (`2026-01-02T03:04:05.678Z`), so text order is time order. `rate` and `cost` are exact
-- decimals as text (USD). `route_attempts` (a JSON array) and `trace` (the rules' decision
-- trace) are JSON text the store keeps as written.
--
-- Every list reads newest first (`started_at DESC, id DESC`), so each index the API's filters
-- use ends with that order: a page is a walk down one index, never a sort of all matches.
CREATE TABLE call_detail_records (
    id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    outbound_voice_profile_id TEXT,
    direction TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    a_leg_call_id TEXT NOT NULL,
    b_leg_call_id TEXT,
    from_received TEXT NOT NULL,
    to_received TEXT NOT NULL,
    from_sent TEXT,
    to_sent TEXT,
    started_at TEXT NOT NULL,
    answered_at TEXT,
    ended_at TEXT NOT NULL,
    call_sec BIGINT NOT NULL,
    billed_sec BIGINT NOT NULL,
    rate TEXT,
    cost TEXT,
    sip_response_code BIGINT NOT NULL,
    reason_code TEXT,
    hangup_source TEXT NOT NULL CHECK (hangup_source IN ('caller', 'callee', 'system')),
    route_attempts TEXT NOT NULL,
    trace TEXT NOT NULL
);
-- An account's records (the API's default scope), optionally within a date range.
CREATE INDEX call_detail_records_by_account ON call_detail_records (account_id, started_at DESC, id DESC);
-- The operator's view of every account.
CREATE INDEX call_detail_records_by_start ON call_detail_records (started_at DESC, id DESC);
CREATE INDEX call_detail_records_by_connection ON call_detail_records (connection_id, started_at DESC, id DESC);
CREATE INDEX call_detail_records_by_status ON call_detail_records (sip_response_code, started_at DESC, id DESC);
