-- The Telegram budget several instances share (PostgreSQL's 0008, bot/telegram/pacing.py).
-- A SQLite ledger is opened by one bot only, whose rate limiter keeps the budget in
-- memory: these tables stay empty here. They exist so that both dialects hold the same
-- tables under the same numbers.
CREATE TABLE telegram_places (
    place INTEGER PRIMARY KEY,
    busy_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE telegram_chat_turns (
    chat_id INTEGER PRIMARY KEY,
    busy_until REAL NOT NULL
);
