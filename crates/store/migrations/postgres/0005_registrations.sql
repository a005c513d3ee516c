-- The registrar's bindings: one row per contact a device of a credential connection bound to
-- the connection's address of record with REGISTER (RFC 3261 section 10). Kept here so every
-- node of a cluster can reach a device whichever node it registered through; each node caches
-- them in memory and this table is the shared truth.
--
-- `binding_key` identifies the binding within its connection: the RFC 5626 instance and
-- `reg-id` when the device gave them (its Contact may change across refreshes), else the
-- Contact URI. Times are Unix milliseconds; `expires_at` drives expiry (`expire_before`).
-- `path` is a JSON array of the Path header values (RFC 3327). `nat` is 1 when calls go to the
-- source address rather than the Contact as written. Rows reference nothing: a connection's
-- deletion leaves its bindings to expire (they are short-lived by nature).
CREATE TABLE registrations (
    connection_id TEXT NOT NULL,
    binding_key TEXT NOT NULL,
    account_id TEXT NOT NULL,
    username TEXT NOT NULL,
    contact TEXT NOT NULL,
    instance TEXT,
    reg_id BIGINT,
    q BIGINT,
    path TEXT NOT NULL,
    call_id TEXT NOT NULL,
    cseq BIGINT NOT NULL,
    source_ip TEXT NOT NULL,
    source_port BIGINT NOT NULL,
    transport TEXT NOT NULL,
    nat BIGINT NOT NULL,
    user_agent TEXT,
    node TEXT,
    registered_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (connection_id, binding_key)
);
-- Expiry sweeps walk the soonest first.
CREATE INDEX registrations_by_expiry ON registrations (expires_at);
-- The API's look-up by SIP user name.
CREATE INDEX registrations_by_username ON registrations (username);
