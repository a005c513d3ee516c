-- The open-call journal: every node's live calls as the records they would leave if the node
-- died now, so that losing a node (SIGKILL, power) loses no call detail record.
--
-- `nodes`: one row per running process (its id is made at each start: host, pid, a random
-- suffix), with the Unix milliseconds it started and last said it was alive. A node whose
-- heartbeat is older than the node-loss age is lost: any node's reaper turns its open calls
-- into records ended at that heartbeat and removes its rows, in one transaction.
--
-- `open_calls`: one row per live call, keyed by the id its record will have (`call_id`, the
-- record's UUID), written when the call starts and updated at answer; the row goes in the same
-- transaction that stores the call's record. `record` is the record as JSON (the store's
-- `CallDetailRecord`) as known at the start; `billing_increment` (`60/60`) prices a rated
-- call's answered time; times are Unix milliseconds. No reference to `nodes`: a row can be
-- written before its node's first heartbeat lands, and a row whose node is gone is reaped on
-- its own age.
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
CREATE TABLE open_calls (
    call_id TEXT PRIMARY KEY NOT NULL,
    node_id TEXT NOT NULL,
    record TEXT NOT NULL,
    billing_increment TEXT,
    answered_at BIGINT,
    updated_at BIGINT NOT NULL
);
-- The reaper takes a lost node's calls.
CREATE INDEX open_calls_by_node ON open_calls (node_id);
