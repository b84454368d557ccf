"""`check --ray`, `eval --ray` and `bench --ray`: the images spread over the workers of a Ray cluster with Ray Data.

    run = check_on_ray("model.pt", "model.engine", "val.json", tolerances_from("fp16"), address="auto")
    metrics = evaluate_on_ray("model.onnx", dataset, batch_size=2, address="local")
    report = bench_on_ray(["model.engine"], ["auto"], image_paths, BenchSettings(iterations=5), address="auto")

Only the per-image work moves: a Ray Data `map_batches` over the image paths (check) or the evaluation
batches (eval) runs `Worker`, a callable class whose actors load the predictor(s) once each (check: the
reference and the artifact, on the same images, in runtime/check.py `load_pair`), then call the same per-image
step the single-process path calls (`check_image` -> runtime/check.py `timed_predict`; `eval_batch` ->
runtime/evaluate.py `evaluate_batch`; `bench_batch` -> runtime/bench.py `timed_call`). The driver gathers the
results, puts them back in the single-process order and aggregates them once with the single-process code
(runtime/check.py `side_run`/`finish_check`, runtime/evaluate.py `coco_metrics`, runtime/bench.py `bench_report`):
the report is the single-process report, timings aside. bench's report adds a "ray" section
(runtime/bench.py `cluster_section`): images per second of wall time across the cluster and per worker.

Fault tolerance is Ray's: Ray Data creates its map actors with `max_restarts=-1` and `max_task_retries=-1`
(its defaults for an actor pool; passing them to `map_batches` is deprecated since Ray 2.60), so an actor whose
process dies is started again (its predictors reloaded) and the image it held is run again. A worker asks Ray
for one CPU, so Ray runs PyTorch in it on one thread (OMP_NUM_THREADS=1), and for one GPU when a model is a
TensorRT engine. The report is byte-identical to a single-process run whose per-image computation is the
same: the same kind of CPU/GPU and the same threads per model call (a different thread count changes float
sums in the last bits, so the report's decimals, not its verdict).
Ray is the `[ray]` extra, imported here only inside functions (the base install has no ray).
"""

from __future__ import annotations

import logging
import pickle
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from maskrcnn_deploy.common.errors import BackendUnavailableError, BadInputError, UsageError
from maskrcnn_deploy.common.extras import require_extra
from maskrcnn_deploy.common.progress import Progress
from maskrcnn_deploy.model.data.images import ImageLoadError, images_and_annotations, load_rgb
from maskrcnn_deploy.runtime import parity
from maskrcnn_deploy.runtime.check import CheckRun, PredictorInfo, finish_check, load_pair, side_run, timed_predict

__all__ = ["ENGINE_SUFFIXES", "ray_session", "Worker", "map_on_ray", "check_setup", "check_image", "check_on_ray",
           "eval_setup", "eval_batch", "evaluate_on_ray", "worker_count", "gpus_per_worker",
           "bench_setup", "bench_batch", "bench_on_ray"]

ENGINE_SUFFIXES = (".engine", ".plan")  # a worker running one of these asks Ray for a GPU


@contextmanager
def ray_session(address: str | None, needed_by: str) -> Iterator[Any]:
    """The `ray` module, connected: "local" (or None) starts a local Ray, "auto" joins the cluster the environment
    names (RAY_ADDRESS or the one `ray start` left), anything else is a cluster address. A Ray already
    initialised in this process is used as it is and left running. MissingExtraError (exit 3) without ray."""
    require_extra("ray", needed_by)
    import ray
    import ray.data

    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address or "local", include_dashboard=False, logging_level="WARNING")
        except ConnectionError as err:  # "auto" or an address with no cluster behind it
            raise UsageError(f"--ray {address}: no Ray cluster to join ({err}); start one with `ray start` or "
                             "give no address for a local Ray") from None
    ray.data.DataContext.get_current().enable_progress_bars = False  # our Progress line counts images instead
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # not its "starting/finished execution" lines
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


class Worker:
    """One Ray actor: `setup(*setup_args)` once (loading the predictors), then each batch of rows
    {"key": [B] int, "item": [B] pickled item} -> {"key": [B], "result": [B] pickled step(state, item)}.

    A project error in setup (a corrupt model file, a missing backend: common/errors.py) is kept and sent back
    as every result, for the driver to raise as the single-process run would; raised here, Ray would
    start the actor again and again and the CLI would see a Ray error instead of the one-line message."""

    def __init__(self, setup: Callable[..., Any], setup_args: tuple, step: Callable[[Any, Any], Any]):
        self.state, self.error, self.step = None, None, step
        try:
            self.state = setup(*setup_args)
        except (BadInputError, BackendUnavailableError) as err:
            self.error = err

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.error is not None:
            results = [pickle.dumps(self.error)] * len(batch["key"])
        else:
            results = [pickle.dumps(self.step(self.state, pickle.loads(item))) for item in batch["item"]]
        return {"key": np.asarray(batch["key"]), "result": np.array(results, dtype=object)}


def map_on_ray(items: Sequence[Any], setup: Callable[..., Any], setup_args: tuple, step: Callable[[Any, Any], Any],
               workers: int | None = None, num_gpus: float = 0.0, weights: Sequence[int] | None = None,
               desc: str = "ray", on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """[step(state, item) for item in items], computed on `workers` Ray actors (default: one per GPU when
    num_gpus, else one per CPU of the cluster), in item order. One item per task, so a retried task redoes one
    item. Progress counts `weights` (images per item, default 1) done across the cluster; `on_result(i, result)`
    runs in this process as each result arrives (eval journals it there)."""
    import ray

    weights = list(weights) if weights is not None else [1] * len(items)
    results: list[Any] = [None] * len(items)
    if not items:
        return results
    workers = worker_count(workers, num_gpus)
    rows = [{"key": i, "item": pickle.dumps(item)} for i, item in enumerate(items)]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        Worker, fn_constructor_args=(setup, setup_args, step), batch_size=1, batch_format="numpy",
        concurrency=min(workers, len(items)), num_cpus=1, num_gpus=num_gpus or None)
    progress = Progress(sum(weights), desc, interval=5.0)
    done = 0
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for key, payload in zip(batch["key"], batch["result"]):
                key = int(key)
                results[key] = pickle.loads(payload)
                if isinstance(results[key], BaseException):  # a worker's setup failed (see Worker), or its step
                    raise results[key]
                if on_result is not None:
                    on_result(key, results[key])
                done += weights[key]
                progress.update(done)
    except Exception as err:
        raise _project_error(err) or err
    return results


def worker_count(workers: int | None, num_gpus: float) -> int:
    """`workers`, or by default one per GPU of the cluster when a worker takes a GPU, else one per CPU."""
    import ray

    resources = ray.cluster_resources()
    return workers or max(1, int(resources.get("GPU", 0) if num_gpus else resources.get("CPU", 1)))


def gpus_per_worker(models: Sequence[str | Path]) -> float:
    """1.0 when one of `models` is a TensorRT engine (the worker asks Ray for a GPU), else 0.0."""
    return 1.0 if any(Path(m).suffix.lower() in ENGINE_SUFFIXES for m in models) else 0.0


def _project_error(err: BaseException) -> BaseException | None:
    """The project's own error (a bad input, a missing backend: common/errors.py) that a worker raised and Ray
    wrapped, so the CLI prints its one line and exit code; None for anything else."""
    found, seen = None, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (BadInputError, BackendUnavailableError)) and not type(err).__module__.startswith("ray"):
            found = err
        err = getattr(err, "cause", None) or err.__cause__
    return found


# ------------------------------------------------------------------------------------------------ check
def check_setup(reference: str, artifact: str, threads: int | None, checkpoint: dict | None, backend: str = "auto"):
    """A check worker's state: (reference predictor, artifact predictor, their PredictorInfo)."""
    ref, art = load_pair(reference, artifact, threads, checkpoint, backend)
    return ref, art, (PredictorInfo.of(ref), PredictorInfo.of(art))


def check_image(state, path: str) -> dict:
    """One image through both sides: {"reference": (detection, seconds), "artifact": (..), "info": (ref, art)},
    or {"error": why} when the image cannot be read."""
    ref, art, info = state
    try:
        image = load_rgb(path)
    except ImageLoadError as err:
        return {"error": str(err)}
    return {"reference": timed_predict(ref, image), "artifact": timed_predict(art, image), "info": info}


def _gather_check(results: list[dict], paths: Sequence[Path], coco, ids, data, reference, artifact,
                  tolerances: parity.Tolerances) -> CheckRun:
    """The CheckRun of the workers' per-image results (in image order), as the single-process run builds it."""
    unreadable, kept = {}, []
    for path, result in zip(paths, results):
        if "error" not in result:
            kept.append((Path(path), result))
        elif coco is not None:  # AP needs every annotated image
            raise ImageLoadError(result["error"])
        else:
            unreadable[Path(path)] = result["error"]
            print(result["error"], file=sys.stderr)
    if not kept:
        raise ImageLoadError(f"none of the {len(paths)} images in {data} could be read (see above)")
    sides = []
    for k, (role, model) in enumerate((("reference", reference), ("artifact", artifact))):
        detections = [r[role][0] for _, r in kept]
        latencies = [r[role][1] for _, r in kept]
        sides.append(side_run(model, kept[0][1]["info"][k], detections, latencies, coco, ids))
    return finish_check(sides[0], sides[1], tolerances, [p for p, _ in kept], unreadable)


def check_on_ray(reference: str | Path, artifact: str | Path, data: str | Path, tolerances: parity.Tolerances,
                 max_images: int | None = None, threads: int | None = None, checkpoint: dict | None = None,
                 address: str | None = "local", workers: int | None = None,
                 step: Callable[[Any, str], dict] = check_image, backend: str = "auto") -> CheckRun:
    """runtime/check.py `run_check` with the images spread over Ray workers (see the module docstring); the same
    CheckRun apart from latencies. step: the per-image step (a test wraps it to kill a worker once)."""
    with ray_session(address, "`maskrcnn-deploy check --ray`"):
        paths, coco, ids = images_and_annotations(data, max_images)
        gpus = gpus_per_worker((reference, artifact))
        results = map_on_ray([str(p) for p in paths], check_setup,
                             (str(reference), str(artifact), threads, checkpoint, backend),
                             step, workers, gpus, desc="check (reference + artifact, ray)")
    return _gather_check(results, paths, coco, ids, data, reference, artifact, tolerances)


# ------------------------------------------------------------------------------------------------- eval
def eval_setup(model: str, ann_file: str, image_dir: str, batch_size: int, mask_threshold: float,
               checkpoint: dict | None):
    """An eval worker's state: (predictor, its dataset, batch_size, mask_threshold)."""
    from maskrcnn_deploy.model.data.coco import CocoDetectionDataset
    from maskrcnn_deploy.runtime.load import load

    return load(model, **(checkpoint or {})), CocoDetectionDataset(ann_file, image_dir), batch_size, mask_threshold


def eval_batch(state, indices: list[int]) -> tuple[int, dict[str, list[dict]]]:
    """One evaluation batch: (the predictor's class count, runtime/evaluate.py `evaluate_batch`'s results)."""
    from maskrcnn_deploy.runtime.evaluate import evaluate_batch

    predictor, dataset, batch_size, mask_threshold = state
    return predictor.config.num_classes, evaluate_batch(predictor, dataset, indices, batch_size, mask_threshold)


def evaluate_on_ray(model: str | Path, dataset, batch_size: int = 2, mask_threshold: float = 0.5,
                    max_images: int | None = None, journal=None, checkpoint: dict | None = None,
                    address: str | None = "local", workers: int | None = None) -> dict:
    """runtime/evaluate.py `evaluate_predictor` with its batches spread over Ray workers: the same batches, the
    same journal (results recorded here as they arrive, batches it holds skipped), the same metrics. The model is
    loaded only on the workers; UsageError when its class count is not the dataset's."""
    from maskrcnn_deploy.runtime.evaluate import coco_metrics, eval_batches

    batches = eval_batches(dataset, batch_size, max_images)
    image_ids = [int(dataset.image_ids[i]) for batch in batches for i in batch]
    results_of = journal.entries if journal is not None else {}  # str(image id) -> COCO results
    todo = [b for b in batches if not all(str(int(dataset.image_ids[i])) in results_of for i in b)]
    if len(todo) < len(batches):
        print(f"resuming: {len(image_ids) - sum(map(len, todo))} of {len(image_ids)} images already evaluated "
              f"({journal.path})", file=sys.stderr)

    def record(_: int, result: tuple[int, dict]) -> None:
        num_classes, per_image = result
        if num_classes != dataset.num_classes:
            raise UsageError(f"{model} predicts {num_classes} classes (background included) but {dataset.ann_file} "
                             f"has {dataset.num_classes}; evaluate on data with the same categories")
        for image_id, results in per_image.items():
            if journal is not None:
                journal.record(image_id, results)
            else:
                results_of[image_id] = results

    gpus = gpus_per_worker((model,))
    setup_args = (str(model), str(dataset.ann_file), str(dataset.image_dir), batch_size, mask_threshold, checkpoint)
    with ray_session(address, "`maskrcnn-deploy eval --ray`"):
        map_on_ray(todo, eval_setup, setup_args, eval_batch, workers, gpus, weights=[len(b) for b in todo],
                   desc="eval (ray)", on_result=record)
    return coco_metrics(dataset, image_ids, results_of)


# ------------------------------------------------------------------------------------------------ bench
def bench_setup(artifacts: list[str], backends: list[str], threads: int | None, checkpoint: dict | None,
                warmup_paths: list[str], settings):
    """A bench worker's state: (predictors, worker label "host/actor", machine_info(), batch size), after
    runtime/bench.py `warm_up` (settings.warmup untimed calls per predictor) on the images of warmup_paths."""
    import ray

    from maskrcnn_deploy.runtime import bench
    from maskrcnn_deploy.runtime.load import load

    predictors = [load(path, threads=threads, backend=backend, **(checkpoint or {}))
                  for path, backend in zip(artifacts, backends)]
    torch = sys.modules.get("torch")  # a checkpoint runs on torch's threads (a one-CPU Ray worker: 1 by default)
    if torch is not None and threads:
        torch.set_num_threads(threads)
    bench.warm_up(predictors, [[load_rgb(p) for p in warmup_paths]], settings)
    worker = f"{socket.gethostname()}/{ray.get_runtime_context().get_actor_id()[:8]}"  # kept when Ray restarts it
    return predictors, worker, bench.machine_info(), settings.batch_size


def bench_batch(state, paths: list[str]) -> dict | ImageLoadError:
    """One batch decoded, then one timed call per artifact (runtime/bench.py `timed_call`, decoding outside it):
    {"calls": [(seconds, {stage: seconds}, CallSpan)] per artifact, "machine": .., "info": [(backend, static
    batch, input size)] per artifact}; the ImageLoadError of an unreadable image (map_on_ray raises it)."""
    from maskrcnn_deploy.runtime import bench

    predictors, worker, machine, batch_size = state
    try:
        batch = [load_rgb(p) for p in paths]  # uint8 [H,W,3] each
    except ImageLoadError as err:
        return err
    calls = []
    for k, predictor in enumerate(predictors):
        start = time.time()
        seconds, stages = bench.timed_call(predictor, batch, batch_size)
        calls.append((seconds, stages, bench.CallSpan(worker, k, len(batch), start, time.time())))
    info = [(p.backend, p.fixed_batch, tuple(p.input_size) if p.input_size else None) for p in predictors]
    return {"calls": calls, "machine": machine, "info": info}


def bench_on_ray(artifacts: Sequence[str | Path], backends: Sequence[str], paths: Sequence[str | Path], settings,
                 checkpoint: dict | None = None, address: str | None = "local", workers: int | None = None,
                 step: Callable[[Any, list[str]], Any] = bench_batch) -> dict:
    """runtime/bench.py's report (bench_report) of `settings.iterations` passes over `paths` in batches of
    settings.batch_size, the calls spread over Ray workers that each load every artifact once and warm it up;
    the artifacts take turns call by call on each worker. Latency samples and stage times are gathered from every
    worker; the "ray" section (bench.cluster_section) gives images per second across the cluster and per worker;
    "machine" is the first result's worker's."""
    from maskrcnn_deploy.runtime import bench

    batches = bench.batches_of([str(p) for p in paths], settings.batch_size)
    items = batches * settings.iterations
    gpus = gpus_per_worker(artifacts)
    setup_args = ([str(a) for a in artifacts], list(backends), settings.threads, checkpoint, batches[0], settings)
    with ray_session(address, "`maskrcnn-deploy bench --ray`"):
        count = min(worker_count(workers, gpus), len(items))
        results = map_on_ray(items, bench_setup, setup_args, step, count, gpus, weights=[len(b) for b in items],
                             desc="bench (ray)")
    times = [bench.ArtifactTimes(Path(a).name, str(a), *info) for a, info in zip(artifacts, results[0]["info"])]
    spans = []
    for result in results:
        for record, (seconds, stages, span) in zip(times, result["calls"]):
            record.add(seconds, stages, span.images)
            spans.append(span)
    report = bench.bench_report(times, settings, results[0]["machine"], num_images=len(paths))
    report["ray"] = bench.cluster_section(spans, [t.name for t in times], address or "local", count)
    return report
