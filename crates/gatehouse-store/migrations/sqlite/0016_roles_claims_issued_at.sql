-- A user whose roles follow an identity provider's claims: when the claims
-- the current roles come from were issued (the ID token's or assertion's
-- `iat`, ms). Two sign-ins racing with claims from before and after a role
-- was taken away at the provider must not let the older claims win because
-- they were written last. NULL: no provider's claims applied yet.
ALTER TABLE users ADD COLUMN roles_claims_issued_at INTEGER;
