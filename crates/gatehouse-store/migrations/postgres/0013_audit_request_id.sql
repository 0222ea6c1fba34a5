-- Issue 12 (observability): every audit record of an HTTP request carries
-- the request's id, the same one its log lines and its `X-Request-Id`
-- response header show, so one request can be followed from a log line to
-- its records and back. NULL for records made outside a request (the CLI,
-- housekeeping) and for records written before this migration.
ALTER TABLE audit_events ADD COLUMN request_id TEXT;
-- No index: it would cost every audit insert (two per call, on the hot
-- path) to speed up a look-up made only during an investigation.
