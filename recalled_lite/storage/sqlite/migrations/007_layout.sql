-- 007: a layout whose cost per event does not grow with the log (issue #14).
--
-- The b-trees keyed by organization, actor, organization + action and target put each
-- new event on a random leaf of each of them; past the page cache every append dirtied
-- four more pages. They are replaced by one FTS5 table with exact-value keys (keys.py),
-- whose inverted index is log-structured: appends go to a new segment, merged later in
-- bulk. A filter becomes `events_keys MATCH 'key AND key'`, walked newest seq first.
--
-- Not contentless: SQLite below 3.43 (Debian's 3.40 included) cannot delete a row of a
-- contentless table without the exact text, and retention deletes by rowid. The stored
-- text is ~70 bytes of hashes per event in a rowid-ordered table (an append at its right
-- edge). rowid = events.seq. columnsize=0: no per-row length table (nothing ranks).
CREATE VIRTUAL TABLE events_keys USING fts5(
    keys,
    detail = none,
    columnsize = 0,
    tokenize = 'ascii'
);

-- Seq order is not list order (newest occurred_at first): events can be back-dated or
-- dated up to limits.max_future_seconds ahead. Per block of 1024 seqs (keys.BLOCK_SHIFT)
-- this keeps the smallest and largest occurred_at, and `max_below`, the largest
-- occurred_at of every event in this block or an earlier one. A walk newest seq first
-- may stop once the page's last row sorts at or before `max_below` of the block it has
-- reached: nothing older can come before it. Blocks only ever widen (retention may
-- delete rows; the bounds then stay true, just looser).
CREATE TABLE event_blocks (
    block        INTEGER PRIMARY KEY,
    min_occurred INTEGER NOT NULL,
    max_occurred INTEGER NOT NULL,
    max_below    INTEGER NOT NULL
);

INSERT INTO event_blocks (block, min_occurred, max_occurred, max_below)
SELECT block, lo, hi, max(hi) OVER (ORDER BY block ROWS UNBOUNDED PRECEDING)
FROM (SELECT seq >> 10 AS block, min(occurred_at) AS lo, max(occurred_at) AS hi
      FROM events GROUP BY seq >> 10);

-- events_keys is filled from the events by migrate.py (Python computes the keys), with
-- a progress bar, in this same transaction.

DROP INDEX events_by_actor;
DROP INDEX events_by_org_action_time;
DROP INDEX events_by_org_time;
DROP TRIGGER event_targets_append_only;
DROP INDEX event_targets_by_seq;
DROP TABLE event_targets;
