"""read_jsonl: good files, each kind of bad line (error names file + line), on_bad="skip"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from xmodal.datasets import BadInputError, read_jsonl


def _img(path: Path, size: tuple[int, int] = (4, 3)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def _write(path: Path, lines: list[str | bytes | dict]) -> Path:
    raw = b""
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        raw += (line if isinstance(line, bytes) else line.encode()) + b"\n"
    path.write_bytes(raw)
    return path


def test_reads_sorted_records_with_extra(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "sub/c.png"):
        _img(tmp_path / "images" / name)
    _write(
        tmp_path / "data.jsonl",
        [
            {"image": "images/b.png", "captions": ["a bee"], "labels": ["x", "y"], "tag": 1},
            "",
            {"image": "./images/a.png", "captions": ["an ant", "another ant"]},
            {"image": "images\\sub\\c.png", "captions": []},
        ],
    )
    ds = read_jsonl(tmp_path)  # folder -> data.jsonl
    assert ds.ids == ["images/a.png", "images/b.png", "images/sub/c.png"]
    a, b, c = ds.records
    assert a.captions == ("an ant", "another ant") and a.labels == ()
    assert b.labels == ("x", "y") and b.extra == {"tag": 1}
    assert c.captions == ()
    assert b.image == tmp_path / "images" / "b.png"
    assert ds.name == tmp_path.name and ds.skipped == []
    assert ds.captions()[0] == ["an ant", "another ant", "a bee"]


GOOD = {"image": "images/ok.png", "captions": ["fine"]}

# (line content, expected message fragment); each is line 2 of its file, after one good line.
# "images/{kind}.png" is a valid image made for that line alone.
BAD_LINES = {
    "malformed": ('{"image": "images/x.png", "captions": ["a"', "malformed JSON"),
    "not_utf8": (b'{"image": "images/x.png", "captions": ["caf\xe9"]}', "not valid UTF-8"),
    "not_object": ('["images/x.png"]', "expected a JSON object"),
    "no_image": ({"captions": ["a cat"]}, "missing the 'image' field"),
    "image_not_str": ({"image": 3, "captions": ["a"]}, "non-empty string"),
    "escapes_root": ({"image": "../x.png", "captions": ["a"]}, "inside the data folder"),
    "absolute": ({"image": "/etc/x.png", "captions": ["a"]}, "relative to the data folder"),
    "captions_not_list": ({"image": "images/{kind}.png", "captions": "a"}, "'captions' must be"),
    "labels_bad": ({"image": "images/{kind}.png", "captions": ["a"], "labels": [1]}, "'labels'"),
    "empty_caption": ({"image": "images/{kind}.png", "captions": [""]}, "caption 1 is empty"),
    "blank_caption": ({"image": "images/{kind}.png", "captions": ["a", " \t"]}, "caption 2 is"),
    "caption_not_str": ({"image": "images/{kind}.png", "captions": [None]}, "not a string"),
    "missing_image": ({"image": "images/nope.png", "captions": ["a"]}, "image file not found"),
    "corrupt_image": ({"image": "images/bad.png", "captions": ["a"]}, "not a readable image"),
    "too_big": ({"image": "images/big.png", "captions": ["a"]}, "over the limit"),
    "duplicate": ({"image": "images/ok.png", "captions": ["b"]}, "duplicated image"),
}


def _line(kind: str) -> str | bytes | dict:
    line = BAD_LINES[kind][0]
    if isinstance(line, dict) and isinstance(line.get("image"), str):
        return {**line, "image": line["image"].format(kind=kind)}
    return line


def _fixture_images(root: Path) -> None:
    _img(root / "images" / "ok.png")
    for kind in BAD_LINES:
        _img(root / "images" / f"{kind}.png")
    _img(root / "images" / "big.png", size=(100, 100))
    (root / "images" / "bad.png").write_bytes(b"garbage")


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_each_bad_line_names_file_and_line(tmp_path: Path, kind: str) -> None:
    _fixture_images(tmp_path)
    file = _write(tmp_path / "data.jsonl", [GOOD, _line(kind)])
    with pytest.raises(BadInputError, match=BAD_LINES[kind][1]) as e:
        read_jsonl(file, max_pixels=1000)
    assert e.value.path == file
    assert e.value.line == 2
    assert str(e.value).startswith(f"{file}:2: ")


def test_skip_counts_every_bad_line(tmp_path: Path) -> None:
    _fixture_images(tmp_path)
    kinds = list(BAD_LINES)
    file = _write(tmp_path / "data.jsonl", [GOOD] + [_line(k) for k in kinds])
    ds = read_jsonl(file, on_bad="skip", max_pixels=1000)
    # Only the good line and the record that keeps one good caption survive.
    assert ds.ids == ["images/blank_caption.png", "images/ok.png"]
    assert ds.records[0].captions == ("a",)
    # One entry per dropped line; lines that lost all their captions add one per caption.
    expected = {k: 1 for k in kinds}
    expected["empty_caption"] = 2
    expected["caption_not_str"] = 2
    assert len(ds.skipped) == sum(expected.values())
    for k in kinds:
        line_no = kinds.index(k) + 2
        mine = [s for s in ds.skipped if f"{file}:{line_no}: " in s]
        assert len(mine) == expected[k], (k, mine)
        assert BAD_LINES[k][1] in mine[0], (k, mine)
    assert all(s.startswith(("record: ", "caption: ")) for s in ds.skipped)


def test_skip_caption_rule(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        _img(tmp_path / "images" / name)
    file = _write(
        tmp_path / "data.jsonl",
        [
            {"image": "images/a.png", "captions": ["good", " ", "also good"]},
            {"image": "images/b.png", "captions": ["", "   "]},
            {"image": "images/c.png", "captions": []},
            "not json",
        ],
    )
    ds = read_jsonl(file, on_bad="skip")
    assert ds.ids == ["images/a.png", "images/c.png"]
    assert ds.records[0].captions == ("good", "also good")
    kinds = [s.split(":", 1)[0] for s in ds.skipped]
    # a: one caption; b: two captions then the record; line 4: the record.
    assert kinds == ["caption", "caption", "caption", "record", "record"]
    assert f"{file}:2: no valid caption left" in ds.skipped[3]
    assert f"{file}:4: malformed JSON" in ds.skipped[4]


def test_check_images_false_skips_decoding_but_not_existence(tmp_path: Path) -> None:
    _fixture_images(tmp_path)
    file = _write(tmp_path / "data.jsonl", [{"image": "images/bad.png", "captions": ["a"]}])
    assert read_jsonl(file, check_images=False).ids == ["images/bad.png"]
    _write(file, [{"image": "images/gone.png", "captions": ["a"]}])
    with pytest.raises(BadInputError, match="not found"):
        read_jsonl(file, check_images=False)


def test_image_error_chains_the_image_error(tmp_path: Path) -> None:
    _fixture_images(tmp_path)
    file = _write(tmp_path / "data.jsonl", [{"image": "images/bad.png", "captions": ["a"]}])
    with pytest.raises(BadInputError) as e:
        read_jsonl(file)
    assert isinstance(e.value.__cause__, BadInputError)
    assert e.value.__cause__.path == tmp_path / "images" / "bad.png"


def test_missing_file_and_bad_policy(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        read_jsonl(tmp_path)
    _write(tmp_path / "data.jsonl", [])
    with pytest.raises(ValueError, match="on_bad"):
        read_jsonl(tmp_path, on_bad="ignore")  # type: ignore[arg-type]
    assert len(read_jsonl(tmp_path)) == 0
