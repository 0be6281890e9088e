"""Where `evaluate`'s batches run: in this process ('local', the default) or over a Ray cluster ('ray').

Both backends run the same pure function on each batch of (image, target) pairs, `attack_chunk`:
it attacks the batch and returns its records and (on request) its outputs on the CPU, and writes
nothing. The caller, `evaluate`, alone completes the records, saves the outputs and appends to the
results file, in the order the batches finish. Attacks are batch-independent (a batch equals one
example at a time, exactly in float64), so how the pairs are sharded changes no record but its
timing fields (`seconds`, and the batch's evenly divided `gradients`/`forwards` where an attack
stops examples early) and `device`.

The Ray backend (`pip install sparseattack[ray]`) connects to a cluster (`address`: None starts a
local one on this machine, 'auto' finds the one `ray start` runs here, 'HOST:6379' or
'ray://HOST:10001' a remote one; a connection this process already holds is reused and left up
for the next run), puts the model (on the CPU) and the images in the object store once, and
submits one task per batch, a bounded number at a time. A task takes the GPU Ray assigns it when
the run's device is cuda (one GPU per task), else the CPU, with torch limited to the task's CPUs;
each worker keeps its own copy of the model between tasks of one run. A task whose worker dies is
run again (`RAY_MAX_RETRIES` times); an error raised by the attack itself is not retried and stops
the run, as it does locally. A driver killed mid-run loses only the batches in flight: the
records of finished batches are in the file, and a rerun resumes.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..validation import ValidationError
from .result import run_attack

BACKENDS = ("local", "ray")
RAY_INSTALL = "pip install sparseattack[ray]"
RAY_MAX_RETRIES = 3

Chunk = Sequence[tuple[int, "int | None"]]


def check_backend(backend: str, address: str | None = None) -> None:
    """Refuse an unknown backend, an address without the Ray backend, and the Ray backend without
    Ray installed (the message names the fix)."""
    if backend not in BACKENDS:
        raise ValidationError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if address is not None:
        if not isinstance(address, str) or not address.strip():
            raise ValidationError(f"address must be a Ray address ('auto', 'HOST:PORT' or 'ray://HOST:PORT'), "
                                  f"got {address!r}")
        if backend != "ray":
            raise ValidationError(f"an address ({address!r}) is for the ray backend only; add --backend ray "
                                  "(evaluate(backend='ray'))")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValidationError(f"backend 'ray' needs Ray, which is not installed: {RAY_INSTALL}") from None


def attack_chunk(method: str | Callable, model: nn.Module, images: Tensor, labels: Tensor, chunk: Chunk,
                 chunk_ids: Sequence, *, untargeted: bool, groups_fn: Callable | None, quantize: bool,
                 params: dict, keep_adv: bool = False) -> tuple[list[dict], Tensor | None]:
    """Attack one batch of pairs: `chunk` holds (position in images, target) pairs, `chunk_ids` the
    images' ids for the records. Returns the records of `AttackResult.records` (without the run's
    configuration) and, if keep_adv, the outputs on the CPU (else None). Writes nothing."""
    idx = torch.tensor([j for j, _ in chunk], device=images.device)
    tgt = None if untargeted else torch.tensor([t for _, t in chunk], device=images.device)
    x = images[idx]
    groups = groups_fn(x) if groups_fn is not None else None
    res = run_attack(method, model, x, labels[idx], targets=tgt, count_groups=groups, quantize=quantize, **params)
    return res.records(list(chunk_ids)), (res.adv.detach().cpu() if keep_adv else None)


def run_local(model, method, images, labels, chunks: list, ids: Sequence, **kw) -> Iterator[tuple]:
    """(chunk, records, outputs, device) per batch, attacked one after the other in this process."""
    for chunk in chunks:
        recs, adv = attack_chunk(method, model, images, labels, chunk, [ids[j] for j, _ in chunk], **kw)
        yield chunk, recs, adv, str(images.device)


def _connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=address, ignore_reinit_error=True)
    except ValueError as err:  # a malformed address; ray:// without Ray Client installed (ray[client])
        raise ValidationError(f"Ray address {address!r}: {err}") from None
    except (ConnectionError, SystemExit) as err:  # no cluster there (Ray exits after its GCS time-out)
        reason = err if isinstance(err, ConnectionError) else "no Ray cluster answered in time"
        raise ValidationError(f"could not connect to the Ray cluster at {address!r}: {reason} (start "
                              "one with `ray start --head`, or leave out the address to start one on this "
                              "machine)") from None


def _cpu_model(model: nn.Module) -> nn.Module:
    """The model with its parameters and buffers on the CPU (a copy if they are elsewhere: the
    caller's model is not moved)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return model if all(t.device.type == "cpu" for t in tensors) else copy.deepcopy(model).cpu()


# One run's model and images on this worker, kept between its tasks: {"key": ..., "data": (model, x, y)}.
_WORKER: dict = {}


def _ray_chunk(refs: list, method, chunk: Chunk, chunk_ids: Sequence, kw: dict) -> tuple:
    """A Ray task: one batch on the device Ray gave this worker (its GPU if it has one, else the
    CPU, with torch's threads limited to the task's CPUs). Returns (records, outputs, device)."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    device = torch.device("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")
    key = tuple(r.hex() for r in refs) + (str(device),)
    if _WORKER.get("key") != key:
        _WORKER.clear()
        model, images, labels = ray.get(list(refs))
        _WORKER["data"] = (model.to(device), images.to(device), labels.to(device))
        _WORKER["key"] = key
    model, images, labels = _WORKER["data"]
    recs, adv = attack_chunk(method, model, images, labels, chunk, chunk_ids, **kw)
    return recs, adv, str(images.device)


_REMOTE = None


def _remote():
    global _REMOTE
    if _REMOTE is None:
        import ray
        _REMOTE = ray.remote(_ray_chunk)
    return _REMOTE


def run_ray(model, method, images, labels, chunks: list, ids: Sequence, *, address: str | None = None,
            max_in_flight: int | None = None, **kw) -> Iterator[tuple]:
    """(chunk, records, outputs, device) per batch, in the order the batches finish on the Ray
    cluster at `address`. At most `max_in_flight` tasks are submitted at a time (default: twice the
    cluster's task slots); tasks still in flight when the consumer stops are cancelled."""
    import ray

    _connect(address)
    cuda = images.device.type == "cuda"
    refs = [ray.put(_cpu_model(model)), ray.put(images.detach().cpu()), ray.put(labels.cpu())]
    task = _remote().options(num_cpus=1, num_gpus=1 if cuda else 0, max_retries=RAY_MAX_RETRIES,
                             retry_exceptions=False)
    if max_in_flight is None:
        slots = ray.cluster_resources().get("GPU" if cuda else "CPU", 1)
        max_in_flight = max(2, 2 * int(slots))
    queue = iter(chunks)
    pending: dict = {}
    try:
        while True:
            while len(pending) < max_in_flight:
                chunk = next(queue, None)
                if chunk is None:
                    break
                pending[task.remote(refs, method, chunk, [ids[j] for j, _ in chunk], kw)] = chunk
            if not pending:
                return
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            chunk = pending.pop(ref)
            recs, adv, device = ray.get(ref)
            yield chunk, recs, adv, device
    finally:
        for ref in pending:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - best effort: the run is ending anyway
                pass


def run_batches(backend: str, model, method, images, labels, chunks: list, ids: Sequence, *,
                address: str | None = None, **kw) -> Iterator[tuple]:
    """The batches of a run on `backend`: (chunk, records, outputs, device) as each finishes. The
    Ray backend connects here, before the first batch is asked for."""
    if backend == "ray":
        if chunks:
            _connect(address)
        return run_ray(model, method, images, labels, chunks, ids, address=address, **kw)
    return run_local(model, method, images, labels, chunks, ids, **kw)
