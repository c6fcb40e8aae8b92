"""The command-line programs: ``dqr-upload`` (and later ``dqr-ping``)."""
