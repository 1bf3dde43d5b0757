"""Results: request records, the one Summary function, and Locust/CloudWatch-format output."""
