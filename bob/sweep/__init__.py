"""`bob sweep`: a YAML grid → RunSpecs → a plan that extracts once and fits many → an executor."""
