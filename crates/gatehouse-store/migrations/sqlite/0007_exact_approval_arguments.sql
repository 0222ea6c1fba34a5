-- Issue 9: the approver sees the exact arguments an operation token is
-- bound to. `approvals.arguments` now holds them as called, except the
-- fields the policy marks `redact`: those read "[REDACTED]" there, are not
-- stored, and `masked_fields` keeps each one's SHA-256 (a JSON object).
-- Audit records of calls that need approval carry the SHA-256 of the
-- canonical exact arguments, and the id of the approval they are about.
ALTER TABLE approvals ADD COLUMN masked_fields TEXT NOT NULL DEFAULT '{}';
ALTER TABLE audit_events ADD COLUMN args_sha256 TEXT;
ALTER TABLE audit_events ADD COLUMN approval TEXT;
