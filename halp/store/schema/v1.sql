-- HALP SQLite store, schema version 1.
-- Applied in one transaction to an empty database; see halp/store/sqlite.py.

CREATE TABLE halp_version (
    version INTEGER NOT NULL
);

-- One row per (label, host, port); ts is the latest confirmed time.
CREATE TABLE entries (
    label TEXT NOT NULL,
    host  TEXT NOT NULL,
    port  INTEGER NOT NULL,
    ts    INTEGER NOT NULL,
    PRIMARY KEY (label, host, port)
) WITHOUT ROWID;

-- The serving order: a get is a range scan of this index from its start.
CREATE INDEX entries_order ON entries (label, ts DESC, host, port);
-- Expiry: purge finds old entries without scanning every label.
CREATE INDEX entries_age ON entries (ts);

-- The label index: every label that got entries, and each of its ancestors.
-- ts is the newest activity in the label's subtree; entries counts the rows
-- of entries under exactly this label, so that the cap costs no COUNT(*).
CREATE TABLE labels (
    name    TEXT NOT NULL PRIMARY KEY,
    parent  TEXT NOT NULL,
    ts      INTEGER NOT NULL,
    entries INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE INDEX labels_order ON labels (parent, ts DESC, name);
CREATE INDEX labels_age ON labels (ts);

INSERT INTO halp_version (version) VALUES (1);
