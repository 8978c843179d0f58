"""A stand-in for `sendmail -G -i -f SENDER -- RECIPIENT...` that submits by SMTP.

For the pipe-filter tests: pipe(8) runs the filter as an unprivileged user, and
Postfix's own sendmail refuses a private instance's config directory to one
(`alternate_config_directories` of the system's main.cf). This stand-in hands the
message to the private instance's reinjection listener instead, as another MTA's
sendmail would. Usage: smtp_sendmail.py PORT -G -i -f SENDER -- RECIPIENT...
Exit status 0 when the listener took the message, 75 otherwise.
"""

from __future__ import annotations

import smtplib
import sys


def main(argv: list[str]) -> int:
    port, arguments = int(argv[0]), argv[1:]
    separator = arguments.index("--")
    options, recipients = arguments[:separator], arguments[separator + 1 :]
    if options[:3] != ["-G", "-i", "-f"] or len(options) != 4 or not recipients:
        print(f"unexpected arguments: {arguments}", file=sys.stderr)
        return 64
    data = sys.stdin.buffer.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            client.sendmail(options[3], recipients, data)
    except (smtplib.SMTPException, OSError) as error:
        print(f"reinjection failed: {error}", file=sys.stderr)
        return 75
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
