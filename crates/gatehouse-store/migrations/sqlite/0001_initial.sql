CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    role          TEXT NOT NULL,
    scopes        TEXT,
    owner         TEXT,
    secret_hash   TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER,
    rotated_to    TEXT
);

CREATE TABLE audit_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    ts            INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    tenant        TEXT,
    human         TEXT,
    agent         TEXT,
    credential    TEXT,
    session       TEXT,
    source        TEXT,
    tool          TEXT,
    arguments     TEXT,
    decision      TEXT,
    reason        TEXT,
    outcome       TEXT NOT NULL,
    error         TEXT,
    latency_us    INTEGER,
    result_bytes  INTEGER
);
CREATE INDEX audit_events_ts ON audit_events (ts);

CREATE TABLE tenant_secrets (
    tenant  TEXT NOT NULL,
    name    TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);

CREATE TABLE runtime_settings (
    tenant  TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
);
