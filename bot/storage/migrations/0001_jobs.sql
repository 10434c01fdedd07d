-- The job ledger and the operator alerts' state.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    chat_type TEXT NOT NULL,
    trigger_message_id INTEGER NOT NULL,
    photo_message_id INTEGER NOT NULL,
    thread_id INTEGER,
    file_id TEXT NOT NULL,
    file_unique_id TEXT NOT NULL,
    file_size INTEGER,
    mime_type TEXT NOT NULL,
    quality TEXT NOT NULL,
    duration INTEGER NOT NULL,
    style TEXT,
    seed INTEGER,
    state TEXT NOT NULL,
    reason TEXT,
    keyboard_message_id INTEGER,
    request_id TEXT UNIQUE,
    output_url TEXT,
    video_file_id TEXT,
    retry_of INTEGER UNIQUE REFERENCES jobs(id),
    poll_count INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    generate_at REAL,
    submitted_at REAL,
    completed_at REAL,
    finished_at REAL,
    notified_at REAL,
    updated_at REAL NOT NULL
);
-- A re-delivered update must find its job, not make a second one.
CREATE UNIQUE INDEX jobs_trigger ON jobs(chat_id, trigger_message_id)
    WHERE retry_of IS NULL;
CREATE INDEX jobs_state ON jobs(state);
CREATE INDEX jobs_user_generate ON jobs(user_id, generate_at);
CREATE TABLE alerts (
    kind TEXT PRIMARY KEY,
    active INTEGER NOT NULL,
    last_sent_at REAL NOT NULL
);
