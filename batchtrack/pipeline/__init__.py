"""The batch job: list → plan clips → track clips in an actor pool → write Parquet → commit."""
