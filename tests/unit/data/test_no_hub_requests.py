"""Reading local files makes no request to the Hub: `datasets` counts a download of its packaged `csv`
module with a HEAD request on every `load_dataset("csv", data_files=...)`, one per input shard here. A
real HTTP server on loopback stands in for the Hub's bucket and records what reaches it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.data.prepare import prepare


@pytest.fixture
def hub_bucket(monkeypatch):
    """The URL prefix `datasets` counts downloads at, served on loopback; yields the requests' paths."""
    from datasets import config

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (http.server's name)
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(config, "S3_DATASETS_BUCKET_PREFIX", f"http://127.0.0.1:{server.server_port}/datasets")
    monkeypatch.setattr(config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(config, "HF_UPDATE_DOWNLOAD_COUNTS", True)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        yield seen
    finally:
        server.shutdown()


def test_preparing_local_files_sends_nothing_to_the_hub(hub_bucket, tmp_path, job):
    from datasets.load import increase_load_count

    paths = []
    for i in range(3):
        path = tmp_path / f"part-{i}.csv"
        path.write_text("text,label\n" + "".join(f"review {i}-{j},{'pos' if j % 2 else 'neg'}\n" for j in range(20)))
        paths.append(str(path))
    prepared = prepare(job(source="files", paths=tuple(paths)))
    assert prepared.manifest.cleaning.rows_out == 60
    assert hub_bucket == []
    increase_load_count("csv")  # the request the three loads would each have sent: the server does see it
    assert hub_bucket == ["/datasets/csv/csv.py"]
    from datasets import config

    assert config.HF_UPDATE_DOWNLOAD_COUNTS is True  # the user's setting is back after each load
