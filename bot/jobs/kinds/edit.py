"""The edit: up to ten images and an instruction, through ``POST {base}/images/edits``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.job import Job
from bot.errors import AtelierError
from bot.i18n import Text, _t
from bot.media.editor import Editor
from bot.media.images import PreparedImage
from bot.provider.client import Endpoint, ProviderRequest

INPUTS_LOST = _t("This edit's images were lost while the bot restarted. You were not charged; please send it again.")


@dataclass(frozen=True)
class EditKind:
    """Images in prompt order (image1 first) and an instruction."""

    name: str = "edit"
    endpoint: str = "edits"
    needs_images: bool = True

    async def prepare(self, job: Job, files: Sequence[tuple[str, bytes]], editor: Editor) -> list[PreparedImage]:
        return await editor.prepare_inputs(files)

    def request(self, job: Job, images: Sequence[PreparedImage], api_key: str | None) -> ProviderRequest:
        return ProviderRequest(
            Endpoint.EDITS,
            job.request.api_prompt,
            images,
            job.request.size,
            model=job.model or "",
            api_key=api_key,
            options=job.request.options,
        )

    def explain(self, error: AtelierError) -> AtelierError:
        return error

    def caption(self, job: Job) -> Text | None:
        return None

    def after_restart(self, job: Job, inputs_kept: bool) -> AtelierError | None:
        return None if inputs_kept else AtelierError(INPUTS_LOST, log_detail="inputs missing on resume")


EDIT = EditKind()
