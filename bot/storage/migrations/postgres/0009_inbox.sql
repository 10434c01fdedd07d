-- The inbox (bot/telegram/inbox.py): an update is stored with its claim, in the same
-- statement, before Telegram gets its 200, and marked handled once the handlers are
-- done with it. An instance that dies in between leaves it unhandled: once its holder's
-- lease lapses (owner, lease_until; renewed while it is handled) another instance, or
-- the next start, takes it (attempts counts the tries) and handles it again. Claims made
-- before this migration have no body and are taken as handled.
ALTER TABLE updates ADD COLUMN body TEXT;
ALTER TABLE updates ADD COLUMN owner TEXT;
ALTER TABLE updates ADD COLUMN lease_until DOUBLE PRECISION;
ALTER TABLE updates ADD COLUMN handled_at DOUBLE PRECISION;
ALTER TABLE updates ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
UPDATE updates SET handled_at = received_at;
CREATE INDEX updates_unhandled ON updates (lease_until) WHERE handled_at IS NULL;
