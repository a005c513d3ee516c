-- The rates of each rate deck (a `rate_deck` resource): calls to numbers starting with `prefix`
-- (1 to 15 digits) cost `rate` per minute, an exact decimal kept as text. The longest matching
-- prefix wins. WITHOUT ROWID: the primary key is the table, so a deck's rates are one ordered
-- range and a lookup by (deck, prefix) is one seek.
CREATE TABLE rate_deck_rates (
    deck_id TEXT NOT NULL,
    prefix TEXT NOT NULL,
    rate TEXT NOT NULL,
    PRIMARY KEY (deck_id, prefix)
) WITHOUT ROWID;
