"""``/imagine``: an instruction alone, through ``POST {base}/images/generations`` (the same models and price)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.core.job import Job
from bot.errors import AtelierError
from bot.i18n import Text, _t
from bot.media.editor import Editor
from bot.media.images import PreparedImage
from bot.provider.client import Endpoint, ProviderRequest

IMAGINED = _t("✨ imagined from words alone")


@dataclass(frozen=True)
class ImagineKind:
    """Text to image: no inputs, so nothing to fetch or keep, and nothing lost in a restart."""

    name: str = "imagine"
    endpoint: str = "generations"
    needs_images: bool = False

    async def prepare(self, job: Job, files: Sequence[tuple[str, bytes]], editor: Editor) -> list[PreparedImage]:
        return await editor.prepare_inputs(files)

    def request(self, job: Job, images: Sequence[PreparedImage], api_key: str | None) -> ProviderRequest:
        return ProviderRequest(
            Endpoint.GENERATIONS,
            job.request.api_prompt,
            (),
            job.request.size,
            model=job.model or "",
            api_key=api_key,
            options=job.request.options,
        )

    def explain(self, error: AtelierError) -> AtelierError:
        return error

    def caption(self, job: Job) -> Text | None:
        return IMAGINED

    def after_restart(self, job: Job, inputs_kept: bool) -> AtelierError | None:
        return None


IMAGINE = ImagineKind()
