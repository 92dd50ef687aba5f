"""Did the tune help, and what did it cost? Held-out score, forgetting check, training-health verdict and
A/B summary for a run, written as the run's scorecard (see scorecard.evaluate_run)."""
