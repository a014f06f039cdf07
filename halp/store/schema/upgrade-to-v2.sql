-- HALP SQLite store, upgrade from schema version 1 to version 2.
-- Applied in one transaction, after v1.sql on a new database and on its own
-- to a version 1 database; halp/store/sqlite.py then sets halp_version.

-- State documents (IHostStore.get_state and put_state): small texts kept
-- beside the entries, such as a client's table of known servers.  They
-- never expire: purge leaves this table alone.
CREATE TABLE state (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
