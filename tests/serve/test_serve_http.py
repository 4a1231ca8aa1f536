"""`eomt serve` over real HTTP: every endpoint, results equal to `Segmenter.predict` (and to the files `eomt
predict` writes), batching under 32 concurrent clients, bad inputs refused without disturbing the service,
backpressure (503), the API key, SIGTERM with requests in flight, and start-up failures as one line."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import LABELS, STUFF, ServerProcess
from PIL import Image
from pycocotools import mask as mask_utils

from eomt.outputs.result_files import write_result
from eomt.predictor import Segmenter
from eomt.processing.image_io import load_image

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}


@pytest.fixture(scope="module")
def segmenter(named_model):
    return Segmenter.from_pretrained(named_model, device="cpu")


@pytest.fixture(scope="module")
def expected(segmenter, images, tmp_path_factory):
    """Per image and task: `Segmenter.predict`'s result and the PNG bytes `eomt predict` writes for it."""
    out = tmp_path_factory.mktemp("predict_files")
    table = {}
    for name, path in images.items():
        for task in ("panoptic", "semantic", "instance"):
            result = segmenter.predict(str(path), task=task)
            stem = f"{path.stem}_{path.suffix[1:]}_{task}"
            write_result(result, load_image(path), stem, out, path)
            png = (out / f"{stem}.png").read_bytes() if task != "instance" else None
            table[name, task] = (result, png)
    return table


def post_image(client: httpx.Client, url: str, path, query: str = "", multipart: bool = False, **kwargs):
    data = path.read_bytes()
    if multipart:
        return client.post(f"{url}/v1/segment{query}", files={"image": (path.name, data)}, **kwargs)
    return client.post(f"{url}/v1/segment{query}", content=data,
                       headers={"Content-Type": CONTENT_TYPES[path.suffix], **kwargs.pop("headers", {})}, **kwargs)


def segments_of(result, task: str) -> list[dict]:
    offset = 1 if task == "panoptic" else 0
    return [{"id": s.id + offset, "label_id": s.label_id, "label": s.label, "score": s.score, "area": s.area,
             "bbox": list(s.bbox), "isthing": s.isthing} for s in result.segments]


def check_json(body: dict, result, png: bytes | None, task: str) -> None:
    """A json answer holds exactly what `Segmenter.predict` found, with the PNG bytes `eomt predict` writes."""
    height, width = result.image_size
    assert (body["task"], body["height"], body["width"]) == (task, height, width)
    segments = [{k: v for k, v in s.items() if k != "rle"} for s in body["segments"]]
    assert segments == segments_of(result, task)
    if task == "instance":
        assert "png" not in body
        decoded = np.stack([mask_utils.decode(s["rle"]) for s in body["segments"]]).astype(bool) if segments else (
            np.zeros((0, height, width), bool))
        assert np.array_equal(decoded, result.masks.numpy())
    else:
        assert base64.b64decode(body["png"]) == png


def test_health_model_and_static_files(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    info = httpx.get(f"{server.url}/v1/model").json()
    assert info["task"] == "panoptic" and info["tasks"] == ["semantic", "instance", "panoptic"]
    assert info["labels"] == {str(i): {"name": n, "isthing": i not in STUFF} for i, n in enumerate(LABELS)}
    assert info["input_size"] == {"height": 64, "width": 64}
    assert (info["backend"], info["dtype"], info["devices"], info["workers"]) == ("torch", "float32", ["cpu"], 2)
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        answer = httpx.get(f"{server.url}{asset}")
        assert answer.status_code == 200 and answer.text, asset
        assert not re.search(r"https?://", answer.text), f"{asset} loads something from the network"
    assert not re.search(r"https?://", page.text)


@pytest.mark.parametrize("task", ["panoptic", "semantic", "instance"])
def test_each_format_equals_predict(server, images, expected, task):
    query = "" if task == "panoptic" else f"?task={task}"
    with httpx.Client(timeout=60) as client:
        for name, path in images.items():
            result, png = expected[name, task]
            for multipart in (False, True):
                answer = post_image(client, server.url, path, query, multipart=multipart)
                assert answer.status_code == 200, answer.text
                check_json(answer.json(), result, png, task)
            joiner = "&" if query else "?"
            hf = post_image(client, server.url, path, f"{query}{joiner}format=hf")
            assert hf.status_code == 200, hf.text
            masks = [np.array(Image.open(io.BytesIO(base64.b64decode(s["mask"])))) for s in hf.json()]
            assert [(s["label"], s["score"]) for s in hf.json()] == [(s.label, s.score) for s in result.segments]
            for segment, mask in zip(result.segments, masks, strict=True):
                assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
                if task == "instance":
                    truth = result.masks[result.segments.index(segment)].numpy()
                else:
                    truth = result.segmentation.numpy() == (segment.label_id if task == "semantic" else segment.id)
                assert np.array_equal(mask == 255, truth)
            bare = post_image(client, server.url, path, f"{query}{joiner}format=png")
            if task == "instance":
                assert bare.status_code == 422 and "format=json" in bare.json()["error"]
            else:
                assert bare.status_code == 200 and bare.headers["content-type"] == "image/png"
                assert bare.content == png


def test_threshold_changes_the_result(server, segmenter, images):
    path = images["coffee.png"]
    answer = post_image(httpx.Client(timeout=60), server.url, path, "?threshold=0.2&format=json")
    reference = segmenter.predict(str(path), threshold=0.2)
    assert [s["score"] for s in answer.json()["segments"]] == [s.score for s in reference.segments]


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)} (\S+)$", text, flags=re.M))


def test_32_concurrent_clients_are_batched_and_equal_predict(server, images, expected):
    before = httpx.get(f"{server.url}/metrics").text
    names = list(images)

    def client_run(index: int) -> list[tuple[str, int, bytes]]:
        answers = []
        with httpx.Client(timeout=120) as client:
            for k in range(8):
                name = names[(index + k) % len(names)]
                answer = post_image(client, server.url, images[name])
                answers.append((name, answer.status_code, answer.content))
        return answers

    with ThreadPoolExecutor(32) as pool:
        answers = [a for run in pool.map(client_run, range(32)) for a in run]
    assert len(answers) == 256
    assert [status for _, status, _ in answers] == [200] * 256, {s for _, s, _ in answers}
    for name, _, content in answers:
        result, png = expected[name, "panoptic"]
        check_json(json.loads(content), result, png, "panoptic")
    after = httpx.get(f"{server.url}/metrics").text
    batches = metric(after, "eomt_batch_size_count") - metric(before, "eomt_batch_size_count")
    single = (metric(after, 'eomt_batch_size_bucket{le="1.0"}') - metric(before, 'eomt_batch_size_bucket{le="1.0"}'))
    images_done = metric(after, "eomt_batch_size_sum") - metric(before, "eomt_batch_size_sum")
    assert images_done == 256
    assert batches - single > 0, "no batch of more than one image under 32 concurrent clients"
    assert batches < 256
    assert metric(after, 'eomt_requests_total{endpoint="/v1/segment",status="200"}') >= 256
    for name in ("eomt_request_duration_seconds_count", "eomt_queue_length", "eomt_images_per_second",
                 "eomt_batch_duration_seconds_count", "eomt_images_total"):
        assert re.search(rf"^{name}(\{{[^}}]*\}})? ", after, flags=re.M), name


def png_of(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 7).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_inputs_are_refused_and_the_service_carries_on(server, images, expected):
    good = images["coffee.png"].read_bytes()
    url = f"{server.url}/v1/segment"
    png = {"Content-Type": "image/png"}

    def chunks():
        for _ in range(24):
            yield b"\0" * 65536  # 1.5 MiB without a Content-Length

    cases = [
        ("body over --max-body-mb", dict(content=b"\0" * (3 * 2**20 // 2), headers=png), 413),
        ("chunked body over --max-body-mb", dict(content=chunks(), headers=png), 413),
        ("image over --max-image-pixels", dict(content=png_of(3000, 2000), headers=png), 413),
        ("not an image", dict(content=b"hello, world" * 10, headers=png), 415),
        ("a text body", dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415),
        ("a JSON body", dict(json={"image": "x"}), 415),
        ("truncated image", dict(content=good[: len(good) // 2], headers=png), 422),
        ("empty body", dict(content=b"", headers=png), 422),
        ("image too small", dict(content=png_of(4, 4), headers=png), 422),
        ("multipart without the image field", dict(files={"picture": ("a.png", good)}), 422),
        ("unknown task", dict(content=good, headers=png, params={"task": "depth"}), 422),
        ("threshold out of range", dict(content=good, headers=png, params={"threshold": "2"}), 422),
        ("threshold not a number", dict(content=good, headers=png, params={"threshold": "high"}), 422),
        ("unknown format", dict(content=good, headers=png, params={"format": "xml"}), 422),
        ("unknown parameter", dict(content=good, headers=png, params={"treshold": "0.5"}), 422),
    ]
    with httpx.Client(timeout=60) as client:
        for what, request, status in cases:
            answer = client.post(url, **request)
            assert answer.status_code == status, f"{what}: {answer.status_code} {answer.text}"
            assert answer.headers["content-type"] == "application/json", what
            assert answer.json()["error"] and "\n" not in answer.json()["error"], what
            after = client.post(url, content=good, headers=png)
            assert after.status_code == 200, f"after {what}: {after.text}"
            check_json(after.json(), *expected["coffee.png", "panoptic"], "panoptic")
        assert client.get(url).status_code == 405 and "error" in client.get(url).json()
        assert client.get(f"{server.url}/no/such/page").json() == {"error": "Not Found"}
    assert server.process.poll() is None


@pytest.fixture(scope="module")
def guarded(named_model):
    """A service with an API key and a queue of 2, whose batches wait a whole second for company."""
    process = ServerProcess([str(named_model), "--max-queue", "2", "--max-batch-size", "8", "--batch-timeout", "1.0"],
                            env={"EOMT_API_KEY": "s3cret"})
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def test_the_api_key_guards_all_but_health_and_the_page(guarded, images):
    key = {"Authorization": "Bearer s3cret"}
    with httpx.Client(timeout=60) as client:
        for path in ("/v1/model", "/metrics"):
            refused = client.get(f"{guarded.url}{path}")
            assert refused.status_code == 401 and "Bearer" in refused.json()["error"], path
            assert refused.headers["www-authenticate"] == "Bearer"
            assert client.get(f"{guarded.url}{path}", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.get(f"{guarded.url}{path}", headers=key).status_code == 200
        assert post_image(client, guarded.url, images["coffee.png"]).status_code == 401
        assert post_image(client, guarded.url, images["coffee.png"], headers=key).status_code == 200
        assert client.get(f"{guarded.url}/health").status_code == 200
        assert client.get(f"{guarded.url}/").status_code == 200
        assert client.get(f"{guarded.url}/static/app.js").status_code == 200


def test_a_full_queue_answers_503_with_retry_after(guarded, images):
    key = {"Authorization": "Bearer s3cret"}

    def send(_: int) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            return post_image(client, guarded.url, images["coffee.png"], headers=key)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {200, 503} and statuses.count(200) >= 2, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert int(answer.headers["retry-after"]) >= 1 and "busy" in answer.json()["error"]
    with httpx.Client(timeout=60) as client:  # the queue drained: served again
        assert post_image(client, guarded.url, images["coffee.png"], headers=key).status_code == 200
        assert "eomt_rejected_total" in client.get(f"{guarded.url}/metrics", headers=key).text


def test_a_request_whose_client_left_gives_its_place_back(guarded, images):
    """The batch a request waits in takes a second to fill; its client gives up after 0.3 s. Its place in the
    queue (of 2) is free again at once: two more requests are both admitted, not one refused with 503."""
    key = {"Authorization": "Bearer s3cret"}
    with httpx.Client(timeout=0.3) as impatient, pytest.raises(httpx.ReadTimeout):
        post_image(impatient, guarded.url, images["coffee.png"], headers=key)
    time.sleep(0.1)

    def send(_: int) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            return post_image(client, guarded.url, images["coffee.png"], headers=key)

    with ThreadPoolExecutor(2) as pool:
        assert [a.status_code for a in pool.map(send, range(2))] == [200, 200]
    metrics = httpx.get(f"{guarded.url}/metrics", headers=key).text
    assert metric(metrics, "eomt_abandoned_total") == 1
    assert metric(metrics, "eomt_requests_in_flight") == 0


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(guarded, images):
    key = {"Authorization": "Bearer s3cret"}
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(timeout=60) as client:
            answers.append(post_image(client, guarded.url, images["chelsea.jpg"], headers=key))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.4)  # both are now waiting in a batch that waits a second for company
    assert guarded.process.poll() is None
    started = time.monotonic()
    code = guarded.stop()
    for thread in threads:
        thread.join(60)
    assert code == 0, guarded.log
    assert [a.status_code for a in answers] == [200, 200]
    assert all(a.json()["segments"] for a in answers)
    assert time.monotonic() - started < 30
    assert "eomt serve: stopped" in guarded.log
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{guarded.url}/health", timeout=5)


def test_start_up_failures_are_one_line_and_exit_1(tmp_path):
    run = subprocess.run([sys.executable, "-m", "eomt", "serve", str(tmp_path / "missing"), "--port", "0"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("eomt serve: error:")]
    assert len(errors) == 1 and "missing" in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "eomt", "serve", str(tmp_path), "--port", str(port)],
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert f"--port {port}: cannot listen there" in run.stderr.strip().splitlines()[-1]
