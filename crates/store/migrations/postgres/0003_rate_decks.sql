-- The rates of each rate deck (a `rate_deck` resource): calls to numbers starting with `prefix`
-- (1 to 15 digits) cost `rate` per minute, an exact decimal kept as text. The longest matching
-- prefix wins. The prefix compares byte by byte (collation "C"), as in SQLite, so rates list in
-- the same order on both backends and `LIKE 'digits%'` can use the index.
CREATE TABLE rate_deck_rates (
    deck_id TEXT NOT NULL,
    prefix TEXT COLLATE "C" NOT NULL,
    rate TEXT NOT NULL,
    PRIMARY KEY (deck_id, prefix)
);
