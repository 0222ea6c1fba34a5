-- Issue 12: credential lifecycle.
-- When a user's grant (a refresh-token family) last issued tokens: its code
-- was redeemed or one of its refresh tokens was. Grants from before this
-- column take the creation of their newest refresh token, which is exactly
-- their last redemption.
ALTER TABLE grants ADD COLUMN last_used_at INTEGER;
UPDATE grants SET last_used_at =
    (SELECT MAX(created_at) FROM refresh_tokens WHERE refresh_tokens.grant_id = grants.id);

-- Leases: which instance runs a periodic task (lifecycle housekeeping)
-- until when. Taken in one statement; an expired lease is anyone's.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- Notices the lifecycle gave (a warning before the maximum age, an unused
-- credential) and automatic rotations it claimed, once per credential,
-- code and basis (the timestamp the notice is about), whichever instance
-- or command gives it.
CREATE TABLE lifecycle_notices (
    credential_kind  TEXT NOT NULL,
    credential_id    TEXT NOT NULL,
    code             TEXT NOT NULL,
    basis            INTEGER NOT NULL,
    given_at         INTEGER NOT NULL,
    PRIMARY KEY (credential_kind, credential_id, code, basis)
);
