-- Gate 2: task grants (session-scoped allowlists), approvals with their
-- operation tokens, and lockouts after repeated authentication failures.
-- Operation tokens are stored only as keyed hashes.

CREATE TABLE task_grants (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant           TEXT NOT NULL,
    human            TEXT,
    agent            TEXT NOT NULL,
    credential_kind  TEXT NOT NULL,
    credential_id    TEXT NOT NULL,
    task             TEXT NOT NULL,
    -- JSON array of tool names, fixed for the grant's lifetime.
    tools            TEXT NOT NULL,
    session_id       TEXT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    revoked_at       BIGINT
);
CREATE INDEX task_grants_tenant ON task_grants (tenant, created_at);

CREATE TABLE approvals (
    id                TEXT PRIMARY KEY NOT NULL,
    tenant            TEXT NOT NULL,
    human             TEXT,
    agent             TEXT NOT NULL,
    credential_id     TEXT NOT NULL,
    task_grant        TEXT,
    task              TEXT,
    tool              TEXT NOT NULL,
    arguments_hash    TEXT NOT NULL,
    arguments         TEXT NOT NULL,
    status            TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    decided_by        TEXT,
    decided_at        BIGINT,
    token_hash        TEXT,
    token_expires_at  BIGINT,
    redeemed_at       BIGINT
);
-- A token names exactly one approval; undecided ones have none yet.
CREATE UNIQUE INDEX approvals_token_hash ON approvals (token_hash) WHERE token_hash IS NOT NULL;
CREATE INDEX approvals_tenant_status ON approvals (tenant, status, created_at);

-- Kept for unknown credentials and sources too. The count restarts when
-- its window (from `window_start`) has passed; a lock outlives that.
CREATE TABLE auth_failures (
    subject       TEXT PRIMARY KEY NOT NULL,
    failures      BIGINT NOT NULL,
    window_start  BIGINT NOT NULL,
    locked_until  BIGINT NOT NULL
);
