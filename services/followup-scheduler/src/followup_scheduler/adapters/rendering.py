"""Message rendering with Jinja2 in sandboxed mode, per locale."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

FALLBACK_LOCALE = "en"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


class TemplateNotFound(LookupError):
    pass


class Renderer:
    def __init__(self) -> None:
        self._env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True)
        self._html_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True, trim_blocks=True)
        self._library: dict[str, dict[str, dict[str, str]]] = {}
        for resource in files("followup_scheduler.templates").iterdir():
            if resource.name.endswith(".yaml"):
                self._library[resource.name.removesuffix(".yaml")] = yaml.safe_load(
                    resource.read_text("utf-8")
                )

    def render(self, template: str, locale: str | None, context: dict[str, Any]) -> Rendered:
        language = (locale or FALLBACK_LOCALE).split("-")[0].lower()
        catalogue = self._library.get(language) or self._library[FALLBACK_LOCALE]
        source = catalogue.get(template) or self._library[FALLBACK_LOCALE].get(template)
        if source is None:
            raise TemplateNotFound(template)
        subject = self._env.from_string(source["subject"]).render(context).strip()
        text = self._env.from_string(source["text"]).render(context)
        html = self._html_env.from_string(source["html"]).render(context) if "html" in source else None
        return Rendered(subject=subject, text=text, html=html)
