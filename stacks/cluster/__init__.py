"""EKS cluster constructs: control plane, node security group and role, nodegroups, managed add-ons."""
