-- Whether a dynamically registered client ever obtained a grant is asked
-- when the table of registrations is full (the oldest never granted makes
-- room) and when never-granted registrations expire.
CREATE INDEX grants_client ON grants (client_id);
