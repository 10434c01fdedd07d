-- Telegram update ids already taken (webhook mode): Telegram retries an update until it
-- gets a 2xx and a load balancer may hand it to another instance, so each is claimed
-- here once. Rows older than a day are pruned; Telegram does not resend that late.
CREATE TABLE updates (
    update_id BIGINT PRIMARY KEY,
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX updates_by_received_at ON updates (received_at);
