-- PostgreSQL twin of migrations/sqlite/0001_initial.sql: same tables and
-- columns. Millisecond timestamps are BIGINT, JSON lists stay TEXT, so
-- records convert exactly as they do for SQLite.

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    role          TEXT NOT NULL,
    scopes        TEXT,
    owner         TEXT,
    secret_hash   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT,
    rotated_to    TEXT
);

CREATE TABLE audit_events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    ts            BIGINT NOT NULL,
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
    latency_us    BIGINT,
    result_bytes  BIGINT
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

-- PostgreSQL only: one row, bumped in the same transaction as every
-- credential change (followed by NOTIFY gatehouse_credentials), so every
-- instance can tell that its cached credentials may be stale.
CREATE TABLE credential_generation (
    id     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    value  BIGINT NOT NULL
);
INSERT INTO credential_generation (id, value) VALUES (TRUE, 1);
