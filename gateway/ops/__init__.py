"""Operations: logs, metrics, the top command, worker processes."""
