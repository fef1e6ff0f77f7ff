"""Raw text → words (stages.wordsplit): CJK ideographs one by one, the rest as CoNLL splits it; the `chars` rule for
MSRA-style data; inferring the rule from train sentences."""

from __future__ import annotations

from stages.wordsplit import choose_rule, cjk_share, infer_rule, is_cjk_text, split_words

MIXED = "张三在Google工作，2008年去了U.S.和北京。 Angela Merkel's Paris-based firm"


def words(text: str, rule: str = "words") -> list[str]:
    return [w for w, _, _ in split_words(text, rule)]


def test_words_rule_splits_chinese_into_characters_and_keeps_latin_runs_whole():
    assert words(MIXED) == ["张", "三", "在", "Google", "工", "作", "，", "2008", "年", "去", "了", "U.S.", "和", "北",
                            "京", "。", "Angela", "Merkel", "'s", "Paris-based", "firm"]


def test_english_splits_as_conll_does():
    assert words("Shares of Apple rose 3.5% in New York, U.S.A. (Reuters)") == [
        "Shares", "of", "Apple", "rose", "3.5", "%", "in", "New", "York", ",", "U.S.A.", "(", "Reuters", ")"]


def test_chars_rule_is_every_character_but_whitespace():
    assert words("中国 队A1", "chars") == ["中", "国", "队", "A", "1"]


def test_offsets_point_into_the_original_string():
    for rule in ("words", "chars"):
        found = split_words(MIXED, rule)
        assert all(MIXED[a:b] == w for w, a, b in found)
        assert "".join(w for w, _, _ in found) == "".join(MIXED.split())  # nothing dropped, nothing reordered


def test_cjk_share():
    assert cjk_share("") == 0 and cjk_share("hello") == 0 and cjk_share("酒店很好") == 1
    assert is_cjk_text("酒店的Wi-Fi很好") and not is_cjk_text("The 酒店 was fine")


def test_the_rule_is_inferred_from_train():
    assert infer_rule([list("中国队"), list("2008年")])[0] == "chars"
    assert infer_rule([["EU", "rejects", "German", "call"], ["."]])[0] == "words"
    rule, entry, warnings = choose_rule([list("新华社北京电")], "auto")
    assert rule == "chars" and entry["chosen_by"] == "inferred from train" and entry["single_char_share"] == 1
    assert warnings == []


def test_segmented_chinese_words_warn_that_serving_reads_characters():
    rule, _, warnings = choose_rule([["新华社", "北京", "电"]] * 5, "auto")
    assert rule == "words" and "several characters" in warnings[0]
    rule, entry, warnings = choose_rule([list("新华社")], "words")  # the user's choice wins, and is questioned
    assert rule == "words" and entry["chosen_by"] == "tokenize.word_split" and "look split by chars" in warnings[0]
