"""The cluster's gateway for real, on loopback: the LiteLLM proxy (its own venv, ``.venv-gateway``) started with
``deployments/litellm/config.yaml``, in front of ``transformers serve`` (the project venv) serving a tiny model
made at test time (testkit/tiny_llm.py). Nothing leaves 127.0.0.1: every other destination goes to a dead proxy.

What the test configuration changes, and only that (``local_config``):
- ``default`` (vLLM on starlord) points at the local model server, with test prices so that costs are numbers;
- ``embeddings`` points at testkit/inference_openai_server.py: no server installable here serves
  ``/v1/embeddings`` (``transformers serve`` has chat and completions only);
- every cloud deployment (Gemini, OpenRouter) answers with LiteLLM's own ``mock_response``, so a fallback
  to it is answered offline, by the gateway, and says which deployment it was.
"""

from __future__ import annotations

import copy
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testkit.cluster import REPO, Proc, clean_env, free_port, wait_healthy
from testkit.inference_openai_server import FakeOpenAIState, run_fake_openai
from testkit.tiny_llm import build_tiny_llm

CONFIG = REPO / "deployments" / "litellm" / "config.yaml"
GATEWAY_VENV = Path(os.environ.get("SWARM_GATEWAY_VENV", str(REPO / ".venv-gateway")))
LITELLM = GATEWAY_VENV / "bin" / "litellm"
TRANSFORMERS = Path(sys.executable).parent / "transformers"

# USD per token for the local model in the tests; the cluster's config says 0 (vLLM is free).
TEST_INPUT_COST = 1e-6
TEST_OUTPUT_COST = 2e-6
LOCAL_GROUPS = {"default", "embeddings"}


@dataclass
class Gateway:
    url: str  # the proxy's root; the OpenAI API is under /v1
    api_key: str  # the proxy's master key (a client's Bearer token)
    model_server_url: str  # transformers serve's root
    embeddings: FakeOpenAIState  # the embeddings server behind the gateway
    log_dir: Path
    chat_model: str = "default"
    embedding_model: str = "embeddings"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


def local_config(base: dict[str, Any], model_dir: Path, model_server_url: str, embeddings_url: str) -> dict[str, Any]:
    """The repository's gateway configuration with the local deployments pointed at this machine's servers and
    the cloud ones answered by LiteLLM itself; router settings and fallbacks stay as written."""
    config = copy.deepcopy(base)
    for deployment in config["model_list"]:
        params, info = deployment["litellm_params"], deployment.setdefault("model_info", {})
        if deployment["model_name"] == "default":
            # transformers serve is pinned to the model folder: the request must name it
            params.update(model=f"hosted_vllm/{model_dir}", api_base=f"{model_server_url}/v1", api_key="none")
            info.update(input_cost_per_token=TEST_INPUT_COST, output_cost_per_token=TEST_OUTPUT_COST)
        elif deployment["model_name"] == "embeddings":
            params.update(api_base=f"{embeddings_url}/v1", api_key="none")
        else:
            params.update(api_key="offline", mock_response=f"answered by {info['id']}")
    return config


def offline_env(**extra: str) -> dict[str, str]:
    """Loopback only; litellm's price table from the package, never downloaded."""
    return clean_env(
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_TELEMETRY="False",
        **extra,
    )


@contextmanager
def run_gateway(workdir: Path, startup_timeout: float = 240) -> Iterator[Gateway]:
    """Start the model server and the proxy side by side (about 45 s on two busy cores); stop both after."""
    if not LITELLM.exists():
        raise FileNotFoundError(f"no LiteLLM proxy at {LITELLM}: scripts/install.sh --test builds {GATEWAY_VENV}")
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    model_dir = build_tiny_llm(workdir / "tiny-llm")
    with ExitStack() as stack:
        embeddings = stack.enter_context(run_fake_openai(model="embeddings"))
        model_port, proxy_port = free_port(), free_port()
        model_server_url = f"http://127.0.0.1:{model_port}"
        config = local_config(yaml.safe_load(CONFIG.read_text()), model_dir, model_server_url, embeddings.url)
        config_path = workdir / "litellm.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        api_key = f"sk-test-{secrets.token_hex(8)}"
        serve_args = [str(TRANSFORMERS), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(model_port)]
        model_server = Proc("transformers-serve", [*serve_args, "--device", "cpu"], offline_env(), logs)
        stack.callback(model_server.stop)
        proxy_args = [str(LITELLM), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(proxy_port)]
        proxy = Proc("litellm", proxy_args, offline_env(LITELLM_MASTER_KEY=api_key), logs, cwd=workdir)
        stack.callback(proxy.stop)
        wait_healthy(model_server, f"{model_server_url}/health", startup_timeout, "transformers serve's /health")
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        wait_healthy(proxy, f"{proxy_url}/health/liveliness", startup_timeout, "the LiteLLM proxy's liveliness")
        yield Gateway(proxy_url, api_key, model_server_url, embeddings, logs)
