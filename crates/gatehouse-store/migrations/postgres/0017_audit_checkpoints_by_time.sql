-- Servers read the checkpoints other processes signed since a time (the
-- chains of commands and `gatehouse stdio` runs they witness), so a chain
-- deleted whole, checkpoints included, is still missed by `audit verify`.
CREATE INDEX audit_checkpoints_ts ON audit_checkpoints (ts);
