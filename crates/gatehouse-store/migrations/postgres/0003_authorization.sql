-- Interactive OAuth: clients with redirect URIs, local users, browser
-- sessions, pending authorization requests, consents, and token families
-- (grants) with their codes, refresh tokens and issued access tokens.
-- Codes, refresh tokens, session ids and device codes are stored only as
-- keyed hashes.

ALTER TABLE oauth_clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE oauth_clients ADD COLUMN grant_types TEXT NOT NULL DEFAULT '["client_credentials"]';
ALTER TABLE oauth_clients ADD COLUMN auth_method TEXT NOT NULL DEFAULT 'client_secret_basic';
ALTER TABLE oauth_clients ADD COLUMN registered_by TEXT NOT NULL DEFAULT 'operator';
ALTER TABLE oauth_clients ADD COLUMN last_used_at BIGINT;

CREATE TABLE users (
    username       TEXT PRIMARY KEY NOT NULL,
    tenant         TEXT NOT NULL,
    roles          TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    disabled_at    BIGINT
);

-- Kept for unknown names too, so a lockout says nothing about whether a user exists.
CREATE TABLE login_throttle (
    username      TEXT PRIMARY KEY NOT NULL,
    failures      BIGINT NOT NULL,
    locked_until  BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE browser_sessions (
    id_hash     TEXT PRIMARY KEY NOT NULL,
    username    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX browser_sessions_username ON browser_sessions (username);

CREATE TABLE authorization_requests (
    id          TEXT PRIMARY KEY NOT NULL,
    client_id   TEXT NOT NULL,
    request     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE consents (
    username    TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    scope       TEXT NOT NULL,
    granted_at  BIGINT NOT NULL,
    PRIMARY KEY (username, client_id)
);

CREATE TABLE grants (
    id          TEXT PRIMARY KEY NOT NULL,
    client_id   TEXT NOT NULL,
    username    TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    roles       TEXT NOT NULL,
    scope       TEXT NOT NULL,
    resource    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX grants_username ON grants (username);

CREATE TABLE authorization_codes (
    code_hash       TEXT PRIMARY KEY NOT NULL,
    grant_id        TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);
CREATE INDEX authorization_codes_grant ON authorization_codes (grant_id);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    grant_id    TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    scope       TEXT NOT NULL,
    resource    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

CREATE TABLE issued_tokens (
    jti         TEXT PRIMARY KEY NOT NULL,
    grant_id    TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX issued_tokens_grant ON issued_tokens (grant_id);

CREATE TABLE device_authorizations (
    device_code_hash  TEXT PRIMARY KEY NOT NULL,
    user_code         TEXT NOT NULL UNIQUE,
    client_id         TEXT NOT NULL,
    scope             TEXT NOT NULL,
    resource          TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    interval_secs     BIGINT NOT NULL,
    last_polled_at    BIGINT,
    slow_down         BIGINT NOT NULL DEFAULT 0,
    status            TEXT NOT NULL,
    grant_id          TEXT
);
