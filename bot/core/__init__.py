"""The engine's vocabulary: a job, its states, money in micro-dollars, API attempts and quota bounds.

Plain values with no I/O; every other package builds on these and none of these imports them.
"""
