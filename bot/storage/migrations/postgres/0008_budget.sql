-- One Telegram budget for every instance on this database (bot/telegram/pacing.py).
-- The bot token's places: a message holds one from the moment it is let go until a
-- second after its answer came back, so no second at Telegram holds more messages than
-- there are places in use (30). busy_until is in the database server's clock (Unix
-- seconds): one clock for every instance; while a message is on its way it is the
-- moment a place held by an instance that died comes free again.
CREATE TABLE telegram_places (
    place INTEGER PRIMARY KEY,
    busy_until DOUBLE PRECISION NOT NULL DEFAULT 0
);
INSERT INTO telegram_places (place) SELECT generate_series(1, 30);
-- Each chat's turn: one message on its way at a time, the next one a gap (1 s in a
-- private chat, 3 s in a group: 20 a minute) after its answer. Rows of chats quiet for
-- a minute are deleted now and then.
CREATE TABLE telegram_chat_turns (
    chat_id BIGINT PRIMARY KEY,
    busy_until DOUBLE PRECISION NOT NULL
);
