-- 002: read-side indexes for the list and search filters (§4.5, §4.6).
--
-- organization + exact action (the dashboard's most common filter): one index
-- range read newest-first, whatever the action's frequency. Action prefixes
-- (`invoice.*`) deliberately do not use it (filters.py writes `+action`): for
-- broad prefixes walking events_by_org_time and stopping after one page is
-- cheaper than sorting every match.
CREATE INDEX events_by_org_action_time ON events (organization, action, occurred_at, seq);

-- Target filter by type only (`target_type=invoice`, `target:invoice`): the
-- newest-first walk probes each candidate event by seq. The primary key
-- (target_type, target_id, seq) cannot answer "does event N have a target of
-- type T" without scanning every row of that type. (Type + id and id only use
-- the primary key.) Appends at the right edge (seq only grows).
CREATE INDEX event_targets_by_seq ON event_targets (seq, target_type, target_id);
