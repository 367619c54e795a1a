"""Training batches drawn ahead on a background thread, so reading, resampling and collating
audio overlap the training step instead of preceding it.

``CropSampler.batch(step)`` is a pure function of the step and of the files known bad, so
drawing it early changes nothing as long as the draws keep their order: one worker draws the
steps one after another, exactly as a synchronous run would. What a checkpoint saves is the
sampler's state right after the last batch handed out, not after the batches drawn ahead
(one of those may have found a bad file), so a resumed run draws bit-identical batches.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from .batches import Batch, CropSampler


class Prefetcher:
    """``batch(step)`` for consecutive steps up to ``last_step``, with ``ahead`` batches drawn in
    advance (0: every batch drawn when asked, on the caller's thread)."""

    def __init__(self, sampler: CropSampler, *, last_step: int, ahead: int = 1):
        self.sampler = sampler
        self.last_step = last_step
        self.ahead = ahead
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speechprune-batches") if ahead else None
        self._pending: dict[int, Future] = {}  # step -> (batch, sampler state after it)
        self._state = sampler.state_dict()  # the sampler's state after the last batch handed out

    def batch(self, step: int) -> Batch:
        future = self._pending.pop(step, None)
        if future is None:  # the first step, or not the next one: start over from the handed-out state
            self._forget_ahead()
            batch, self._state = self._draw(step)
        else:
            batch, self._state = future.result()  # a failed draw raises here, at its own step
        if self._pool is not None:
            for later in range(step + 1, min(step + self.ahead, self.last_step) + 1):
                if later not in self._pending:
                    self._pending[later] = self._pool.submit(self._draw, later)
        return batch

    def state_dict(self) -> dict:
        """The sampler's state as a synchronous run has it after the last batch handed out."""
        return self._state

    def load_state_dict(self, state: dict) -> None:
        self._forget_ahead()
        self.sampler.load_state_dict(state)
        self._state = self.sampler.state_dict()

    def close(self) -> None:
        self._forget_ahead()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _draw(self, step: int) -> tuple[Batch, dict]:
        batch = self.sampler.batch(step)
        return batch, self.sampler.state_dict()

    def _forget_ahead(self) -> None:
        """Drop the batches drawn ahead and undo what drawing them taught the sampler."""
        if not self._pending:
            return
        for future in self._pending.values():
            future.cancel()
        for future in self._pending.values():
            if not future.cancelled():
                future.exception()  # wait for it; its error, if any, belongs to a step never taken
        self._pending.clear()
        self.sampler.load_state_dict(self._state)
