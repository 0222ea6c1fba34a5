-- Issue 11: people who arrive through an identity provider (an identity
-- assertion, later a federated sign-in) are Gatehouse users linked to their
-- provider identity: the pair (issuer, subject) names exactly one user.
CREATE TABLE federated_identities (
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    username TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX federated_identities_by_user ON federated_identities (username);
