"""The DQR domain: validation of report uploads, publication into the report
tree, and the database records of events, reports and files."""
