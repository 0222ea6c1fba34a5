-- A call's pending approval is looked up by its arguments' hash, and a
-- requester's pending approvals are counted (at most a few each), rather
-- than every pending approval of the tenant read on each request.
CREATE INDEX approvals_pending_call ON approvals (tenant, arguments_hash, status);
CREATE INDEX approvals_pending_requester ON approvals (tenant, human, agent, status);
