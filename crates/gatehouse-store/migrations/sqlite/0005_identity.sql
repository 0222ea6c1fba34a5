-- Failed logins per name and source (issue 9): one source guessing a
-- name locks only itself out of it; the name as a whole locks only at a
-- much higher count. Kept for unknown names too, so a lockout says nothing
-- about whether a user exists. Each count runs in a fixed window from its
-- first failure.

CREATE TABLE login_failures (
    username      TEXT NOT NULL,
    -- The source address (IPv4, or an IPv6 /64), or '*' for the name from
    -- every source.
    source        TEXT NOT NULL,
    failures      INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    locked_until  INTEGER NOT NULL,
    PRIMARY KEY (username, source)
);

-- Running locks carry over as locks of the name; their counts started
-- under the old rule and start over.
INSERT INTO login_failures (username, source, failures, window_start, locked_until)
SELECT username, '*', 0, 0, locked_until FROM login_throttle WHERE locked_until > 0;

DROP TABLE login_throttle;
