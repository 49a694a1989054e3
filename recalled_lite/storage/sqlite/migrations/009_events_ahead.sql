-- 009: events dated ahead of their arrival, kept apart from the list pages' stop bound.
--
-- A filtered page walks events_keys newest seq first and stops once event_blocks.max_below of
-- the block it has reached (007) is no later than the page's last row. One event dated an hour
-- ahead (events.max_future_seconds allows that) raised max_below for every later block, so for
-- an hour every first page of a filter read every match stored after it: measured, 272 ms
-- instead of 2 ms for 100,000 matches. Now max_below covers only events dated at most
-- keys.AHEAD_MS (60 s) after their received_at; the others are listed here and merged into
-- each page on their own (storage/sqlite/reads.py, keyed_page).
--
-- migrate.py fills the table and recomputes max_below over the other events, with a progress
-- bar, in this same transaction. A block that holds only events dated ahead takes the bound
-- of the blocks below it; with nothing below, it keeps the bound it had: looser than it need
-- be, still true.
CREATE TABLE events_ahead (
    seq         INTEGER PRIMARY KEY,   -- events.seq
    occurred_at INTEGER NOT NULL       -- events.occurred_at, for the merge's range scan
);
CREATE INDEX events_ahead_by_time ON events_ahead (occurred_at, seq);
