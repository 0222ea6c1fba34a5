-- Issue 11: clients that authenticate with private_key_jwt (RFC 7523) keep
-- their public keys here (a JWKS document, or where to fetch one).
ALTER TABLE oauth_clients ADD COLUMN jwks TEXT;
ALTER TABLE oauth_clients ADD COLUMN jwks_uri TEXT;

-- Signed assertions (client assertions, identity assertions) are single
-- use: each `jti` is remembered per issuer until the assertion expires.
CREATE TABLE used_assertions (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);
