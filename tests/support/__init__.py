"""Helpers shared by the test suite and the benchmarks.

Plain Python, no pytest: `daemons` starts real clamd, spamd, Postfix and filter
processes on free loopback ports; `sink` is the recording next hop; `net` has the
misbehaving servers used for fault injection; `messages` builds test mail.
"""
