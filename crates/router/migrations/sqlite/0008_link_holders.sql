-- Which replica holds each linked node's link, so that a job submitted to any replica reaches the
-- node through the one that holds it. Written at the node's hello, deleted when its link closes;
-- the holder refreshes `seen` on a short period, and a row not refreshed for long (its replica
-- died) no longer counts.
CREATE TABLE link_holders (
    -- The node's key (npub1…).
    node        TEXT NOT NULL PRIMARY KEY,
    -- The holding replica's id (new at each start).
    replica     TEXT NOT NULL,
    -- The URL the replica's peers reach it at (--replica-url).
    replica_url TEXT NOT NULL,
    -- What the node announced last (the link's announce, JSON), and the operators it names (JSON).
    announce    TEXT NOT NULL,
    operators   TEXT NOT NULL,
    since       INTEGER NOT NULL,
    seen        INTEGER NOT NULL
);
CREATE INDEX link_holders_replica ON link_holders (replica, seen);
