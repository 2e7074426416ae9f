"""Running: the driver schedules stage work on an executor and records what comes back."""
