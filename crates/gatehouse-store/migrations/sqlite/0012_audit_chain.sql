-- The hash chain of the audit trail (tamper evidence): each record's place
-- in the chain of the instance that wrote it, and signed checkpoints of
-- each chain's head. Records written before this migration have no link.
ALTER TABLE audit_events ADD COLUMN chain TEXT;
ALTER TABLE audit_events ADD COLUMN chain_seq INTEGER;
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE INDEX audit_events_chain ON audit_events (chain, chain_seq);

CREATE TABLE audit_checkpoints (
    chain  TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    hash   TEXT NOT NULL,
    ts     INTEGER NOT NULL,
    -- A compact JWS of {chain, seq, hash, iat} by the authorization
    -- server's signing key.
    jws    TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
