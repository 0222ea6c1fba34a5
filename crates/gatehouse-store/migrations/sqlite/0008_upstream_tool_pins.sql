-- Issue 10: the definition (name, description, schemas, annotations) of
-- every upstream tool, pinned the first time Gatehouse sees it. A later
-- definition that differs waits in `pending_*` until an operator approves
-- it (`gatehouse upstreams approve`); `sha256` is over the canonical JSON.
CREATE TABLE upstream_tool_pins (
    upstream TEXT NOT NULL,
    tool TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    definition TEXT NOT NULL,
    pinned_at INTEGER NOT NULL,
    pinned_by TEXT,
    pending_sha256 TEXT,
    pending_definition TEXT,
    pending_since INTEGER,
    PRIMARY KEY (upstream, tool)
);
