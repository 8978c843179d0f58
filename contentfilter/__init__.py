"""contentfilter: a content-filter proxy for Postfix, a drop-in for amavisd-new."""

__version__ = "0.1.0"
