-- A signing key is withdrawn by `gatehouse keys revoke-signing`; when a
-- replaced key retires is computed from the schedule, never stored.
ALTER TABLE signing_keys RENAME COLUMN retired_at TO revoked_at;

-- Clients an operator allowed to introspect other clients' tokens.
ALTER TABLE oauth_clients ADD COLUMN may_introspect INTEGER NOT NULL DEFAULT 0;
