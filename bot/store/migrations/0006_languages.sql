-- 6: the language each job's member reads, for its status, result and failure.

ALTER TABLE jobs ADD COLUMN language TEXT;
