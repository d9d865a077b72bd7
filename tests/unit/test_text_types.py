"""The narrative test that skips spaCy for texts too long to be a title (flows/rag/text_types.py)."""

from __future__ import annotations

import pytest

from flows.rag.text_types import skipping_spacy, too_long_for_title

LONG = "Glaciers form where snow accumulates faster than it melts, compressing into dense ice over centuries"


class Spy:
    """Stands for unstructured's own (spaCy) test: records what it was asked, answers ``answer``."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

    def __call__(self, text: str, *args: object, **kwargs: object) -> bool:
        self.asked.append((text, args, kwargs))
        return self.answer


def test_a_text_too_long_to_be_a_title_is_narrative_without_asking_spacy() -> None:
    spy = Spy(False)
    assert skipping_spacy(spy)(LONG) is True
    assert spy.asked == []


def test_a_long_text_of_too_few_letters_is_not_narrative() -> None:
    spy = Spy(True)
    assert skipping_spacy(spy)("1.2 3.4 5.6 7.8 9.0 1.1 2.2 3.3 4.4 5.5 6.6 7.7 8.8 9.9") is False
    assert spy.asked == []


@pytest.mark.parametrize("answer", [True, False])
def test_a_short_text_gets_unstructureds_own_answer(answer: bool) -> None:
    spy = Spy(answer)
    assert skipping_spacy(spy)("Glacier Formation", languages=["eng"]) is answer
    assert spy.asked == [("Glacier Formation", (), {"languages": ["eng"]})]


def test_the_title_limit_counts_words_as_unstructured_does_and_follows_its_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    twelve = " ".join(["ice"] * 12)
    assert not too_long_for_title(twelve) and too_long_for_title(twelve + " ice")
    assert too_long_for_title("ice  " * 7)  # split on single spaces: 7 double spaces make 15 "words"
    monkeypatch.setenv("UNSTRUCTURED_TITLE_MAX_WORD_LENGTH", "20")
    assert not too_long_for_title(twelve + " ice")
