"""The Discord side of a job's life: the first answer, status messages, the result, final notices, and what a
member is told at their next use."""
