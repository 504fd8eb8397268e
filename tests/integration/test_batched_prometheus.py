"""With Prometheus, each signal is one query for all models: BatchedSource over a real Prometheus."""
from __future__ import annotations

import time
from contextlib import ExitStack

import httpx

from incidentd.sources.batch import BatchedSource
from incidentd.sources.prometheus import PrometheusSource
from tests.incidentd.exposition_servers import exposition_server
from tests.integration.conftest import PrometheusServer, wait_until

MODELS = [f"batch-{i}" for i in range(5)]      # models no other test uses: the Prometheus server is shared


class CountingTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/query_range"):
            self.queries.append(request.url.params["query"])
        return super().handle_request(request)


def test_every_models_read_of_a_signal_is_answered_by_one_query(prometheus: PrometheusServer) -> None:
    with ExitStack() as stack:
        urls = [stack.enter_context(exposition_server(f'model_latency_seconds{{model="{m}",quantile="0.9"}} '
                                                      f'{0.1 * (i + 1)}\n'))
                for i, m in enumerate(MODELS)]
        prometheus.configure([{"job_name": "incidentd-sidecar",
                               "static_configs": [{"targets": [u.removeprefix("http://") for u in urls]}]}])
        direct = PrometheusSource(prometheus.url)

        def all_scraped() -> bool:
            t = time.time()
            got = direct.read_by_model("model_latency_seconds", {"quantile": "0.9"}, t - 20, t, 1.0)
            return all(m in got for m in MODELS)
        assert wait_until(all_scraped, 60)
        transport = CountingTransport()
        src = BatchedSource(PrometheusSource(prometheus.url, client=httpx.Client(transport=transport)), slack=30)
        try:
            now = time.time()
            got = {m: src.read("model_latency_seconds", {"model": m, "quantile": "0.9"}, now - 20, now, 1.0)
                   for m in MODELS}
            assert transport.queries == ['model_latency_seconds{quantile="0.9"}']
            for i, m in enumerate(MODELS):
                assert len(got[m]) == 1, (m, {k: len(v) for k, v in got.items()}, now,
                                          direct.read_by_model("model_latency_seconds", {}, now - 60, now, 1.0))
                (s,) = got[m]
                assert s.values[-1] == 0.1 * (i + 1)
                assert dict(s.labels)["model"] == m
            # The same answer as one query per model, on the batch's grid.
            want = direct.read("model_latency_seconds", {"model": MODELS[0], "quantile": "0.9"}, now - 20, now, 1.0)
            assert want[0].values[-1] == got[MODELS[0]][0].values[-1]
        finally:
            direct.close()
            src.close()
            prometheus.configure([])
