"""Names more than one part of the product must agree on: each has its home here.

Charts, stacks and the configuration's defaults import them from here; none is spelt out twice.
"""

from __future__ import annotations

import json
from pathlib import Path

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

#: Karpenter's GPU NodePool (seed ch6), its CPU NodePool and their EC2NodeClass.
GPU_NODEPOOL_NAME = "eks-gpu-np"
GENERAL_NODEPOOL_NAME = "general-purpose"
NODECLASS_NAME = "default"
#: The node label Karpenter puts the NodePool's name in.
NODEPOOL_LABEL = "karpenter.sh/nodepool"

#: kube-prometheus-stack's namespace and release (Prometheus, Grafana, the DCGM exporter live there).
MONITORING_NAMESPACE = "monitoring"
PROMETHEUS_RELEASE = "kube-prometheus-stack"
#: The in-cluster Prometheus server (the chart's Service is ``<release>-prometheus``).
PROMETHEUS_URL = f"http://{PROMETHEUS_RELEASE}-prometheus.{MONITORING_NAMESPACE}.svc:9090"
#: Label kube-prometheus-stack's default ``serviceMonitorSelector`` matches (the Helm release name).
SERVICE_MONITOR_LABELS = {"release": PROMETHEUS_RELEASE}

#: The seed's model (ch2/ch3): Llama 2 7B chat, Q2_K quantisation (2.83 GB), from Hugging Face.
DEFAULT_MODEL_URI = (
    "https://huggingface.co/TheBloke/Llama-2-7B-Chat-GGUF/resolve/main/llama-2-7b-chat.Q2_K.gguf"
)

#: The seed's test request to ``POST /predict`` (book ch3). A JSON file, so that the pipeline's smoke test
#: (a stdlib-only script on a bare CodeBuild image) reads the same one.
SEED_PREDICT_FILE = Path(__file__).with_name("seed_predict.json")
SEED_PREDICT_REQUEST: dict[str, str] = json.loads(SEED_PREDICT_FILE.read_text())
#: The same request as the compact JSON body of the seed's curl.
SEED_PREDICT_BODY = json.dumps(SEED_PREDICT_REQUEST, separators=(",", ":"))

#: AMI releases of the EKS-optimized Amazon Linux 2023 images are named by date, ``v<YYYYMMDD>``.
AL2023_RELEASE_PATTERN = r"v\d{8}"


def al2023_image_parameter(
    kubernetes_version: str, release: str, *, arch: str = "x86_64", variant: str = "nvidia"
) -> str:
    """The public SSM parameter holding the AMI id of one EKS-optimized AL2023 image: the one place its path
    format lives (Karpenter's ``al2023@<release>`` alias resolves exactly this parameter; a CloudFormation
    parameter of type ``AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>`` on it fails a deploy whose pin
    does not exist). ``release`` is ``v<YYYYMMDD>`` or ``latest`` (the ``recommended`` image);
    ``variant``: ``standard``, ``nvidia`` or ``neuron``; ``arch``: ``x86_64`` or ``arm64``.
    """
    name = (
        "recommended"
        if release == "latest"
        else f"amazon-eks-node-al2023-{arch}-{variant}-{kubernetes_version}-{release}"
    )
    prefix = f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023"
    return f"{prefix}/{arch}/{variant}/{name}/image_id"
