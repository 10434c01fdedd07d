-- Telegram Stars: the price and invoice of each job, and every payment with its refund.
ALTER TABLE jobs ADD COLUMN price_stars INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN invoice_no INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN invoice_message_id INTEGER;
ALTER TABLE jobs ADD COLUMN charge_id TEXT;
CREATE TABLE payments (
    -- telegram_payment_charge_id: a re-delivered successful_payment finds its row.
    charge_id TEXT PRIMARY KEY,
    provider_charge_id TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    job_id INTEGER REFERENCES jobs(id),
    payload TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    paid_at REAL NOT NULL,
    refund TEXT NOT NULL DEFAULT 'none',
    refund_reason TEXT,
    refund_due_at REAL,
    refund_attempts INTEGER NOT NULL DEFAULT 0,
    next_refund_at REAL,
    refunded_at REAL,
    refund_told_at REAL
);
CREATE INDEX payments_job ON payments(job_id);
CREATE INDEX payments_user ON payments(user_id, paid_at);
CREATE INDEX payments_refund ON payments(refund, next_refund_at);
