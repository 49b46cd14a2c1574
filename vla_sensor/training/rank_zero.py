"""A decision taken once, on rank 0, and handed to every rank (or its error, so that no rank waits)."""

from __future__ import annotations

from collections.abc import Callable


def decided_on_rank0(accelerator, decide: Callable[[], str | None], catch: tuple[type[BaseException], ...],
                     remote_error: Callable[[str], BaseException]) -> str | None:
    """``decide()`` on rank 0 alone, its result broadcast. An exception of a ``catch`` type is re-raised
    on rank 0 and, as ``remote_error(message)``, on every other rank."""
    from accelerate.utils import broadcast_object_list

    chosen: list = [None, None]
    failure: BaseException | None = None
    if accelerator.is_main_process:
        try:
            chosen[0] = decide()
        except catch as exc:
            failure, chosen[1] = exc, str(exc)
    if accelerator.num_processes > 1:
        broadcast_object_list(chosen, from_process=0)
    if failure is not None:
        raise failure
    if chosen[1] is not None:
        raise remote_error(chosen[1])
    return chosen[0]
