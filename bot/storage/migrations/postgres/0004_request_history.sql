-- What a submit sent, stored with SUBMITTING before the POST: with the job's seed, the
-- image URL names the request in Segmind's request history when its answer is lost.
ALTER TABLE jobs ADD COLUMN image_url TEXT;
ALTER TABLE jobs ADD COLUMN submit_sent_at DOUBLE PRECISION;
