-- Whether a client has a sign-in under way is asked when a full table of
-- registrations must make room (those without one go first).
CREATE INDEX authorization_requests_client ON authorization_requests (client_id);
CREATE INDEX device_authorizations_client ON device_authorizations (client_id);
-- API key owners are user names, compared as user names are: in lower case
-- (they are ASCII: `keys create` allows A-Z a-z 0-9 - _ . @).
UPDATE api_keys SET owner = lower(owner) WHERE owner IS NOT NULL;
