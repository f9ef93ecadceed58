"""``/imagine``: a picture from an instruction alone, through the engine's ``imagine`` kind.

It is answered, queued, charged, limited, shown and delivered like an edit, with the same
Refine, Reroll and Delete buttons under its result (refining it is an edit with the result as
image1; rerolling it imagines again). Only its kind differs: nothing to fetch or keep.
"""

from __future__ import annotations

from discord import app_commands
from discord.ext import commands

from bot.core.job import MOST_VARIANTS, Destination, Job
from bot.core.models import offered_options
from bot.i18n import Text, _t
from cogs.core.answers import within
from cogs.core.host import AtelierClient, Interaction
from cogs.core.language import _desc, _name
from cogs.core.model_options import shape_model_options
from cogs.core.requests import requester, style_choices
from cogs.delivery.acknowledge import answer_in_place
from cogs.delivery.buttons import PROMPT_MAX
from cogs.members.request_options import DESCRIPTIONS, NAMES, command_request, size_suggestions


class TextOnlySource:
    """An ``/imagine``'s input source: acknowledged as the command's public response; no images."""

    def __init__(self, interaction: Interaction) -> None:
        self.interaction = interaction

    async def announce(self, job: Job, note: Text | None = None) -> Destination:
        return await answer_in_place(self.interaction, job, _t("⏳ Queued."), note)

    async def fetch(self) -> list[tuple[str, bytes]]:
        return []


class ImagineCog(commands.Cog):
    """The /imagine command."""

    def __init__(self, bot: AtelierClient) -> None:
        self.bot = bot
        # The options the models in use take, with their values: the schema follows the catalog.
        shape_model_options(self.imagine, offered_options(bot.config.models))

    @app_commands.command(
        name=_name("command name", "imagine"), description=_desc("Make a new image from an instruction alone")
    )
    @app_commands.describe(
        prompt=_desc("What to picture, e.g. “a lighthouse on a cliff at dusk, in watercolour”"),
        size=_desc("Output size; leave empty for auto"),
        **DESCRIPTIONS,
    )
    @app_commands.rename(
        **NAMES,
    )
    async def imagine(
        self,
        interaction: Interaction,
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        size: str | None = None,
        style: str | None = None,
        private: bool = False,
        spoiler: bool = False,
        quality: str | None = None,
        format: str | None = None,
        background: str | None = None,
        variations: app_commands.Range[int, 2, MOST_VARIANTS] | None = None,
    ) -> None:
        request = command_request(
            interaction, "imagine", prompt=prompt, input_count=0, size=size, style=style, private=private,
            spoiler=spoiler, quality=quality, format=format, background=background, variations=variations,
        )  # fmt: skip
        source = TextOnlySource(interaction)
        submitted = self.bot.engine.submit(request, requester(interaction), source)
        await within(interaction, submitted, private=request.private)

    @imagine.autocomplete("size")
    async def size_autocomplete(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        return size_suggestions(interaction, current)

    @imagine.autocomplete("style")
    async def style_autocomplete(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        return style_choices(self.bot.engine.presets_matching(interaction.guild_id, current))


async def setup(bot: AtelierClient) -> None:
    """Load the imagine cog."""
    await bot.add_cog(ImagineCog(bot))
