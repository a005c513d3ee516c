-- Every API resource as a JSON document with the columns needed to find it: its kind
-- (`account`, `outbound_voice_profile`, `credential_connection`, ...), owning account, name
-- and timestamps. Validation and the document's shape belong to the API; the store keeps it
-- whole, so a resource is returned exactly as it was stored.
CREATE TABLE resources (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX resources_by_account ON resources (kind, account_id);

-- Values that must be unique across the platform or a scope (a credential's user name, an
-- IP token, a tech prefix per source IP), each held by one resource.
CREATE TABLE unique_values (
    scope TEXT NOT NULL,
    value TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (scope, value)
);

-- API keys of accounts, by hash; the key itself is shown once at creation.
CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX api_keys_by_account ON api_keys (account_id);
