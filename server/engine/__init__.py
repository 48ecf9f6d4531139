"""Runs pipelines: the engine and its serving state, the executor, deadlines, step context, queue and schedules."""
