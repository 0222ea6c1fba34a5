-- Every instance reads the locks in force once a second: by their end, not
-- through every failure counted (a spray from many addresses counts many).
CREATE INDEX auth_failures_locked_until ON auth_failures (locked_until);
