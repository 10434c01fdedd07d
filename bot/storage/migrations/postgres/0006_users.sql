-- What the bot remembers of each user: the language they chose with /language (NULL:
-- their Telegram language, else DEFAULT_LANGUAGE) and their last options (NULL: never
-- chosen), the defaults of their next keyboard.
CREATE TABLE users (
    user_id BIGINT PRIMARY KEY,
    language TEXT,
    quality TEXT,
    duration INTEGER,
    style TEXT,
    updated_at DOUBLE PRECISION NOT NULL
);
-- The asker's language, stored when the job is created: what the tracker sends later
-- (status, video caption, outcome, refund) speaks it. Jobs from before it: English.
ALTER TABLE jobs ADD COLUMN language TEXT NOT NULL DEFAULT 'en';
