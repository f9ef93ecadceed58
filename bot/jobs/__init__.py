"""Jobs: their lifecycle (the one mover), admission, the dispatcher, delivery, recovery, the outbox, and the
job kinds (``bot.jobs.kinds``), each a plug-in the rest runs by name."""
