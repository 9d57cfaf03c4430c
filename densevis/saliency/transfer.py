"""Host <-> device copies of the engine without host synchronisation inside a batch.

Inputs go to the GPU from pinned (page-locked) host memory with ``non_blocking=True``; the
maps of a (sub-)batch come back as ONE asynchronous copy into pinned memory, with a CUDA event
that :meth:`PendingExplanation.result` waits on. So the host only waits once per batch, when it
needs the numbers, and can read and write files meanwhile (see ``explain_file``). On the CPU
every function here is a plain pass-through.

Examples
--------
>>> import torch
>>> from densevis.saliency.capture import Explanation
>>> done = to_host(Explanation({("vanilla", None): torch.ones(2, 4, 4)}, torch.zeros(2, 2),
...                            torch.tensor([0, 1])))
>>> done.result().maps["vanilla", None].shape
torch.Size([2, 4, 4])
"""

from __future__ import annotations

import torch

from densevis.saliency.capture import Explanation


def pinned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in page-locked memory (a CPU tensor; a no-op without CUDA or when pinned)."""
    if tensor.device.type != "cpu" or not torch.cuda.is_available() or tensor.is_pinned():
        return tensor
    return tensor.pin_memory()


def to_device(tensor: torch.Tensor, device: torch.device, channels_last: bool = False):
    """``tensor`` on ``device``: asynchronous from pinned memory on CUDA, in channels-last
    layout when asked (a layout, not a change of values)."""
    layout = torch.channels_last if channels_last and tensor.ndim == 4 else torch.preserve_format
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = pinned(tensor)
    return tensor.to(device, non_blocking=device.type == "cuda", memory_format=layout)


class PendingExplanation:
    """An :class:`~densevis.saliency.capture.Explanation` whose copy to the host may still run,
    in one or more parts (the sub-batches of a batch cut to fit the GPU's memory).

    :meth:`result` waits for the copies (on CUDA: one event per part, recorded after them) and
    returns the explanation with every tensor on the CPU, the parts concatenated.
    """

    def __init__(self, parts: list):
        self._parts = parts  # [(explanation on the host, CUDA event or None), ...]

    @classmethod
    def join(cls, pending: list) -> "PendingExplanation":
        """The parts of several pending explanations, in order, as one."""
        return cls([part for each in pending for part in each._parts])

    def result(self) -> Explanation:
        for _, event in self._parts:
            if event is not None:
                event.synchronize()
        parts = [explanation for explanation, _ in self._parts]
        self._parts = [(explanation, None) for explanation in parts]
        if len(parts) == 1:
            return parts[0]
        return Explanation({key: torch.cat([part.maps[key] for part in parts])
                            for key in parts[0].maps},
                           torch.cat([part.logits for part in parts]),
                           torch.cat([part.targets for part in parts]))


def to_host(explanation: Explanation) -> PendingExplanation:
    """Start copying an explanation's maps, logits and targets to the host.

    On CUDA the maps are stacked on the device and copied in one non-blocking transfer into
    pinned memory (one transfer instead of one per map, and no wait); the device memory is
    free for the next kernels once the copy is done. Elsewhere the tensors are moved with
    ``.cpu()`` (a no-op for CPU tensors).
    """
    device = explanation.logits.device
    if device.type != "cuda":
        return PendingExplanation([(Explanation(
            {key: value.cpu() for key, value in explanation.maps.items()},
            explanation.logits.cpu(), explanation.targets.cpu()), None)])
    keys = list(explanation.maps)
    stacked = torch.stack([explanation.maps[key] for key in keys])
    copies = []
    for source in (stacked, explanation.logits, explanation.targets):
        target = torch.empty(source.shape, dtype=source.dtype, pin_memory=True)
        target.copy_(source, non_blocking=True)
        copies.append(target)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    host, logits, targets = copies
    return PendingExplanation([(Explanation(dict(zip(keys, host.unbind(0))), logits, targets),
                                event)])
