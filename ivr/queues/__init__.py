"""Agent queues: routing state in Redis, and wait-time estimation (`ivr.queues.estimator`, pure)."""
