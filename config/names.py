"""Names more than one part of the product must agree on: each has its home here.

Charts, stacks and the configuration's defaults import them from here; none is spelt out twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType

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

#: The chat UI (seed ch6's ``chatbot-ui-*`` objects, charts/chat_ui.py); the inference chart's NetworkPolicy
#: admits its pods (``CHAT_UI_POD_LABELS``) to the model.
CHAT_UI_NAME = "chatbot-ui"
CHAT_UI_DEPLOYMENT = f"{CHAT_UI_NAME}-deployment"
CHAT_UI_SERVICE = f"{CHAT_UI_NAME}-service"
CHAT_UI_HPA = f"{CHAT_UI_NAME}-hpa"
CHAT_UI_VPA = f"{CHAT_UI_NAME}-vpa"
CHAT_UI_POD_LABELS = MappingProxyType({"app": CHAT_UI_NAME})
