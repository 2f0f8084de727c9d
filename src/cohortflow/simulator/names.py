"""Student names from Faker's name lists, drawn with numpy so 200k names take milliseconds.

Faker's own ``name()`` costs tens of microseconds a call and its randomness is
not ours; instead we read the first and last name lists of a few locales once
and pair them with our seeded generator. The mix is mostly English, with Irish
names (``O'Brien``, ``D'Arcy``: apostrophes), accented European names and a
few Greek, Cyrillic and CJK ones, so non-ASCII text and quotes reach the
students table on every run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

LOCALE_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("en_US", 0.55),
    ("en_IE", 0.15),
    ("fr_FR", 0.05),
    ("de_DE", 0.05),
    ("es_ES", 0.05),
    ("el_GR", 0.04),
    ("uk_UA", 0.04),
    ("tr_TR", 0.03),
    ("zh_CN", 0.02),
    ("ja_JP", 0.02),
)
_FAMILY_NAME_FIRST = frozenset({"zh_CN", "ja_JP"})


@dataclass(frozen=True)
class _LocaleNames:
    locale: str
    first: tuple[str, ...]
    last: tuple[str, ...]

    def pair(self, first: int, last: int) -> str:
        if self.locale in _FAMILY_NAME_FIRST:
            return f"{self.last[last]}{self.first[first]}"
        return f"{self.first[first]} {self.last[last]}"


def _names(provider: Any, attribute: str) -> tuple[str, ...]:
    values = getattr(provider, attribute)
    return tuple(dict.fromkeys(values))  # dicts (weighted lists) give their keys


@cache
def _locales() -> tuple[_LocaleNames, ...]:
    loaded = []
    for locale, _weight in LOCALE_WEIGHTS:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        loaded.append(_LocaleNames(locale, _names(provider, "first_names"), _names(provider, "last_names")))
    return tuple(loaded)


def draw_names(rng: np.random.Generator, n: int) -> list[str]:
    """Draw ``n`` full names; the same generator state gives the same names."""
    locales = _locales()
    weights = np.array([weight for _locale, weight in LOCALE_WEIGHTS])
    which = rng.choice(len(locales), size=n, p=weights / weights.sum())
    first = rng.random(n)
    last = rng.random(n)
    names = []
    for index, first_pick, last_pick in zip(which.tolist(), first.tolist(), last.tolist(), strict=True):
        pool = locales[index]
        names.append(pool.pair(int(first_pick * len(pool.first)), int(last_pick * len(pool.last))))
    return names
