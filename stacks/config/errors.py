"""The one error type of configuration loading."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid.

    The message always names the key (dotted path in ``cdk.json`` context), the bad value and what is
    allowed, e.g. ``Invalid config 'network.vpcCidr': '10.0.0.0/33'. Allowed: an IPv4 CIDR ...``
    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"Invalid config '{key}': {value!r}. Allowed: {allowed}.")
