-- HALP SQLite store, upgrade from schema version 3 to version 4.
-- Applied in one transaction (after v1.sql and the earlier upgrades on a new
-- database); halp/store/sqlite.py then sets halp_version.  It calls
-- halp_address_group(), which halp/store/sqlite.py registers on the
-- connection before upgrading: halp.model.address_group in Python, since
-- SQL cannot tell a global address from a special-purpose one.

-- The network group of each entry (IHostStore.merge's per-group quota):
-- halp.model.address_group(source), '' for source '' (exempt from quotas).
-- It is written with source, by every merge that moves the entry forward.
ALTER TABLE entries ADD COLUMN grp TEXT NOT NULL DEFAULT '';

UPDATE entries SET grp = halp_address_group(source) WHERE source != '';

-- The quota: the entries of group grp in a label, in serving order, so
-- that a merge finds the ones beyond the quota (the group's oldest) with
-- one short range scan, whatever the size of the label.
CREATE INDEX entries_group ON entries (label, grp, ts DESC, host, port);
