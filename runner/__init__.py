"""What runs in the background: webhook intake, the job queue's workers, scheduled work, the flows."""
