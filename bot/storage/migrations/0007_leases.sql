-- Leases (bot/core/leases.py): the instance driving a job, and the one working a due
-- refund, until lease_until (Unix seconds). NULL owner: nobody holds it, any instance
-- may claim it. Every paid step writes only while its row still names the writer with
-- an unlapsed lease. With SQLite only one bot opens the file, so they are never contested.
ALTER TABLE jobs ADD COLUMN owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until REAL;
CREATE INDEX jobs_owner ON jobs(owner) WHERE owner IS NOT NULL;
ALTER TABLE payments ADD COLUMN owner TEXT;
ALTER TABLE payments ADD COLUMN lease_until REAL;
