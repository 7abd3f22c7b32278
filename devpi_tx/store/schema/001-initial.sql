-- Documents: one JSON value per key; serial = the last serial that wrote it.
CREATE TABLE kv (
    key TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL,
    serial INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX kv_serial_idx ON kv (serial);

-- One row per committed write: the keys it changed and their new values
-- (null = deleted).
CREATE TABLE changelog (
    serial INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    changes TEXT NOT NULL
);
