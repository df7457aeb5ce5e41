"""Tools built on the client and the server (async_smtp's ``tools``): the content-filter
round trip (F126)."""

from smtpx.tools.content_filter import ContentFilter, ContentFilterError

__all__ = ["ContentFilter", "ContentFilterError"]
