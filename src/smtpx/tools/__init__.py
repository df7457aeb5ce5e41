"""Tools built on the client and the server (async_smtp's ``tools``): the content-filter
round trip (F126, :mod:`smtpx.tools.content_filter`) and the transforms for comparing the
output of two MTAs (F127, F128, :mod:`smtpx.tools.transform`); the mail log read back
(F129, :mod:`smtpx.tools.logs`)."""

from smtpx.tools.content_filter import ContentFilter, ContentFilterError

__all__ = ["ContentFilter", "ContentFilterError"]
