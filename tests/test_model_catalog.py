"""The model catalog: the shipped file, an operator's on top, the IMAGE_MODELS shorthand, one-line refusals of a
bad file, options checked per model, and prices by tokens (reservation and settlement) in exact micro-dollars."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.config import Config, load_config
from bot.core.attempts import AttemptOutcome
from bot.core.catalog import SHIPPED, CatalogError, load_catalog
from bot.core.models import ImageModel, ModelOptions, SizeRule, offered_options
from bot.core.pricing import TokenPrice, Usage
from bot.errors import ConfigError, InputError
from bot.provider.routing import ModelRouter
from tests.harness import ROOT

BASE = {"DISCORD_TOKEN": "t" * 24, "IMAGE_API_KEY": "k" * 24}


def config(**env: str) -> Config:
    return load_config({**BASE, **env})


def own_catalog(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


# The shipped catalog ------------------------------------------------------------------------------


def test_the_shipped_catalog_offers_the_vip_route_as_before_and_describes_the_official_one() -> None:
    c = config()
    (vip,) = c.models
    assert (vip.name, vip.price, vip.sizes, vip.image_field, vip.response_format) == (
        "gpt-image-2-vip",
        30_000,
        SizeRule.TABLE,
        "image",
        True,
    )
    assert vip.tokens is None and vip.options == ModelOptions() and not vip.mask and vip.partial_images is None
    official = c.entry("gpt-image-2")
    assert official is not None and c.model("gpt-image-2") is None  # described, not offered by default
    assert (official.image_field, official.response_format, official.sizes) == ("image[]", False, SizeRule.ANY)
    assert official.options.background == ("transparent", "opaque", "auto") and official.mask
    assert official.partial_images == (1, 3) and official.options.output_compression == (0, 100)
    assert official.tokens is not None and official.tokens.image_output == 30_000_000  # $30 per million, exactly
    # PRICE_PER_IMAGE keeps pricing the vip route, whose entry gives no price.
    assert config(PRICE_PER_IMAGE="0.05").default_model.price == 50_000


def test_the_shipped_catalog_is_package_data() -> None:
    """An installed wheel has it: the build's package data lists it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "models.toml" in pyproject["tool"]["setuptools"]["package-data"]["bot.core"]
    assert SHIPPED.parent == ROOT / "bot" / "core"


# An operator's catalog on top ---------------------------------------------------------------------


def test_an_operators_file_enables_the_official_route_key_by_key_and_picks_the_default(tmp_path: Path) -> None:
    path = own_catalog(
        tmp_path,
        'default = "gpt-image-2"\n[models.gpt-image-2]\nenabled = true\n'
        "[models.gpt-image-2-vip]\ntimeout = 360\ntimeout_large = 600\n"
        '[models.house]\nwire_name = "gpt-image-2-all"\nsizes = "free"\nfallback = "gpt-image-2-vip"\n'
        "[models.house.price]\nper_image = 0.02\n",
    )
    c = config(MODELS_FILE=str(path))
    assert [m.name for m in c.models] == ["gpt-image-2-vip", "gpt-image-2", "house"]
    assert c.default_model.name == "gpt-image-2" and c.models_file == path
    official = c.default_model
    assert official.image_field == "image[]" and official.tokens is not None  # the shipped keys stay
    vip = c.model("gpt-image-2-vip")
    assert vip is not None and (vip.timeout, vip.timeout_large) == (360.0, 600.0) and vip.image_field == "image"
    house = c.model("house")
    assert house is not None and (house.wire, house.price, house.sizes) == ("gpt-image-2-all", 20_000, SizeRule.FREE)
    assert c.fallback_for(house) == vip and c.fallback_for(vip) is None
    assert config(MODELS_FILE=str(path), IMAGE_MODEL="house").default_model.name == "house"
    with pytest.raises(ConfigError, match="IMAGE_MODEL 'dall-e' must be one of the catalog's enabled models"):
        config(MODELS_FILE=str(path), IMAGE_MODEL="dall-e")


def test_image_models_stays_a_shorthand_over_the_catalog() -> None:
    c = config(IMAGE_MODELS="gpt-image-2-vip=0.03, gpt-image-2, gpt-image-2-all=0.02, gpt-image-1=0.04:table")
    vip, official, other, old = c.models
    assert (vip.price, vip.image_field) == (30_000, "image")
    assert official.tokens is not None and official.image_field == "image[]"  # no price given: the catalog's
    assert (other.price, other.sizes, other.options, other.image_field) == (
        20_000,
        SizeRule.ANY,
        ModelOptions(),
        "image",
    )
    assert (old.price, old.sizes) == (40_000, SizeRule.TABLE)
    flat = config(IMAGE_MODELS="gpt-image-2=0.25").default_model
    assert flat.tokens is None and flat.price == 250_000 and flat.options == official.options  # made flat
    # IMAGE_MODEL alone (no IMAGE_MODELS, no MODELS_FILE): the one model, as before the catalog.
    (alone,) = config(IMAGE_MODEL="gpt-image-2").models
    assert alone.name == "gpt-image-2" and alone.tokens is not None
    (plain,) = config(IMAGE_MODEL="gpt-image-2-all", PRICE_PER_IMAGE="0.02").models
    assert (plain.name, plain.price, plain.sizes) == ("gpt-image-2-all", 20_000, SizeRule.ANY)


# A bad file: refused at start, in one line naming the file, the model and the key -------------------------


MISTAKES = [
    ('[models.gpt-image-2-vip.price]\nper_image = "five"\n', "gpt-image-2-vip", "price.per_image", "of dollars"),
    ("[models.gpt-image-2-vip]\nsizes = \"huge\"\n", "gpt-image-2-vip", "sizes", "'table', 'any' or 'free'"),
    ('[models.gpt-image-2-vip]\nimage_field = "images"\n', "gpt-image-2-vip", "image_field", "'image', 'image[]'"),
    ("[models.gpt-image-2-vip]\ncolour = 1\n", "gpt-image-2-vip", "colour", "not a model key"),
    ('[models.x.options]\nbackground = ["transparent"]\n', "x", "options.background", "png or webp"),
    ('[models.x.options]\noutput_format = ["gif"]\n', "x", "options.output_format", "'gif' is not one of"),
    ('[models.x.options]\nquality = "high"\n', "x", "options.quality", "must be a list"),
    ("[models.x.options]\noutput_compression = [0, 101]\n", "x", "options.output_compression", "0..100"),
    ("[models.x]\ntimeout = -1\n", "x", "timeout", "number of seconds"),
    ('[models.x]\nedits = "images/edits"\n', "x", "edits", "starting with '/'"),
    ('[models.x]\nenabled = "yes"\n', "x", "enabled", "true or false"),
    ('[models.x]\nfallback = "nowhere"\n', "x", "fallback", "not one of the models in use"),
    ("[models.x.price]\nper_image = 0.03\ntext_input = 5\n", "x", "price.text_input", "takes no token prices"),
    ("[models.x.price]\ntext_input = 5\nimage_input = 8\nimage_output = 30\n", "x", "price.input_image_tokens",
     "missing"),
    ("[models.x.price]\ntext_input = 5\nimage_input = 8\nimage_output = 30\ninput_image_tokens = 10\n"
     "[models.x.price.output_tokens]\nhigh = [[100, 5], [50, 9]]\n", "x", "price.output_tokens.high", "must grow"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "model", "key", "why"), MISTAKES)
def test_a_bad_catalog_is_refused_in_one_line_naming_the_file_the_model_and_the_key(
    tmp_path: Path, text: str, model: str, key: str, why: str
) -> None:
    path = own_catalog(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        config(MODELS_FILE=str(path))
    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith(f"MODELS_FILE {path}: model '{model}': {key}: "), line
    assert why in line


def test_a_bad_file_without_a_model_still_names_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    cases = {
        "[models.x\n": "is not valid TOML: ",
        'default = "nowhere"\n': "default: 'nowhere' is not a model in the catalog",
        'default = "gpt-image-2"\n': "default: 'gpt-image-2' is not an enabled model",
        "prices = 1\n": "prices: not a catalog key",
    }
    for text, why in cases.items():
        path = own_catalog(tmp_path, text)
        with pytest.raises(ConfigError) as raised:
            config(MODELS_FILE=str(path))
        assert "\n" not in str(raised.value) and str(raised.value).startswith(f"MODELS_FILE {path}: ")
        assert why in str(raised.value)
    with pytest.raises(ConfigError, match=r"^MODELS_FILE /nonexistent/models.toml: cannot be read"):
        config(MODELS_FILE="/nonexistent/models.toml")


def test_the_bot_refuses_to_start_with_a_bad_catalog_in_one_line(tmp_path: Path) -> None:
    path = own_catalog(tmp_path, '[models.gpt-image-2-vip.price]\nper_image = "five"\n')
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **BASE, "MODELS_FILE": str(path),
           "DATA_DIR": str(tmp_path / "data")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "bot"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"atelier: configuration error: MODELS_FILE {path}: model 'gpt-image-2-vip': price.per_image: must be an "
        "amount of dollars (at most 6 decimals), got 'five'"
    ]


def test_every_catalog_error_is_one_line() -> None:
    with pytest.raises(CatalogError) as raised:
        load_catalog(Path("/nonexistent"), 30_000)
    assert "\n" not in str(raised.value)


# Options, checked per model -----------------------------------------------------------------------


OFFICIAL = load_catalog(None, 30_000).entry("gpt-image-2")
assert OFFICIAL is not None
GPT = OFFICIAL.model
VIP = ImageModel("gpt-image-2-vip", 30_000, SizeRule.TABLE)


def test_options_a_model_takes_pass_in_wire_order_and_transparency_forces_a_format_that_keeps_it() -> None:
    asked = {"background": "opaque", "quality": "high", "output_format": "jpeg", "output_compression": 70}
    assert list(GPT.check_options(asked).items()) == [
        ("quality", "high"), ("output_format", "jpeg"), ("output_compression", 70), ("background", "opaque")
    ]  # fmt: skip
    assert GPT.check_options({"background": "transparent"}) == {"output_format": "png", "background": "transparent"}
    assert GPT.check_options({"background": "transparent", "output_format": "webp"})["output_format"] == "webp"
    assert VIP.check_options({}) == {} and GPT.check_options({}) == {}


@pytest.mark.parametrize(
    ("model", "asked", "why"),
    [
        (VIP, {"quality": "high"}, "gpt-image-2-vip has no quality option; leave quality empty."),
        (VIP, {"background": "transparent"}, "gpt-image-2-vip has no background option"),
        (
            GPT,
            {"quality": "ultra"},
            "`ultra` is not a quality gpt-image-2 takes; pick one of: low, medium, high, auto.",
        ),
        (GPT, {"background": "transparent", "output_format": "jpeg"}, "A transparent background needs the png or webp"),
        (GPT, {"output_compression": 50}, "compression applies only to the jpeg and webp formats."),
        (
            GPT,
            {"output_format": "webp", "output_compression": 150},
            "compression must be a whole number from 0 to 100.",
        ),
    ],
)
def test_an_option_a_model_lacks_is_refused_saying_what_it_takes(
    model: ImageModel, asked: dict[str, str | int], why: str
) -> None:
    with pytest.raises(InputError) as raised:
        model.check_options(asked)
    assert why in str(raised.value.user_message)
    assert not model.accepts(None, asked)


def test_the_commands_offer_the_union_of_the_models_in_use_in_catalog_order() -> None:
    assert offered_options([VIP]) == {}
    partial = ImageModel("q", 1, SizeRule.ANY, options=ModelOptions(quality=("draft", "high")))
    assert offered_options([VIP, partial, GPT]) == {
        "quality": ("draft", "high", "low", "medium", "auto"),
        "output_format": ("png", "jpeg", "webp"),
        "background": ("transparent", "opaque", "auto"),
    }


def test_the_fallback_must_take_the_jobs_options_and_endpoint(tmp_path: Path) -> None:
    now = [1000.0]
    path = own_catalog(
        tmp_path, "[models.gpt-image-2]\nenabled = true\nfallback = \"gpt-image-2-vip\"\n"
        "[models.plain]\ngenerations = \"\"\n",
    )  # fmt: skip
    c = config(MODELS_FILE=str(path), IMAGE_FALLBACK_MODEL="plain")
    gpt, vip, plain = c.model("gpt-image-2"), c.model("gpt-image-2-vip"), c.model("plain")
    assert gpt is not None and vip is not None and plain is not None
    router = ModelRouter(c, clock=lambda: now[0])
    for _ in range(2):
        router.record("gpt-image-2", AttemptOutcome.CONNECT_FAILED)
    assert router.route(gpt, None) == vip  # its own fallback, not IMAGE_FALLBACK_MODEL
    assert router.route(gpt, None, {"quality": "high"}) == gpt  # the fallback has no quality: stays
    assert router.route(gpt, "1024x1024") == gpt  # nor that size
    for _ in range(2):
        router.record("gpt-image-2-vip", AttemptOutcome.CONNECT_FAILED)
    assert router.route(gpt, None) == gpt  # its fallback fails too
    assert router.route(vip, None) == plain and router.route(vip, None, endpoint="generations") == vip


# Prices by tokens ---------------------------------------------------------------------------------


PRICE = TokenPrice(
    text_input=5_000_000,  # $5 per million
    image_input=8_000_000,
    image_output=30_000_000,
    input_image_tokens=1000,
    output_tokens={"low": ((1_048_576, 300), (4_194_304, 1200)), "high": ((1_048_576, 7200), (4_194_304, 28800))},
    partial_image_tokens=100,
)


def test_a_reservation_is_the_most_expensive_outcome_in_exact_micro_dollars() -> None:
    # 11 bytes of prompt at $5/M, 2 images × 1000 tokens at $8/M, 28800 output tokens at $30/M:
    # (55 + 16000 + 864000) micro-dollars = 880055.
    assert PRICE.reservation("make it red", 2, None, None) == 880_055
    assert PRICE.reservation("make it red", 2, 1_048_576, "low") == (55 + 16_000 + 9_000)
    assert PRICE.reservation("é", 0, 1024 * 1024, "high") == 10 + 216_000  # two UTF-8 bytes: at most 2 tokens
    assert PRICE.reservation("x", 0, 8 * 1_048_576, "low") == 5 + 72_000  # past the last tier: scaled, rounded up
    assert PRICE.reservation("x", 0, 1_048_576, "high", partial_images=3) == 5 + (7200 + 300) * 30


def test_a_settlement_is_the_real_cost_from_usage_rounded_up() -> None:
    split = Usage(1040, 4160, 5200, text_tokens=40, image_tokens=1000)
    assert PRICE.cost(split, 1) == 200 + 8000 + 124_800
    # Without the split, inputs with images are priced at the dearer rate; without images they are text.
    assert PRICE.cost(Usage(1040, 4160, 5200), 1) == 8320 + 124_800
    assert PRICE.cost(Usage(33, 1, 34), 0) == 165 + 30
    assert PRICE.cost(Usage(1, 0, 1), 0) == 5 and TokenPrice(1, 1, 1, 0, {"x": ((1, 1),)}).cost(Usage(1, 0, 1), 0) == 1
    model = ImageModel("m", 0, SizeRule.ANY, tokens=PRICE)
    settled = model.settle(880_055, split, 1)
    assert settled is not None and (settled.amount, settled.real) == (133_000 - 880_055, 133_000)
    nothing = model.settle(880_055, None, 1)
    assert nothing is not None and (nothing.amount, nothing.real) == (0, 880_055) and "no usage" in nothing.reason
    assert VIP.settle(30_000, split, 1) is None  # a flat price settles nothing
    assert model.reservation("make it red", 2, None, {}) == PRICE.reservation("make it red", 2, 8_294_400, None)
    # A region edit's mask is reserved as one more input image; a flat price stays flat.
    masked = model.reservation("make it red", 1, None, {}, mask=True)
    assert (
        masked == PRICE.reservation("make it red", 2, 8_294_400, None) > model.reservation("make it red", 1, None, {})
    )
    assert VIP.reservation("make it red", 1, None, {}, mask=True) == VIP.reservation("make it red", 1, None, {})


def test_the_catalog_example_in_the_operators_guide_is_a_valid_catalog(tmp_path: Path) -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    (example,) = [block for block in guide.split("```toml\n")[1:] if "MODELS_FILE" in block.split("\n")[0]]
    path = own_catalog(tmp_path, example.split("```")[0])
    c = config(MODELS_FILE=str(path))
    assert [m.name for m in c.models] == ["gpt-image-2-vip", "gpt-image-2", "gpt-image-2-all"]
    all_route = c.model("gpt-image-2-all")
    assert all_route is not None and c.fallback_for(all_route) == c.model("gpt-image-2-vip")
    official = c.model("gpt-image-2")
    shipped = load_catalog(None, 30_000).entry("gpt-image-2")
    assert official is not None and shipped is not None and official == shipped.model  # the guide shows it as shipped
