-- The external issuer ([[issuers]]) of the human an approval is for, if
-- any: a subject of another issuer that equals a local user's name is not
-- that user, who must not see or decide the approval as their own.
ALTER TABLE approvals ADD COLUMN human_issuer TEXT;
