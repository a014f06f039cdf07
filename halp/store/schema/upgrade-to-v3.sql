-- HALP SQLite store, upgrade from schema version 2 to version 3.
-- Applied in one transaction (after v1.sql and upgrade-to-v2.sql on a new
-- database); halp/store/sqlite.py then sets halp_version.

-- The change feed (IHostStore.changes) and provenance.  Every entry has a
-- change number, seq, unique and growing: a merge that adds an entry or
-- moves its time forward gives it the next number.  feed_state holds the
-- last number given and the epoch that names this numbering, so that a
-- cursor from before a wipe of the database (or from another server)
-- cannot point into it.  source is the address of the client whose insert
-- brought the latest confirmation into HALP; via the HALP server it was
-- replicated from ('' when it was inserted here).
CREATE TABLE feed_state (
    epoch TEXT NOT NULL,
    seq   INTEGER NOT NULL
);

CREATE TABLE entries_v3 (
    label  TEXT NOT NULL,
    host   TEXT NOT NULL,
    port   INTEGER NOT NULL,
    ts     INTEGER NOT NULL,
    seq    INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    via    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (label, host, port)
) WITHOUT ROWID;

-- Entries that exist already join the feed oldest-confirmed first.
INSERT INTO entries_v3 (label, host, port, ts, seq)
    SELECT label, host, port, ts,
           row_number() OVER (ORDER BY ts, label, host, port)
    FROM entries;

DROP TABLE entries;
ALTER TABLE entries_v3 RENAME TO entries;

CREATE INDEX entries_order ON entries (label, ts DESC, host, port);
CREATE INDEX entries_age ON entries (ts);
CREATE UNIQUE INDEX entries_feed ON entries (seq);

INSERT INTO feed_state (epoch, seq)
    SELECT lower(hex(randomblob(8))), count(*) FROM entries;
