"""The durable spool: journal storage, delivery with retries, bounces."""
