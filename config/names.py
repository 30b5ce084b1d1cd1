"""Names more than one part of the product must agree on: each has its home here.

Charts, stacks and the configuration's defaults import them from here; none is spelt out twice.
"""

from __future__ import annotations

#: Label every node of this product carries; workloads select on it (values: :data:`NODE_CLASSES`).
NODE_CLASS_LABEL = "llama-eks/node-class"
#: The node classes: the system nodegroup, GPU nodes (nodegroup or Karpenter), Karpenter's CPU pool.
NODE_CLASSES = ("system", "gpu", "general")

#: Taint of every GPU node (managed nodegroup and Karpenter alike); GPU workloads tolerate it.
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "true"
GPU_TAINT_EFFECT = "NoSchedule"
#: Extended resource the NVIDIA device plugin advertises (same name as the taint key, by convention).
GPU_RESOURCE = "nvidia.com/gpu"
