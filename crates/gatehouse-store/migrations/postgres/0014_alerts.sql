-- Issue 12: alerts. Each alert is also an audit record of kind `alert`
-- (same id); this table holds what the audit trail must not: whether
-- someone acknowledged it, and its webhook delivery (an outbox: an alert
-- raised by any instance or command is delivered by one server, retried
-- with backoff until it is taken or its attempts run out).
CREATE TABLE alerts (
    id                   TEXT PRIMARY KEY NOT NULL,
    raised_at            BIGINT NOT NULL,
    code                 TEXT NOT NULL,
    tenant               TEXT,
    subject              TEXT NOT NULL,
    detail               TEXT NOT NULL,
    acked_at             BIGINT,
    acked_by             TEXT,
    -- none (no webhook when raised), pending, delivered, failed.
    delivery_state       TEXT NOT NULL,
    delivery_attempts    INTEGER NOT NULL DEFAULT 0,
    -- When the next attempt is due; while one instance sends, the end of
    -- its claim (a claim left by a dead instance runs out).
    next_delivery_at     BIGINT,
    last_delivery_error  TEXT
);
CREATE INDEX alerts_by_time ON alerts (raised_at);
CREATE INDEX alerts_due ON alerts (delivery_state, next_delivery_at);
