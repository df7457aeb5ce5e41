"""Judging inbound mail: SPF (RFC 7208), DKIM (RFC 6376) and ARC (RFC 8617) verification,
DMARC (RFC 9989), one Authentication-Results field (RFC 8601), ARC sealing, and the
policy hooks that decide."""
