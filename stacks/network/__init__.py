"""Network constructs: the VPC the cluster runs in."""

from .vpc import EksVpc

__all__ = ["EksVpc"]
