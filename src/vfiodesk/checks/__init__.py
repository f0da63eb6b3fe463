"""Pure judgements over probed host facts: findings with hints, group roles."""
