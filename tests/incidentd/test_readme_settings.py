"""Every setting the service accepts appears in README.md's settings sample, and the sample is a valid config."""
from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from incidentd.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
INTRO = "Settings come from a YAML file"


def sample() -> str:
    """The first ```yaml block after the sentence that introduces the settings."""
    text = README.read_text()
    start = text.index(INTRO)
    m = re.search(r"```yaml\n(.*?)```", text[start:], flags=re.DOTALL)
    assert m, f"README.md has no yaml block after {INTRO!r}"
    return m.group(1)


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        out.append(prefix + name)
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out.extend(field_paths(sub, prefix + name + "."))
    return out


def test_the_sample_is_a_valid_settings_file(tmp_path):
    path = tmp_path / "incidentd.yaml"
    path.write_text(sample())
    settings = Settings.load(path)
    assert settings.port == 8080 and settings.remediation.executor.kind == "local"


def test_every_setting_appears_in_the_sample():
    text = sample()
    missing = [p for p in field_paths(Settings)
               if not re.search(rf"(^|[\s{{,#]){re.escape(p.rsplit('.', 1)[-1])}:", text, flags=re.MULTILINE)]
    assert not missing, f"settings missing from README.md's sample: {missing}"


def test_the_walk_sees_nested_settings():
    paths = field_paths(Settings)
    assert {"retention_seconds", "detection.confirm_points", "remediation.executor.unit"} <= set(paths)
