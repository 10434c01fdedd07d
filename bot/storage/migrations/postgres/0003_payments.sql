-- Telegram Stars: the price and invoice of each job, and every payment with its refund.
ALTER TABLE jobs ADD COLUMN price_stars INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN invoice_no INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN invoice_message_id BIGINT;
ALTER TABLE jobs ADD COLUMN charge_id TEXT;
CREATE TABLE payments (
    -- telegram_payment_charge_id: a re-delivered successful_payment finds its row.
    charge_id TEXT PRIMARY KEY,
    provider_charge_id TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    chat_id BIGINT NOT NULL,
    job_id BIGINT REFERENCES jobs(id),
    payload TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    paid_at DOUBLE PRECISION NOT NULL,
    refund TEXT NOT NULL DEFAULT 'none',
    refund_reason TEXT,
    refund_due_at DOUBLE PRECISION,
    refund_attempts INTEGER NOT NULL DEFAULT 0,
    next_refund_at DOUBLE PRECISION,
    refunded_at DOUBLE PRECISION,
    refund_told_at DOUBLE PRECISION
);
CREATE INDEX payments_job ON payments(job_id);
CREATE INDEX payments_user ON payments(user_id, paid_at);
CREATE INDEX payments_refund ON payments(refund, next_refund_at);
