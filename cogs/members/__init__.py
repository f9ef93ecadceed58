"""What members use: /edit, /imagine, Refine, Reroll, Delete, "Edit images" on a message, /history and /usage."""
