-- Issue 12 (credential lifecycle): a client's secret is rotated without a
-- new client id. `gatehouse clients rotate-secret` moves the current hash
-- to `previous_secret_hash`, which keeps authenticating the client until
-- `previous_secret_valid_until` (the overlap), and sets the new one.
-- `secret_issued_at` is when the current secret was issued (NULL: when the
-- client was created); the lifecycle's maximum age counts from it.
-- `machine_tokens_not_before`: for a leaked secret, the client-credentials
-- access tokens the client obtained before this (ms) are refused.
ALTER TABLE oauth_clients ADD COLUMN secret_issued_at BIGINT;
ALTER TABLE oauth_clients ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE oauth_clients ADD COLUMN previous_secret_valid_until BIGINT;
ALTER TABLE oauth_clients ADD COLUMN machine_tokens_not_before BIGINT;
