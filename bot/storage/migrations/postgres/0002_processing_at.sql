-- When a poll first saw the job PROCESSING: how long processing takes is learnt from it.
ALTER TABLE jobs ADD COLUMN processing_at DOUBLE PRECISION;
