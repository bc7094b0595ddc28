"""Time-limited TURN credentials in coturn's ``use-auth-secret`` (TURN REST API) scheme.

The user name is ``<expiry unix time>:<label>`` and the password the base64 HMAC-SHA1 of the user
name under the secret shared with the TURN server, which checks both and refuses the credentials
once the expiry time has passed. Pure: the clock is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def mint(secret: str, ttl: float, now: float, label: str = "p2pcp") -> tuple[str, str]:
    """(username, credential) valid until ``now + ttl``."""
    username = f"{int(now + ttl)}:{label}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")
