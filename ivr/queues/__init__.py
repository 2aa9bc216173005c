"""Agent queues: wait-time estimation (`ivr.queues.estimator`)."""
