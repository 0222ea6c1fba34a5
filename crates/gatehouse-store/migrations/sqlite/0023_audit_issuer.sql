-- The external identity provider (`[[issuers]]`) whose token named a
-- record's human and agent: its `alice` is not the local user `alice`, and
-- the trail must say which one acted. NULL for Gatehouse's own users, keys
-- and clients, and for records written before this migration.
ALTER TABLE audit_events ADD COLUMN issuer TEXT;
