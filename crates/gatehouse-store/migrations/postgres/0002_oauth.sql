CREATE TABLE oauth_clients (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    role          TEXT NOT NULL,
    scopes        TEXT,
    secret_hash   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    sealed_pkcs8  BYTEA NOT NULL,
    public_jwk    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    activates_at  BIGINT NOT NULL,
    retired_at    BIGINT
);

CREATE TABLE revoked_tokens (
    jti           TEXT PRIMARY KEY NOT NULL,
    expires_at    BIGINT NOT NULL
);
