-- 11: region edits. What a region edit repaints, as its member asked: the ticked cells of a 3×3 grid over
-- image1 and whether their own mask came with the images, as JSON; NULL for every other job. The mask
-- sent is kept with the job's inputs, after its images.
ALTER TABLE jobs ADD COLUMN region TEXT;
