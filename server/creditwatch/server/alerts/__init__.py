"""Alert fan-out: each replica tails the outbox and feeds its own subscribers."""
