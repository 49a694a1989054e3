-- 006: the Merkle tree over the log (C2SP tlog-tiles), signed checkpoints, the keys that
-- signed them, and public receipts. See docs/integrity.md §7-§10.

-- The tiles, stored in strips of 16 hashes (512 bytes): strip S of tile (L, N) holds the
-- tile's hashes 16*S .. 16*S+15, and the tile is its strips in order. An intake group then
-- rewrites at most one half-full strip (plus new ones) on the b-tree's right edge instead of
-- a whole 8 KB tile: measured, that is the difference between a few and ~50 % more WAL per
-- small commit. Strips only grow, and none is ever deleted (retention may delete event rows,
-- never tiles: proofs only need tiles). The writer writes the strips an intake group touched
-- in the same transaction as the events.
CREATE TABLE merkle_tiles (
    level  INTEGER NOT NULL,   -- tile level L: hashes of tree level 8 * L
    idx    INTEGER NOT NULL,   -- tile index N within its level
    strip  INTEGER NOT NULL,   -- 0..15
    hashes BLOB    NOT NULL,   -- W * 32 bytes, 1 <= W <= 16; W < 16 only in a tile's last strip
    PRIMARY KEY (level, idx, strip)
) WITHOUT ROWID;

-- Strips only grow: an update must keep every hash already there.
CREATE TRIGGER merkle_tiles_append_only_update
BEFORE UPDATE ON merkle_tiles
WHEN NOT (
        NEW.level IS OLD.level AND NEW.idx IS OLD.idx AND NEW.strip IS OLD.strip
    AND length(NEW.hashes) >= length(OLD.hashes)
    AND substr(NEW.hashes, 1, length(OLD.hashes)) = OLD.hashes
)
BEGIN
    SELECT RAISE(ABORT, 'merkle tiles only grow: a stored hash cannot change');
END;

CREATE TRIGGER merkle_tiles_append_only_delete
BEFORE DELETE ON merkle_tiles
BEGIN
    SELECT RAISE(ABORT, 'merkle tiles cannot be deleted');
END;

-- Every checkpoint the server signed, in signing order. `note` is the signed note exactly as
-- served (GET /v1/checkpoint); the other columns are what it says, for queries.
CREATE TABLE checkpoints (
    id         INTEGER PRIMARY KEY,
    tree_size  INTEGER NOT NULL,
    root_hash  BLOB    NOT NULL,
    key_name   TEXT    NOT NULL,   -- "<name>+<8 hex key id>" of the signing key
    created_at INTEGER NOT NULL,
    note       TEXT    NOT NULL
);
CREATE INDEX checkpoints_by_size ON checkpoints (tree_size, id);

CREATE TRIGGER checkpoints_append_only_update
BEFORE UPDATE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints are append-only');
END;

CREATE TRIGGER checkpoints_append_only_delete
BEFORE DELETE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints are append-only');
END;

-- The public (verifier) keys that have signed checkpoints. The private key is never stored
-- here: it lives in <database>.signing-key (or RECALLED_SIGNING_KEY). Exactly one row has
-- retired_at NULL once the server has started: the current key.
CREATE TABLE signing_keys (
    verifier_key TEXT    PRIMARY KEY,   -- <name>+<8 hex key id>+base64(0x01 || public key)
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER
);

-- Public receipts (GET /v1/events/{id}/receipt). The page's URL carries the receipt id and a
-- MAC of it under a key derived from the server secret, so the table holds nothing that
-- would open the page.
CREATE TABLE receipts (
    id         TEXT    PRIMARY KEY,     -- rcpt_<ULID>
    event_seq  INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX receipts_by_event ON receipts (event_seq);
