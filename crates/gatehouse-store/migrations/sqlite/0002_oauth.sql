CREATE TABLE oauth_clients (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    role          TEXT NOT NULL,
    scopes        TEXT,
    secret_hash   TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    sealed_pkcs8  BLOB NOT NULL,
    public_jwk    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    activates_at  INTEGER NOT NULL,
    retired_at    INTEGER
);

CREATE TABLE revoked_tokens (
    jti           TEXT PRIMARY KEY NOT NULL,
    expires_at    INTEGER NOT NULL
);
