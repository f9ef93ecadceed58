-- 9: a job's input images as they were sent (pixels, bytes, type), kept with the job for its Info
-- after the images themselves are gone. A JSON list, image1 first.
ALTER TABLE jobs ADD COLUMN inputs TEXT NOT NULL DEFAULT '[]';
